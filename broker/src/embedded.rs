//! rumqttd 0.20, embedded.
//!
//! The router runs on its own thread (rumqttd's design; it has no shutdown, it ends with the
//! process). The TCP server runs on a runtime of its own, reading through [`GuardedV4`], and
//! is aborted at shutdown: rumqttd makes blocking channel calls inside its async connection
//! tasks (a new connection waits for the router's acknowledgement with a blocking `recv`), which
//! on the platform's runtime would stall the API, the gates and ingest whenever the router is
//! slow to answer (seen in the end-to-end test: both workers parked in `RemoteLink::new`).
//! It listens on a loopback port only: clients connect to parkd's
//! front door ([`crate::front`]), which relays to it and works around two ways in which
//! rumqttd 0.20 lets one device's hang-up take every later connection down. Consumers inside the process use local links, drained on a
//! dedicated thread each, because link calls are blocking channel operations.
//!
//! Router sizing: rumqttd 0.20 keeps one in-memory log per subscription filter (not per
//! topic), of `segment_count` segments of `segment_size` bytes; ingest's single wildcard filter
//! therefore shares one log across every spot. A local link that falls further behind than that
//! silently skips messages (rumqttd logs a "cursor jumped" warning), so the link thread does
//! nothing but hand messages to a non-blocking sink, and the default log (8 x 8 MiB, about
//! 580,000 sensor messages, memory taken only as it fills) absorbs bursts far larger than the
//! ingest queue behind it (measured in bench/results/FINDINGS.md).

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parkd_core::clock::Clock;
use rumqttd::local::LinkBuilder;
use rumqttd::{ConnectionSettings, LinkType, Notification, RouterConfig, Server, ServerSettings};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{Authenticator, CredentialSource, Sessions};
use crate::front::{Front, FrontSettings};
use crate::guard::{GuardShared, GuardedV4};
use crate::metrics::BrokerMetrics;
use crate::{BrokerError, InboundMessage, MessageSink};

/// How the embedded broker runs.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// TCP address for MQTT clients; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Whether clients without credentials are admitted.
    pub allow_anonymous: bool,
    /// Concurrent client connections; more are closed on accept by the front door (the router
    /// itself is sized above this, because rumqttd 0.20 mishandles a refusal at its limit).
    pub max_connections: usize,
    /// Largest MQTT packet accepted, in bytes.
    pub max_packet_size: usize,
    /// Unacknowledged QoS 1 publishes per connection.
    pub max_inflight: usize,
    /// Time a new socket has to send CONNECT.
    pub connect_timeout: Duration,
    /// Bytes per segment of the in-memory log rumqttd keeps per subscription filter.
    pub segment_size: usize,
    /// Segments per log.
    pub segment_count: usize,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            allow_anonymous: false,
            max_connections: 100_000,
            max_packet_size: 64 * 1024,
            max_inflight: 100,
            connect_timeout: Duration::from_secs(5),
            segment_size: 8 * 1024 * 1024,
            segment_count: 8,
        }
    }
}

type RouterSender = Arc<dyn Fn(&str) -> Result<LinkParts, BrokerError> + Send + Sync>;
type LinkParts = (rumqttd::local::LinkTx, rumqttd::local::LinkRx);

/// A running embedded broker.
pub struct EmbeddedBroker {
    local_addr: SocketAddr,
    front: Front,
    server: JoinHandle<()>,
    /// rumqttd's own runtime (see the module notes); taken and shut down on drop.
    runtime: Option<tokio::runtime::Runtime>,
    new_link: RouterSender,
    metrics: BrokerMetrics,
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Does not wait (the broker may be dropped on an async worker): rumqttd's tasks are
            // dropped at their next await.
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

/// Worker threads of rumqttd's runtime. Connection tasks mostly wait on sockets; more than one
/// keeps a connection stuck in a blocking call from holding up the others.
const SERVER_THREADS: usize = 2;

/// Ports tried for rumqttd's loopback listener before giving up.
const BIND_ATTEMPTS: u32 = 5;

/// Room in the router for the process's own local links, above the client limit.
const LOCAL_LINK_HEADROOM: usize = 1024;

/// Finds a concrete loopback port for rumqttd's listener. rumqttd binds its listener itself
/// and does not report the port, so a free one is reserved and released just before; the start
/// then checks that rumqttd did get it.
fn concrete_addr(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    let probe = StdTcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
    probe
        .local_addr()
        .map_err(|source| BrokerError::Bind { addr, source })
}

/// Whether something listens on `addr`, found by trying to bind it ourselves (no probe
/// connection, so no spurious errors in rumqttd's log).
fn is_listening(addr: SocketAddr) -> bool {
    matches!(StdTcpListener::bind(addr), Err(error) if error.kind() == std::io::ErrorKind::AddrInUse)
}

impl EmbeddedBroker {
    /// Starts the router and the TCP server; returns once the listener accepts connections.
    pub async fn start(
        settings: EmbeddedSettings,
        credentials: Arc<dyn CredentialSource>,
        metrics: BrokerMetrics,
    ) -> Result<EmbeddedBroker, BrokerError> {
        if settings.segment_size < 1024 {
            return Err(BrokerError::Settings(
                "segment_size must be at least 1024".into(),
            ));
        }
        let public =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| BrokerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let local_addr = public.local_addr().map_err(|source| BrokerError::Bind {
            addr: settings.listen,
            source,
        })?;
        let router_config = RouterConfig {
            max_connections: settings.max_connections.saturating_add(LOCAL_LINK_HEADROOM),
            max_outgoing_packet_count: 200,
            max_segment_size: settings.segment_size,
            max_segment_count: settings.segment_count,
            ..RouterConfig::default()
        };
        let router_tx = rumqttd::Router::new(0, router_config).spawn();

        let sessions = Arc::new(Sessions::default());
        let authenticator = Authenticator::new(
            credentials,
            sessions.clone(),
            metrics.clone(),
            settings.allow_anonymous,
        );
        let mut connections = ConnectionSettings {
            connection_timeout_ms: u16::try_from(settings.connect_timeout.as_millis())
                .unwrap_or(u16::MAX),
            max_payload_size: settings.max_packet_size,
            max_inflight_count: settings.max_inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        connections.set_auth_handler(move |client_id, username, password| {
            let authenticator = authenticator.clone();
            async move {
                authenticator
                    .authenticate(client_id, username, password)
                    .await
            }
        });
        let guard = Arc::new(GuardShared::new(
            sessions,
            settings.allow_anonymous,
            metrics.clone(),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVER_THREADS)
            .thread_name("mqtt-server")
            .enable_all()
            .build()
            .map_err(|error| BrokerError::Settings(format!("mqtt server runtime: {error}")))?;
        // The port reserved for rumqttd can be taken before rumqttd binds it (an outgoing
        // connection's ephemeral port, say): then rumqttd's server stops at once, and only then
        // another port is tried. Waiting out the deadline is not retried.
        let mut attempt = 1;
        let (listen, server) = loop {
            let listen = match concrete_addr(SocketAddr::from(([127, 0, 0, 1], 0))) {
                Ok(listen) => listen,
                Err(error) => {
                    // Dropping a runtime inside an async context panics.
                    runtime.shutdown_background();
                    return Err(error);
                }
            };
            let server_settings = ServerSettings {
                name: "parkd-v4".into(),
                listen,
                tls: None,
                next_connection_delay_ms: 0,
                connections: connections.clone(),
            };
            let protocol = GuardedV4::new(guard.clone());
            let mut server = Server::new(server_settings, router_tx.clone(), protocol);
            let task = runtime.spawn(async move {
                if let Err(error) = server.start(LinkType::Remote).await {
                    tracing::error!(%error, "mqtt server stopped");
                }
            });
            let deadline = Instant::now() + Duration::from_secs(5);
            let stopped = loop {
                if task.is_finished() {
                    break true;
                }
                if is_listening(listen) {
                    break false;
                }
                if Instant::now() > deadline {
                    task.abort();
                    runtime.shutdown_background();
                    return Err(BrokerError::NotListening(listen));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            if !stopped {
                break (listen, task);
            }
            if attempt == BIND_ATTEMPTS {
                runtime.shutdown_background();
                return Err(BrokerError::NotListening(listen));
            }
            tracing::warn!(%listen, attempt, "mqtt server lost its loopback port; trying another");
            attempt += 1;
        };
        let front = Front::start(
            public,
            FrontSettings {
                upstream: listen,
                max_connections: settings.max_connections,
                answer_wait: settings.connect_timeout + Duration::from_secs(10),
            },
            metrics.clone(),
        );
        tracing::info!(listen = %local_addr, allow_anonymous = settings.allow_anonymous, "mqtt broker listening");

        let new_link: RouterSender = Arc::new(move |name: &str| {
            let (tx, rx, _connack) = LinkBuilder::new(name, router_tx.clone())
                .dynamic_filters(true)
                .build()
                .map_err(|error| BrokerError::Link(error.to_string()))?;
            Ok((tx, rx))
        });
        Ok(EmbeddedBroker {
            local_addr,
            front,
            server,
            runtime: Some(runtime),
            new_link,
            metrics,
        })
    }

    /// The address MQTT clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the TCP server and its front door are still running.
    pub fn is_running(&self) -> bool {
        !self.server.is_finished() && self.front.is_running()
    }

    /// Subscribes an in-process consumer to `filters`. Messages are handed to `sink` from a
    /// dedicated thread until `shutdown` fires; the returned handle joins that thread.
    pub async fn subscribe(
        &self,
        link_name: &str,
        filters: &[&str],
        sink: Arc<dyn MessageSink>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> Result<std::thread::JoinHandle<()>, BrokerError> {
        let new_link = self.new_link.clone();
        let name = link_name.to_owned();
        let filters: Vec<String> = filters.iter().map(|filter| (*filter).to_owned()).collect();
        // Link calls are blocking channel operations: keep them off the async workers.
        let (link_tx, link_rx) = tokio::task::spawn_blocking(move || {
            let (mut link_tx, link_rx) = new_link(&name)?;
            for filter in filters {
                link_tx
                    .subscribe(filter)
                    .map_err(|error| BrokerError::Link(error.to_string()))?;
            }
            Ok::<_, BrokerError>((link_tx, link_rx))
        })
        .await
        .map_err(|error| BrokerError::Link(error.to_string()))??;
        let counter = self.metrics.forwarded.with_label_values(&[link_name]);
        let name = link_name.to_owned();
        std::thread::Builder::new()
            .name(format!("mqtt-link-{name}"))
            .spawn(move || drain_link(name, link_tx, link_rx, sink, clock, shutdown, counter))
            .map_err(|error| BrokerError::Link(error.to_string()))
    }

    /// A handle for the platform to publish (availability, gate commands).
    pub async fn publisher(&self, link_name: &str) -> Result<LocalPublisher, BrokerError> {
        let new_link = self.new_link.clone();
        let name = link_name.to_owned();
        let (tx, rx) = tokio::task::spawn_blocking(move || new_link(&name))
            .await
            .map_err(|error| BrokerError::Link(error.to_string()))??;
        Ok(LocalPublisher { tx, _rx: rx })
    }

    /// Stops accepting MQTT connections and closes the clients' connections.
    pub fn shutdown(&self) {
        self.front.shutdown();
        self.server.abort();
    }

    /// Waits until every client connection has been closed (after [`EmbeddedBroker::shutdown`]).
    pub async fn closed(&self) {
        self.front.closed().await;
    }
}

/// Publishes from inside the process through a local link.
pub struct LocalPublisher {
    tx: rumqttd::local::LinkTx,
    _rx: rumqttd::local::LinkRx,
}

impl std::fmt::Debug for LocalPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPublisher").finish_non_exhaustive()
    }
}

impl LocalPublisher {
    /// Publishes at QoS 0. Blocking (a bounded channel send): call from a blocking context.
    pub fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), BrokerError> {
        self.tx
            .publish(topic.to_owned(), payload)
            .map(|_| ())
            .map_err(|error| BrokerError::Link(error.to_string()))
    }

    /// Publishes at QoS 0 with the retain flag, so the broker keeps the newest per topic for
    /// later subscribers (guidance signs). Blocking, like [`LocalPublisher::publish`].
    pub fn publish_retained(&mut self, topic: &str, payload: Vec<u8>) -> Result<(), BrokerError> {
        let publish = rumqttd::protocol::Publish::new(
            bytes::Bytes::from(topic.to_owned()),
            bytes::Bytes::from(payload),
            true,
        );
        // `LinkTx::send` is async in name only: it pushes to a buffer and notifies the router
        // through a bounded channel, which blocks at worst like `publish` does.
        futures_executor_block_on(
            self.tx
                .send(rumqttd::protocol::Packet::Publish(publish, None)),
        )
        .map(|_| ())
        .map_err(|error| BrokerError::Link(error.to_string()))
    }
}

/// Polls a future that never waits on a waker to completion (see its one caller).
fn futures_executor_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    let mut context = std::task::Context::from_waker(waker);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::yield_now();
    }
}

fn drain_link(
    name: String,
    _link_tx: rumqttd::local::LinkTx,
    mut link_rx: rumqttd::local::LinkRx,
    sink: Arc<dyn MessageSink>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    counter: prometheus::IntCounter,
) {
    tracing::debug!(link = name, "local link draining");
    while !shutdown.is_cancelled() {
        let deadline = Instant::now() + Duration::from_millis(100);
        match link_rx.recv_deadline(deadline) {
            Ok(Some(Notification::Forward(forward))) => {
                counter.inc();
                sink.deliver(InboundMessage {
                    topic: forward.publish.topic,
                    payload: forward.publish.payload,
                    received_at: clock.now(),
                });
            }
            Ok(Some(Notification::Unschedule)) => {
                if let Err(error) = link_rx.ready() {
                    tracing::error!(link = name, %error, "local link lost while waking");
                    return;
                }
            }
            Ok(Some(_)) | Ok(None) => {}
            Err(rumqttd::local::LinkError::RecvTimeout(flume::RecvTimeoutError::Timeout)) => {}
            Err(error) => {
                tracing::error!(link = name, %error, "local link closed");
                return;
            }
        }
    }
    tracing::debug!(link = name, "local link stopped");
}
