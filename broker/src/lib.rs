//! MQTT for parkd: the embedded broker and the external-broker client, behind one interface.
//!
//! - [`embedded`]: rumqttd 0.20 run in-process. Its router runs on its own thread; its TCP
//!   server runs on our runtime through the [`guard::GuardedV4`] protocol seam, which adds what
//!   rumqttd lacks: a per-topic ACL, keep alive 0, and a client-id guard against rumqttd's
//!   listener-poisoning panic. In-process consumers read through a local link
//!   ([`embedded::EmbeddedBroker::subscribe`]), drained on a dedicated thread so the router
//!   never waits for us.
//! - [`external`]: the same subscription against Mosquitto, EMQX or HiveMQ with rumqttc,
//!   optionally through a shared subscription so several parkd instances split the load.
//! - [`auth`]: device authentication against the registry ([`auth::CredentialSource`]).
//!
//! Both modes hand every message to a [`MessageSink`], which must never block: the ingest
//! pipeline's sink is a `try_send` into a bounded queue.
//!
//! This crate knows topics and grants, not what a payload means.

pub mod auth;
pub mod embedded;
pub mod external;
mod front;
pub mod guard;
pub mod metrics;

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// One message received from the broker.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    /// The topic it was published on.
    pub topic: Bytes,
    /// Its payload, untouched.
    pub payload: Bytes,
    /// When the platform received it.
    pub received_at: DateTime<Utc>,
}

/// Where received messages go. Implementations must return quickly and never block: they run
/// on the thread that drains the broker.
pub trait MessageSink: Send + Sync + 'static {
    /// Takes one message.
    fn deliver(&self, message: InboundMessage);
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listener address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The broker did not start listening in time.
    #[error("broker did not start listening on {0} in time")]
    NotListening(std::net::SocketAddr),
    /// A local link could not be made or broke.
    #[error("local link failed: {0}")]
    Link(String),
    /// Invalid settings.
    #[error("invalid broker settings: {0}")]
    Settings(String),
    /// An external broker URL could not be used.
    #[error("invalid external broker URL {url:?}: {reason}")]
    ExternalUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}
