//! Test support: a throwaway Mosquitto broker and a rumqttc subscriber.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A Mosquitto process on a free loopback port, killed on drop.
pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

impl Mosquitto {
    pub async fn start() -> Mosquitto {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            let config = dir.path().join("mosquitto.conf");
            std::fs::write(
                &config,
                format!(
                    "listener {port} 127.0.0.1\n\
                     allow_anonymous true\n\
                     set_tcp_nodelay true\n\
                     persistence false\n\
                     max_queued_messages 0\n\
                     max_inflight_messages 100\n\
                     log_dest stderr\n\
                     log_type error\n"
                ),
            )
            .expect("write the config");
            let child = Command::new("/usr/sbin/mosquitto")
                .arg("-c")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start /usr/sbin/mosquitto");
            let mut broker = Mosquitto {
                child,
                port,
                _dir: dir,
            };
            for _ in 0..250 {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return broker;
                }
                if broker.child.try_wait().ok().flatten().is_some() {
                    break; // port taken meanwhile: try another
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("mosquitto did not start");
    }

    pub fn endpoint(&self) -> parkd_sim::MqttEndpoint {
        parkd_sim::MqttEndpoint::new("127.0.0.1", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A message as the subscriber saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A rumqttc subscriber whose event loop runs in its own task (aborted on drop).
pub struct Subscriber {
    pub rx: mpsc::UnboundedReceiver<Received>,
    client: AsyncClient,
    task: JoinHandle<()>,
}

impl Subscriber {
    /// Connects, subscribes to `filter` at QoS 1, and returns once the SUBACK is in.
    pub async fn start(port: u16, client_id: &str, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, rx) = mpsc::unbounded_channel();
        let (subacked_tx, mut subacked_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let _ = tx.send(Received {
                            topic: publish.topic.clone(),
                            payload: publish.payload.to_vec(),
                            retain: publish.retain,
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacked_tx.send(());
                    }
                    Ok(_) => {}
                    Err(error) => {
                        eprintln!("subscriber: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::time::timeout(Duration::from_secs(5), subacked_rx.recv())
            .await
            .expect("SUBACK in time")
            .expect("subscriber alive");
        Subscriber { rx, client, task }
    }

    /// Collects messages until `quiet` passes without one (or `limit` is reached).
    pub async fn collect_until_quiet(&mut self, quiet: Duration, limit: usize) -> Vec<Received> {
        let mut out = Vec::new();
        while out.len() < limit {
            match tokio::time::timeout(quiet, self.rx.recv()).await {
                Ok(Some(message)) => out.push(message),
                _ => break,
            }
        }
        out
    }

    /// Everything received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Received> {
        let mut out = Vec::new();
        while let Ok(message) = self.rx.try_recv() {
            out.push(message);
        }
        out
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.task.abort();
    }
}
