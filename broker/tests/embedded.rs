//! The embedded broker over real sockets, with clients nobody here wrote (mosquitto_pub and
//! mosquitto_sub from Debian's mosquitto-clients) and with rumqttc.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use parkd_broker::auth::{CredentialSource, DeviceCredential, hash_secret};
use parkd_broker::embedded::{EmbeddedBroker, EmbeddedSettings};
use parkd_broker::metrics::BrokerMetrics;
use parkd_broker::{InboundMessage, MessageSink};
use parkd_core::clock::SystemClock;
use parkd_core::ids::{DeviceId, LotId, SpotId};
use parkd_core::topic::Grant;
use prometheus::Registry;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct Registry_(HashMap<String, DeviceCredential>);

#[async_trait]
impl CredentialSource for Registry_ {
    async fn credential(&self, device: &DeviceId) -> Result<Option<DeviceCredential>, String> {
        Ok(self.0.get(device.as_str()).cloned())
    }
}

#[derive(Default)]
struct Collect(Mutex<Vec<InboundMessage>>);

impl MessageSink for Collect {
    fn deliver(&self, message: InboundMessage) {
        self.0.lock().unwrap().push(message);
    }
}

impl Collect {
    fn topics(&self) -> Vec<String> {
        let messages = self.0.lock().unwrap();
        messages
            .iter()
            .map(|m| String::from_utf8_lossy(&m.topic).into_owned())
            .collect()
    }

    async fn wait_for(&self, count: usize) -> Vec<String> {
        for _ in 0..200 {
            if self.0.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.topics()
    }
}

fn sensor(spot: &str, secret: &str) -> DeviceCredential {
    DeviceCredential {
        grant: Grant::Sensor {
            lot: LotId::parse("g1").unwrap(),
            spot: SpotId::parse(spot).unwrap(),
        },
        secret_sha256: Some(hash_secret(secret)),
        disabled: false,
    }
}

/// Sensors `s1` (spot 1) and `s2` (spot 2) of lot `g1`.
fn two_sensors() -> HashMap<String, DeviceCredential> {
    let mut devices = HashMap::new();
    devices.insert("s1".to_owned(), sensor("1", "secret-one"));
    devices.insert("s2".to_owned(), sensor("2", "secret-two"));
    devices
}

struct Harness {
    broker: EmbeddedBroker,
    sink: Arc<Collect>,
    metrics: BrokerMetrics,
    shutdown: CancellationToken,
}

async fn start(allow_anonymous: bool) -> Harness {
    let devices = two_sensors();
    let metrics = BrokerMetrics::new(&Registry::new()).unwrap();
    let settings = EmbeddedSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_anonymous,
        ..EmbeddedSettings::default()
    };
    let broker = EmbeddedBroker::start(settings, Arc::new(Registry_(devices)), metrics.clone())
        .await
        .unwrap();
    let sink = Arc::new(Collect::default());
    let shutdown = CancellationToken::new();
    broker
        .subscribe(
            "test",
            &["parking/v1/+/spots/+/+"],
            sink.clone(),
            Arc::new(SystemClock),
            shutdown.clone(),
        )
        .await
        .unwrap();
    Harness {
        broker,
        sink,
        metrics,
        shutdown,
    }
}

async fn mosquitto_pub(port: u16, args: &[&str]) -> bool {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(args)
        .status()
        .await
        .expect("mosquitto_pub is installed (Debian package mosquitto-clients)");
    status.success()
}

async fn connect_with_keep_alive_zero(port: u16, client_id: &str) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut packet = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x00];
    packet.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    let mut frame = vec![0x10, u8::try_from(packet.len()).unwrap()];
    frame.extend_from_slice(&packet);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(&frame).await.unwrap();
    let mut connack = vec![0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut connack))
        .await
        .expect("no CONNACK")
        .expect("connection closed instead of CONNACK");
    connack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_demo_broker_stores_and_relays_what_mosquitto_clients_publish() {
    let h = start(true).await;
    let port = h.broker.local_addr().port();

    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args(["-t", "parking/v1/#", "-C", "1", "-W", "10", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Give the subscriber time to connect: retry the publish until it is received.
    let mut received = String::new();
    let output = {
        let mut sub = Some(sub);
        let mut result = None;
        for _ in 0..50 {
            assert!(
                mosquitto_pub(
                    port,
                    &[
                        "-t",
                        "parking/v1/g1/spots/7/state",
                        "-m",
                        r#"{"occupied":true}"#
                    ]
                )
                .await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(child) = sub.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                result = Some(sub.take().unwrap().wait_with_output().await.unwrap());
                break;
            }
        }
        result.expect("mosquitto_sub received nothing")
    };
    received.push_str(&String::from_utf8_lossy(&output.stdout));
    assert!(
        received.contains(r#"parking/v1/g1/spots/7/state {"occupied":true}"#),
        "{received}"
    );
    assert!(
        h.sink
            .wait_for(1)
            .await
            .contains(&"parking/v1/g1/spots/7/state".to_owned())
    );

    // Keep alive 0 is legal MQTT; rumqttd alone refuses it. mosquitto_pub will not send 0, so
    // this is a hand-made MQTT 3.1.1 CONNECT.
    assert_eq!(
        connect_with_keep_alive_zero(port, "ka0").await,
        [0x20, 0x02, 0x00, 0x00]
    );
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_broker_enforces_identity_and_topic_acl() {
    let h = start(false).await;
    let port = h.broker.local_addr().port();

    // No credentials: refused.
    assert!(
        !mosquitto_pub(
            port,
            &["-i", "s1", "-t", "parking/v1/g1/spots/1/state", "-m", "{}"]
        )
        .await
    );
    // Wrong secret, and another device's secret: refused.
    assert!(
        !mosquitto_pub(
            port,
            &[
                "-i",
                "s1",
                "-u",
                "s1",
                "-P",
                "nope",
                "-t",
                "parking/v1/g1/spots/1/state",
                "-m",
                "{}"
            ]
        )
        .await
    );
    assert!(
        !mosquitto_pub(
            port,
            &[
                "-i",
                "s1",
                "-u",
                "s2",
                "-P",
                "secret-two",
                "-t",
                "parking/v1/g1/spots/1/state",
                "-m",
                "{}"
            ]
        )
        .await
    );
    assert_eq!(
        h.metrics
            .connections_refused
            .with_label_values(&["auth_failed"])
            .get(),
        3
    );

    // Another device's topic: the publish is refused and nothing reaches consumers. QoS 1 makes
    // mosquitto_pub wait for the PUBACK it never gets, so it fails.
    assert!(
        !mosquitto_pub(
            port,
            &[
                "-q",
                "1",
                "-i",
                "s1",
                "-u",
                "s1",
                "-P",
                "secret-one",
                "-t",
                "parking/v1/g1/spots/2/state",
                "-m",
                r#"{"occupied":true}"#
            ]
        )
        .await
    );
    assert_eq!(
        h.metrics
            .acl_denied
            .with_label_values(&["publish", "other_device"])
            .get(),
        1
    );
    // Its own topic goes through.
    assert!(
        mosquitto_pub(
            port,
            &[
                "-q",
                "1",
                "-i",
                "s1",
                "-u",
                "s1",
                "-P",
                "secret-one",
                "-t",
                "parking/v1/g1/spots/1/state",
                "-m",
                r#"{"occupied":true}"#
            ]
        )
        .await
    );
    let topics = h.sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.sink.topics(),
        vec!["parking/v1/g1/spots/1/state".to_owned()],
        "{topics:?}"
    );

    // A will on another device's topic is refused at login.
    assert!(
        !mosquitto_pub(
            port,
            &[
                "-i",
                "s1",
                "-u",
                "s1",
                "-P",
                "secret-one",
                "--will-topic",
                "parking/v1/g1/spots/2/status",
                "--will-payload",
                r#"{"online":false}"#,
                "-t",
                "parking/v1/g1/spots/1/state",
                "-m",
                "{}"
            ]
        )
        .await
    );
    // A subscription beyond the device's own topics is refused.
    let status = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"])
        .args([
            "-i",
            "s1",
            "-u",
            "s1",
            "-P",
            "secret-one",
            "-t",
            "parking/v1/#",
            "-C",
            "1",
            "-W",
            "3",
        ])
        .status()
        .await
        .unwrap();
    assert!(!status.success());
    // mosquitto_sub reconnects and tries again until its timeout: refused every time.
    assert!(
        h.metrics
            .acl_denied
            .with_label_values(&["subscribe", "filter_outside_grant"])
            .get()
            >= 1
    );
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_ids_do_not_poison_the_listener() {
    let h = start(true).await;
    let port = h.broker.local_addr().port();
    for _ in 0..2 {
        assert!(
            !mosquitto_pub(
                port,
                &[
                    "-i",
                    "gate/1",
                    "-t",
                    "parking/v1/g1/spots/1/state",
                    "-m",
                    "{}"
                ]
            )
            .await
        );
        assert!(
            !mosquitto_pub(
                port,
                &[
                    "-i",
                    "$bad",
                    "-t",
                    "parking/v1/g1/spots/1/state",
                    "-m",
                    "{}"
                ]
            )
            .await
        );
    }
    assert_eq!(
        h.metrics
            .connections_refused
            .with_label_values(&["client_id_invalid"])
            .get(),
        4
    );
    // Everyone else still gets in.
    for i in 0..3 {
        let id = format!("fine-{i}");
        assert!(
            mosquitto_pub(
                port,
                &[
                    "-i",
                    &id,
                    "-t",
                    "parking/v1/g1/spots/1/state",
                    "-m",
                    r#"{"occupied":false}"#
                ]
            )
            .await
        );
    }
    assert_eq!(h.sink.wait_for(3).await.len(), 3);
    h.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = EmbeddedSettings {
        listen: taken.local_addr().unwrap(),
        allow_anonymous: true,
        ..EmbeddedSettings::default()
    };
    let metrics = BrokerMetrics::new(&Registry::new()).unwrap();
    let error = EmbeddedBroker::start(settings, Arc::new(Registry_::default()), metrics)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("cannot listen"), "{error}");
}

/// A registry that answers slowly, like one behind a busy database.
#[derive(Debug)]
struct Slow(Registry_, Duration);

#[async_trait]
impl CredentialSource for Slow {
    async fn credential(&self, device: &DeviceId) -> Result<Option<DeviceCredential>, String> {
        tokio::time::sleep(self.1).await;
        self.0.credential(device).await
    }
}

/// An MQTT 3.1.1 CONNECT with a username and password (clean session).
fn connect_frame(client_id: &str, username: &str, password: &str) -> Vec<u8> {
    let mut packet = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC2, 0x00, 0x3C];
    for field in [client_id, username, password] {
        packet.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
        packet.extend_from_slice(field.as_bytes());
    }
    let mut frame = vec![0x10, u8::try_from(packet.len()).unwrap()];
    frame.extend_from_slice(&packet);
    frame
}

/// rumqttd 0.20 keeps a will handler per client id and forgets to remove it when the CONNACK
/// cannot be written (the device hung up while its login was checked); the next CONNECT with
/// that id then panics while holding the handlers' lock, and every later connection panics on
/// the poisoned lock: an MQTT outage caused by one flaky device. The front door in front of
/// rumqttd keeps its side of the socket open until rumqttd has answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_hangs_up_during_login_does_not_take_the_broker_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let devices = two_sensors();
    let metrics = BrokerMetrics::new(&Registry::new()).unwrap();
    let settings = EmbeddedSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..EmbeddedSettings::default()
    };
    let source = Slow(Registry_(devices), Duration::from_millis(300));
    let broker = EmbeddedBroker::start(settings, Arc::new(source), metrics.clone())
        .await
        .unwrap();
    let port = broker.local_addr().port();

    for _ in 0..2 {
        // Log in, then hang up hard (RST) while the registry is still being asked.
        let mut flaky = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        flaky
            .write_all(&connect_frame("s1", "s1", "secret-one"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        flaky.set_zero_linger().unwrap();
        drop(flaky);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The same device comes back, and another one connects: both are answered.
    for (id, secret) in [
        ("s1", "secret-one"),
        ("s2", "secret-two"),
        ("s1", "secret-one"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream
            .write_all(&connect_frame(id, id, secret))
            .await
            .unwrap();
        let mut connack = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut connack))
            .await
            .expect("a CONNACK within 5 s")
            .unwrap_or_else(|error| panic!("{id} was not answered: {error}"));
        assert_eq!(connack, [0x20, 0x02, 0x00, 0x00], "{id} admitted");
    }
    assert!(
        mosquitto_pub(
            port,
            &[
                "-i",
                "s2",
                "-u",
                "s2",
                "-P",
                "secret-two",
                "-t",
                "parking/v1/g1/spots/2/state",
                "-m",
                r#"{"occupied":true}"#
            ]
        )
        .await
    );
    broker.shutdown();
}

/// The front door turns connections above the limit away itself (rumqttd's router would leak
/// state on such a refusal), counts them, and admits again once a client leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_limit_are_turned_away_and_counted() {
    let metrics = BrokerMetrics::new(&Registry::new()).unwrap();
    let settings = EmbeddedSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_anonymous: true,
        max_connections: 2,
        ..EmbeddedSettings::default()
    };
    let broker = EmbeddedBroker::start(settings, Arc::new(Registry_::default()), metrics.clone())
        .await
        .unwrap();
    let port = broker.local_addr().port();
    let refused = || {
        metrics
            .connections_refused
            .with_label_values(&["too_many_connections"])
            .get()
    };
    let first = admitted_eventually(port, "a").await;
    drop(admitted_eventually(port, "b").await);
    // `b` has left (its place frees once the relay sees it go); `a` stays: one more fits.
    let _second = admitted_eventually(port, "c").await;
    let before = refused();
    assert!(try_connect(port, "d").await.is_none(), "over the limit");
    assert_eq!(refused(), before + 1);
    drop(first);
    let _again = admitted_eventually(port, "e").await;
    broker.shutdown();
    tokio::time::timeout(Duration::from_secs(5), broker.closed())
        .await
        .expect("every relayed connection closed at shutdown");
}

/// Connects anonymously; the stream if a CONNACK came back.
async fn try_connect(port: u16, client_id: &str) -> Option<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream.write_all(&anonymous_connect(client_id)).await.ok()?;
    let mut answer = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut answer))
        .await
        .expect("an answer or a close within 5 s");
    (read.is_ok() && answer == [0x20, 0x02, 0x00, 0x00]).then_some(stream)
}

/// Connects, retrying while a departing client's place is still being given back.
async fn admitted_eventually(port: u16, client_id: &str) -> tokio::net::TcpStream {
    for _ in 0..100 {
        if let Some(stream) = try_connect(port, client_id).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{client_id} was never admitted");
}

fn anonymous_connect(client_id: &str) -> Vec<u8> {
    let mut packet = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C];
    packet.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    packet.extend_from_slice(client_id.as_bytes());
    let mut frame = vec![0x10, u8::try_from(packet.len()).unwrap()];
    frame.extend_from_slice(&packet);
    frame
}
