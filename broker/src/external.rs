//! External-broker mode: read device messages from Mosquitto, EMQX, HiveMQ or VerneMQ.
//!
//! With `shared_group` set, the subscription is `$share/{group}/{filter}`, so several parkd
//! instances split the stream (MQTT 5 shared subscriptions, also offered on 3.1.1 by these
//! brokers). Topic ACLs are then the external broker's job.
//!
//! rumqttc's event loop is polled on its own task. `EventLoop::poll` is not cancel-safe, so it
//! is only raced against shutdown (when losing an in-flight packet no longer matters), never
//! against a timer. It reconnects without backoff on its own, so errors sleep with a growing
//! delay. Sessions are clean, so every CONNACK re-subscribes.

use std::sync::Arc;
use std::time::Duration;

use parkd_core::clock::Clock;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{BrokerError, InboundMessage, MessageSink};

/// How to reach the external broker.
#[derive(Clone)]
pub struct ExternalSettings {
    /// `mqtt://host:port` (TLS is not built in; terminate it in front or on the broker's side).
    pub url: String,
    /// Client id of this parkd instance; distinct per instance.
    pub client_id: String,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one; never printed.
    pub password: Option<String>,
    /// Shared-subscription group; `None` for a plain subscription.
    pub shared_group: Option<String>,
    /// Keep alive.
    pub keep_alive: Duration,
}

impl std::fmt::Debug for ExternalSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalSettings")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("shared_group", &self.shared_group)
            .finish()
    }
}

fn host_port(url: &str) -> Result<(String, u16), BrokerError> {
    let error = |reason: &str| BrokerError::ExternalUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .ok_or_else(|| error("scheme must be mqtt:// or tcp://"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .map_err(|_| error("port is not a number"))?,
        ),
        None => (rest, 1883),
    };
    if host.is_empty() {
        return Err(error("host is empty"));
    }
    Ok((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
    ))
}

/// Subscribes to `filters` on the external broker and hands every message to `sink` until
/// `shutdown` fires.
pub fn subscribe(
    settings: ExternalSettings,
    filters: &[&str],
    sink: Arc<dyn MessageSink>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BrokerError> {
    let (host, port) = host_port(&settings.url)?;
    let mut options = MqttOptions::new(settings.client_id.clone(), host, port);
    options
        .set_keep_alive(settings.keep_alive.max(Duration::from_secs(5)))
        .set_clean_session(true)
        .set_max_packet_size(64 * 1024, 64 * 1024)
        .set_request_channel_capacity(64);
    if let Some(username) = &settings.username {
        options.set_credentials(
            username.clone(),
            settings.password.clone().unwrap_or_default(),
        );
    }
    let filters: Vec<String> = filters
        .iter()
        .map(|filter| match &settings.shared_group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => (*filter).to_owned(),
        })
        .collect();
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    Ok(tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => break,
                event = eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff = Duration::from_millis(100);
                    tracing::info!(url = settings.url, "connected to external mqtt broker");
                    for filter in &filters {
                        if let Err(error) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                            tracing::error!(%error, filter, "cannot subscribe on external broker");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    sink.deliver(InboundMessage {
                        topic: bytes::Bytes::from(publish.topic),
                        payload: publish.payload,
                        received_at: clock.now(),
                    });
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(url = settings.url, %error, ?backoff, "external mqtt broker unreachable; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        let _ = client.try_disconnect();
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        assert_eq!(host_port("mqtt://mq:1884").unwrap(), ("mq".into(), 1884));
        assert_eq!(
            host_port("tcp://10.0.0.1").unwrap(),
            ("10.0.0.1".into(), 1883)
        );
        assert_eq!(
            host_port("mqtt://[::1]:1883").unwrap(),
            ("::1".into(), 1883)
        );
        assert!(host_port("http://x").is_err());
        assert!(host_port("mqtt://:1883").is_err());
        assert!(host_port("mqtt://x:port").is_err());
    }
}
