//! Broker metrics, registered into a caller-provided registry (no globals).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

/// Counters and gauges of the MQTT side.
#[derive(Debug, Clone)]
pub struct BrokerMetrics {
    /// Connections refused, by reason (`client_id_invalid`, `auth_failed`).
    pub connections_refused: IntCounterVec,
    /// Publishes, subscriptions and wills refused by the ACL, by action and reason.
    pub acl_denied: IntCounterVec,
    /// Client connections currently past CONNECT.
    pub clients_connected: IntGauge,
    /// Messages that reached a local-link consumer.
    pub forwarded: IntCounterVec,
}

impl BrokerMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "parkd_mqtt_connections_refused_total",
                "MQTT connections refused, by reason",
            ),
            &["reason"],
        )?;
        let acl_denied = IntCounterVec::new(
            Opts::new(
                "parkd_mqtt_acl_denied_total",
                "MQTT publishes, subscriptions and wills refused by the topic ACL",
            ),
            &["action", "reason"],
        )?;
        let clients_connected = IntGauge::new(
            "parkd_mqtt_clients_connected",
            "MQTT client connections currently open past CONNECT",
        )?;
        let forwarded = IntCounterVec::new(
            Opts::new(
                "parkd_mqtt_link_messages_total",
                "Messages handed from the broker to an in-process consumer, by link",
            ),
            &["link"],
        )?;
        registry.register(Box::new(connections_refused.clone()))?;
        registry.register(Box::new(acl_denied.clone()))?;
        registry.register(Box::new(clients_connected.clone()))?;
        registry.register(Box::new(forwarded.clone()))?;
        Ok(Self {
            connections_refused,
            acl_denied,
            clients_connected,
            forwarded,
        })
    }
}
