//! The protocol seam: a wrapper around rumqttd's MQTT 3.1.1 codec that every connection reads
//! through.
//!
//! rumqttd clones the protocol value for each accepted connection, so the wrapper carries that
//! connection's state (its client id and grant). On each decoded packet it:
//!
//! 1. CONNECT: refuses client ids that are not device ids (`/ + # $`, spaces, > 64 bytes),
//!    which also keeps rumqttd 0.20 from poisoning its listener on such ids; maps keep alive 0
//!    (legal MQTT, refused by rumqttd) to the maximum; gives a client without credentials an
//!    empty login when anonymous access is allowed (so rumqttd's auth handler sees it) and
//!    refuses it otherwise; remembers the will topic for the login check.
//! 2. PUBLISH and SUBSCRIBE: checks the topic or filter against the connection's grant.
//!
//! A refusal can only drop the connection: rumqttd's error type is fixed, and the refusal is
//! logged by rumqttd as `IncorrectPacketFormat`. Ours is counted in the metrics and logged,
//! rate-limited.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parkd_core::ids::DeviceId;
use parkd_core::throttle::LogThrottle;
use parkd_core::topic::Grant;
use prometheus::IntGauge;
use rumqttd::protocol::v4::V4;
use rumqttd::protocol::{Error, Login, Packet, Protocol};

use crate::auth::Sessions;
use crate::metrics::BrokerMetrics;

/// Settings shared by every connection.
#[derive(Debug)]
pub struct GuardShared {
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) allow_anonymous: bool,
    pub(crate) metrics: BrokerMetrics,
    throttle: LogThrottle,
}

impl GuardShared {
    /// Shared guard state.
    pub fn new(sessions: Arc<Sessions>, allow_anonymous: bool, metrics: BrokerMetrics) -> Self {
        Self {
            sessions,
            allow_anonymous,
            metrics,
            throttle: LogThrottle::new(Duration::from_secs(5)),
        }
    }
}

/// Keeps the connected-clients gauge right: one per connection past CONNECT.
#[derive(Debug)]
struct ConnectedToken(IntGauge);

impl Drop for ConnectedToken {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The guarded MQTT 3.1.1 protocol.
#[derive(Debug)]
pub struct GuardedV4 {
    inner: V4,
    shared: Arc<GuardShared>,
    client_id: Option<String>,
    grant: Option<Grant>,
    connected: Option<ConnectedToken>,
}

impl Clone for GuardedV4 {
    /// A fresh connection: shared settings, no per-connection state.
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

impl GuardedV4 {
    /// A protocol value for rumqttd's server.
    pub fn new(shared: Arc<GuardShared>) -> Self {
        Self {
            inner: V4,
            shared,
            client_id: None,
            grant: None,
            connected: None,
        }
    }

    fn deny(&self, action: &'static str, reason: &'static str, topic: &str) -> Error {
        self.shared
            .metrics
            .acl_denied
            .with_label_values(&[action, reason])
            .inc();
        if let Some(suppressed) = self.shared.throttle.allow(Instant::now()) {
            tracing::warn!(
                client_id = self.client_id.as_deref().unwrap_or(""),
                action,
                reason,
                topic,
                suppressed,
                "mqtt acl refused; closing the connection"
            );
        }
        Error::IncorrectPacketFormat
    }

    fn refuse_connect(&self, reason: &'static str, client_id: &str) -> Error {
        self.shared
            .metrics
            .connections_refused
            .with_label_values(&[reason])
            .inc();
        if let Some(suppressed) = self.shared.throttle.allow(Instant::now()) {
            tracing::warn!(client_id, reason, suppressed, "mqtt connection refused");
        }
        Error::IncorrectPacketFormat
    }

    fn grant(&mut self) -> Option<&Grant> {
        if self.grant.is_none() {
            let client_id = self.client_id.as_deref()?;
            self.grant = self
                .shared
                .sessions
                .grants
                .get(client_id)
                .map(|grant| grant.clone());
        }
        self.grant.as_ref()
    }

    fn on_connect(&mut self, packet: &mut Packet) -> Result<(), Error> {
        let Packet::Connect(connect, _, will, _, login) = packet else {
            return Ok(());
        };
        let anonymous = login.as_ref().is_none_or(|login| login.username.is_empty());
        // An empty id is legal for anonymous clean sessions (rumqttd assigns one); any other id
        // must be a device id.
        let id_ok = if connect.client_id.is_empty() {
            anonymous
        } else {
            DeviceId::parse(&connect.client_id).is_ok()
        };
        if !id_ok {
            return Err(self.refuse_connect("client_id_invalid", &connect.client_id));
        }
        if connect.keep_alive == 0 {
            connect.keep_alive = u16::MAX;
        }
        if anonymous {
            if !self.shared.allow_anonymous {
                return Err(self.refuse_connect("auth_failed", &connect.client_id));
            }
            if let Some(will) = will.as_ref() {
                let topic = String::from_utf8_lossy(&will.topic).into_owned();
                if let Err(denied) = Grant::Anonymous.check_publish(&topic) {
                    return Err(self.deny("will", denied.label(), &topic));
                }
            }
            *login = Some(Login {
                username: String::new(),
                password: String::new(),
            });
            self.grant = Some(Grant::Anonymous);
        } else if let Some(will) = will.as_ref() {
            let topic = String::from_utf8_lossy(&will.topic).into_owned();
            self.shared
                .sessions
                .pending_wills
                .insert(connect.client_id.clone(), topic);
        } else {
            self.shared
                .sessions
                .pending_wills
                .remove(&connect.client_id);
        }
        self.client_id = Some(connect.client_id.clone());
        let gauge = self.shared.metrics.clients_connected.clone();
        gauge.inc();
        self.connected = Some(ConnectedToken(gauge));
        Ok(())
    }
}

impl Protocol for GuardedV4 {
    fn read_mut(&mut self, stream: &mut BytesMut, max_size: usize) -> Result<Packet, Error> {
        let mut packet = self.inner.read_mut(stream, max_size)?;
        if matches!(packet, Packet::Connect(..)) {
            self.on_connect(&mut packet)?;
            return Ok(packet);
        }
        match &packet {
            Packet::Publish(publish, _) => {
                let topic = std::str::from_utf8(&publish.topic).map_err(|_| Error::TopicNotUtf8)?;
                let verdict = match self.grant() {
                    Some(grant) => grant.check_publish(topic).map_err(|d| d.label()),
                    None => Err("not_logged_in"),
                };
                if let Err(reason) = verdict {
                    let topic = topic.to_owned();
                    return Err(self.deny("publish", reason, &topic));
                }
            }
            Packet::Subscribe(subscribe, _) => {
                for filter in &subscribe.filters {
                    let verdict = match self.grant() {
                        Some(grant) => grant.check_subscribe(&filter.path).map_err(|d| d.label()),
                        None => Err("not_logged_in"),
                    };
                    if let Err(reason) = verdict {
                        let path = filter.path.clone();
                        return Err(self.deny("subscribe", reason, &path));
                    }
                }
            }
            _ => {}
        }
        Ok(packet)
    }

    fn write(&self, packet: Packet, write: &mut BytesMut) -> Result<usize, Error> {
        self.inner.write(packet, write)
    }
}
