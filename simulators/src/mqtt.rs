//! MQTT plumbing shared by the fleet, the gates and the load generator.
//!
//! Every simulated connection is a rumqttc [`AsyncClient`] plus its [`EventLoop`], and the event
//! loop runs alone in its own task (`poll_loop`) that does nothing but poll. `EventLoop::poll`
//! is not cancel-safe, so it is never raced against a timer or the shutdown token: the loop
//! ends when the broker has closed the connection after the DISCONNECT that the owner queued
//! behind its last publishes, or when the connection is down at shutdown; a loop that does
//! neither within the owner's grace period is aborted. (Dropping the socket right after the
//! DISCONNECT is not enough: unread acks turn the close into a TCP reset, and Mosquitto then
//! loses the last publishes still in its receive buffer.) rumqttc reconnects with no backoff of
//! its own, so the loop sleeps after an error (100 ms doubling to 5 s); that sleep, unlike the
//! poll, may be cut short by the token.
//!
//! What a loop sees is counted in [`ConnCounters`], shared with the owner through an `Arc`:
//! the owner learns of a (re)connection by the CONNACK counter changing. A connection that
//! subscribes (a gate, to its commands) gets what it receives through an inbox channel
//! (`poll_loop_with_inbox`).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parkd_core::throttle::LogThrottle;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Outgoing, Packet};
use serde::{Serialize, Serializer};
use tokio_util::sync::CancellationToken;

use crate::error::SimError;

/// Shortest keep alive accepted: the embedded broker refuses 0, and very short ones only add
/// pings.
pub const MIN_KEEP_ALIVE: Duration = Duration::from_secs(5);

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where the broker listens: `host:port` (the port defaults to 1883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl MqttEndpoint {
    /// An endpoint from its parts.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl Default for MqttEndpoint {
    fn default() -> Self {
        Self::new("127.0.0.1", 1883)
    }
}

impl fmt::Display for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for MqttEndpoint {
    type Err = SimError;

    fn from_str(raw: &str) -> Result<Self, SimError> {
        let raw = raw.trim();
        let raw = raw
            .strip_prefix("mqtt://")
            .or_else(|| raw.strip_prefix("tcp://"))
            .unwrap_or(raw);
        let bad = || SimError::config(format!("{raw:?} is not host:port"));
        // [v6]:port, host:port, or a bare host.
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (host, rest) = rest.split_once(']').ok_or_else(bad)?;
            match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if rest.is_empty() => (host, None),
                None => return Err(bad()),
            }
        } else {
            match raw.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => (raw, None),
                None => (raw, None),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        let port = match port {
            Some(port) => port.parse().map_err(|_| bad())?,
            None => 1883,
        };
        Ok(Self::new(host, port))
    }
}

/// A username and password for MQTT CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The username.
    pub username: String,
    /// The password.
    pub password: String,
}

impl Login {
    /// A login from its parts.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

type CredentialFn = dyn Fn(&str) -> Option<Login> + Send + Sync;

/// Gives the login of a connection from its MQTT client id, so that the server's device
/// registry (one secret per device) can be used. `None` connects without credentials.
#[derive(Clone)]
pub struct Credentials(Arc<CredentialFn>);

impl Credentials {
    /// Credentials computed by a closure of the client id.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<Login> + Send + Sync + 'static) -> Self {
        Self(Arc::new(lookup))
    }

    /// Credentials looked up in a map keyed by client id.
    pub fn from_map(map: HashMap<String, Login>) -> Self {
        Self::from_fn(move |client_id| map.get(client_id).cloned())
    }

    /// The same login for every connection.
    pub fn same_for_all(login: Login) -> Self {
        Self::from_fn(move |_| Some(login.clone()))
    }

    /// The login of `client_id`, if any.
    pub fn login(&self, client_id: &str) -> Option<Login> {
        (self.0)(client_id)
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<fn>)")
    }
}

/// The MQTT quality of service used for publishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    /// QoS 0: fire and forget.
    AtMostOnce,
    /// QoS 1: acknowledged by the broker.
    #[default]
    AtLeastOnce,
}

impl Qos {
    /// The numeric level.
    pub fn level(self) -> u8 {
        match self {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
        }
    }
}

impl From<Qos> for rumqttc::QoS {
    fn from(qos: Qos) -> Self {
        match qos {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

impl FromStr for Qos {
    type Err = SimError;

    fn from_str(raw: &str) -> Result<Self, SimError> {
        match raw.trim() {
            "0" => Ok(Qos::AtMostOnce),
            "1" => Ok(Qos::AtLeastOnce),
            other => Err(SimError::config(format!(
                "QoS {other:?} is not supported (use 0 or 1)"
            ))),
        }
    }
}

impl Serialize for Qos {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.level())
    }
}

/// What one connection's event loop has seen. All counters only grow.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// CONNACKs received: 1 after the first connect, +1 per reconnection.
    pub connacks: AtomicU64,
    /// Whether the connection is up (between a CONNACK and the next error).
    pub connected: AtomicBool,
    /// Errors returned by the event loop (failed connects, dropped connections).
    pub errors: AtomicU64,
    /// PUBLISH packets written to the socket (retransmissions after a reconnect included).
    pub publishes_sent: AtomicU64,
    /// PUBACKs received for QoS 1 publishes.
    pub pubacks: AtomicU64,
    /// Whether the event loop has stopped for good (nothing queued will be sent any more).
    pub stopped: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl ConnCounters {
    /// A fresh set of counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The last error the event loop returned, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn record_error(&self, error: &ConnectionError) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.connected.store(false, Ordering::Release);
        *self
            .last_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(error.to_string());
    }
}

/// How to build the MQTT options of one connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnSpec<'a> {
    pub endpoint: &'a MqttEndpoint,
    pub client_id: &'a str,
    pub credentials: Option<&'a Credentials>,
    pub keep_alive: Duration,
    pub will: Option<rumqttc::LastWill>,
    pub inflight: u16,
    pub channel_capacity: usize,
}

impl ConnSpec<'_> {
    /// The rumqttc options: clean session, the keep alive (at least [`MIN_KEEP_ALIVE`]), the
    /// will, the login from the credentials, and the request channel capacity.
    pub(crate) fn options(&self) -> MqttOptions {
        let mut options = MqttOptions::new(
            self.client_id,
            self.endpoint.host.clone(),
            self.endpoint.port,
        );
        options
            .set_keep_alive(self.keep_alive.max(MIN_KEEP_ALIVE))
            .set_clean_session(true)
            .set_inflight(self.inflight.max(1))
            .set_request_channel_capacity(self.channel_capacity.max(1));
        if let Some(will) = &self.will {
            options.set_last_will(will.clone());
        }
        if let Some(login) = self.credentials.and_then(|c| c.login(self.client_id)) {
            options.set_credentials(login.username, login.password);
        }
        options
    }

    /// A client and its event loop, with TCP_NODELAY as asked.
    pub(crate) fn connect(&self, nodelay: bool) -> (AsyncClient, EventLoop) {
        let options = self.options();
        let capacity = options.request_channel_capacity();
        let (client, mut eventloop) = AsyncClient::new(options, capacity);
        let mut network = eventloop.network_options();
        network.set_tcp_nodelay(nodelay);
        network.set_connection_timeout(5);
        eventloop.set_network_options(network);
        (client, eventloop)
    }
}

/// Polls `eventloop` until the broker has closed the connection after our DISCONNECT, or until
/// the connection fails after `shutdown` fired. Counts what it sees in `counters`. Failed polls are followed by a backoff
/// sleep that the token may cut short.
pub(crate) async fn poll_loop(
    eventloop: EventLoop,
    counters: Arc<ConnCounters>,
    shutdown: CancellationToken,
    log: Arc<LogThrottle>,
) {
    poll_loop_with_inbox(eventloop, counters, shutdown, log, None).await;
}

/// [`poll_loop`] that also hands every PUBLISH received (what the connection subscribed to)
/// to `inbox`; a closed inbox drops them.
pub(crate) async fn poll_loop_with_inbox(
    mut eventloop: EventLoop,
    counters: Arc<ConnCounters>,
    shutdown: CancellationToken,
    log: Arc<LogThrottle>,
    inbox: Option<tokio::sync::mpsc::UnboundedSender<rumqttc::Publish>>,
) {
    let client_id = eventloop.mqtt_options.client_id();
    let mut backoff = BACKOFF_START;
    let mut disconnecting = false;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                counters.connected.store(true, Ordering::Release);
                counters.connacks.fetch_add(1, Ordering::AcqRel);
                backoff = BACKOFF_START;
                tracing::debug!(client_id, "connected");
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                counters.pubacks.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(inbox) = &inbox {
                    let _ = inbox.send(publish);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                counters.publishes_sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                counters.connected.store(false, Ordering::Release);
                disconnecting = true;
            }
            Ok(_) => {}
            // The broker closes the socket after our DISCONNECT. Waiting for that (instead of
            // dropping the socket at once) reads the last acks: a socket closed with unread
            // data sends a reset, and the broker may then discard our last publishes.
            Err(_) if disconnecting => break,
            Err(error) => {
                counters.record_error(&error);
                if shutdown.is_cancelled() {
                    break;
                }
                if let Some(suppressed) = log.allow(Instant::now()) {
                    tracing::warn!(
                        client_id,
                        %error,
                        suppressed,
                        "MQTT connection error; retrying in {backoff:?}"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    counters.stopped.store(true, Ordering::Release);
}

/// Waits until every counter set has seen a CONNACK, the deadline passes, or the token fires.
/// Returns how many are connected.
pub(crate) async fn wait_connected(
    counters: &[Arc<ConnCounters>],
    timeout: Duration,
    shutdown: &CancellationToken,
) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let up = counters
            .iter()
            .filter(|c| c.connacks.load(Ordering::Acquire) > 0)
            .count();
        if up == counters.len() || tokio::time::Instant::now() >= deadline {
            return up;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
            () = shutdown.cancelled() => return up,
        }
    }
}

/// The current Unix time in milliseconds.
pub(crate) fn unix_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The default first `seq` of a run: the current Unix time in microseconds. A later run thus
/// never looks like a replay to the platform's de-duplication window, and the value stays
/// below 2^53 (exact in JSON readers that use doubles) until the 23rd century.
pub(crate) fn seq_base_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let parse = |raw: &str| raw.parse::<MqttEndpoint>().unwrap();
        assert_eq!(
            parse("127.0.0.1:1883"),
            MqttEndpoint::new("127.0.0.1", 1883)
        );
        assert_eq!(parse("broker"), MqttEndpoint::new("broker", 1883));
        assert_eq!(
            parse("mqtt://broker:11883"),
            MqttEndpoint::new("broker", 11883)
        );
        assert_eq!(parse("[::1]:1884"), MqttEndpoint::new("::1", 1884));
        assert_eq!(parse("::1"), MqttEndpoint::new("::1", 1883));
        assert_eq!(parse("[::1]:1884").to_string(), "[::1]:1884");
        for bad in ["", ":1883", "host:port", "host:99999", "[::1"] {
            assert!(bad.parse::<MqttEndpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_carry_identity_will_and_login() {
        let endpoint = MqttEndpoint::default();
        let credentials = Credentials::from_map(HashMap::from([(
            "dev-1".to_owned(),
            Login::new("dev-1", "secret"),
        )]));
        let will =
            rumqttc::LastWill::new("t/status", b"{}".to_vec(), rumqttc::QoS::AtLeastOnce, true);
        let spec = ConnSpec {
            endpoint: &endpoint,
            client_id: "dev-1",
            credentials: Some(&credentials),
            keep_alive: Duration::ZERO,
            will: Some(will.clone()),
            inflight: 10,
            channel_capacity: 7,
        };
        let options = spec.options();
        assert_eq!(options.client_id(), "dev-1");
        assert_eq!(options.keep_alive(), MIN_KEEP_ALIVE);
        assert_eq!(options.last_will(), Some(will));
        assert_eq!(
            options.credentials().map(|l| l.username),
            Some("dev-1".into())
        );
        assert_eq!(options.request_channel_capacity(), 7);
        let other = ConnSpec {
            client_id: "dev-2",
            ..spec
        };
        assert!(other.options().credentials().is_none());
        assert!(!format!("{:?}", Login::new("u", "p")).contains("\"p\""));
    }

    #[test]
    fn qos_parses() {
        assert_eq!("0".parse::<Qos>().unwrap(), Qos::AtMostOnce);
        assert_eq!("1".parse::<Qos>().unwrap(), Qos::AtLeastOnce);
        assert!("2".parse::<Qos>().is_err());
    }
}
