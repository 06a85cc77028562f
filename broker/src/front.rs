//! The front door: parkd's own TCP listener in front of rumqttd's.
//!
//! rumqttd 0.20 listens on a loopback port that only this module connects to; clients connect
//! here and their bytes are relayed both ways unchanged. The relay exists for two defects of
//! rumqttd 0.20 that turn one misbehaving device into an outage of the whole broker:
//!
//! - **A CONNACK that cannot be written leaks a will handler.** rumqttd registers a will
//!   handler per client id before it answers CONNECT, and forgets to remove it when writing the
//!   CONNACK fails (the device hung up while its login was being checked). The next CONNECT with
//!   that client id then panics while holding the handlers' lock (`server/broker.rs`,
//!   `try_send(..).unwrap()`), which poisons the lock, and every later connection panics on it.
//!   Here, rumqttd's side of a connection stays open until rumqttd has sent its first bytes (the
//!   CONNACK) or closed it, whatever the device did, so that write cannot fail.
//! - **A refusal at the router's connection limit leaks the same way** (the link is never
//!   built). The front door counts connections itself and turns away those above
//!   `max_connections` before rumqttd sees them; the router is sized above that limit.
//!
//! It also gives parkd one place that sees every client socket (a real peer address for logs,
//! `TCP_NODELAY` on both legs, connections closed in order at shutdown). The cost is one
//! loopback hop per message: about 0.1–0.4 ms on a gate's round trip, measured side by side
//! with the build before it (bench/results/gates-front-door.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::BrokerMetrics;

/// How the front door relays.
#[derive(Debug, Clone)]
pub(crate) struct FrontSettings {
    /// rumqttd's loopback listener.
    pub(crate) upstream: SocketAddr,
    /// Client connections relayed at once; more are closed on accept.
    pub(crate) max_connections: usize,
    /// How long rumqttd's side is kept open after the client left, waiting for its answer.
    /// Longer than rumqttd's own CONNECT timeout plus a login check.
    pub(crate) answer_wait: Duration,
}

/// The running front door.
#[derive(Debug)]
pub(crate) struct Front {
    accept: JoinHandle<()>,
    connections: TaskTracker,
    shutdown: CancellationToken,
}

impl Front {
    /// Starts accepting on `listener`.
    pub(crate) fn start(
        listener: TcpListener,
        settings: FrontSettings,
        metrics: BrokerMetrics,
    ) -> Front {
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::new(settings),
            metrics,
            connections.clone(),
            shutdown.clone(),
        ));
        Front {
            accept,
            connections,
            shutdown,
        }
    }

    /// Whether the accept loop still runs.
    pub(crate) fn is_running(&self) -> bool {
        !self.accept.is_finished()
    }

    /// Stops accepting and closes every relayed connection.
    pub(crate) fn shutdown(&self) {
        self.shutdown.cancel();
        self.connections.close();
    }

    /// Waits until every connection task has ended.
    pub(crate) async fn closed(&self) {
        self.connections.wait().await;
    }
}

/// Decrements the open-connection count when a relay ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn accept_loop(
    listener: TcpListener,
    settings: Arc<FrontSettings>,
    metrics: BrokerMetrics,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "mqtt accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::AcqRel) >= settings.max_connections {
            open.fetch_sub(1, Ordering::AcqRel);
            metrics
                .connections_refused
                .with_label_values(&["too_many_connections"])
                .inc();
            tracing::debug!(%peer, "mqtt connection refused: at the connection limit");
            continue;
        }
        let slot = Slot(open.clone());
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = relay(client, peer, &settings) => {}
            }
        });
    }
}

/// Relays one client connection until either side closes.
async fn relay(client: TcpStream, peer: SocketAddr, settings: &FrontSettings) {
    let upstream = match TcpStream::connect(settings.upstream).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%peer, %error, "mqtt relay cannot reach the broker");
            return;
        }
    };
    // Small packets both ways (a sensor reading, a gate command): never wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let (answered_tx, mut answered) = watch::channel(false);

    let to_broker = async move {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        // The client is gone or done sending. rumqttd may still be checking its login: keep
        // its side open until it has answered, so that its CONNACK write cannot fail.
        let _ = tokio::time::timeout(settings.answer_wait, answered.wait_for(|seen| *seen)).await;
        let _ = upstream_write.shutdown().await;
        // rumqttd closes its side on our EOF, which ends `to_client` first; this bounds a
        // relay whose broker side never closes.
        tokio::time::sleep(settings.answer_wait).await;
    };
    let to_client = async move {
        let mut buffer = vec![0u8; 4 * 1024];
        loop {
            let read = match upstream_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            answered_tx.send_replace(true);
            if client_write.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        // Either way rumqttd has answered or is gone.
        answered_tx.send_replace(true);
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        () = to_broker => {}
        () = to_client => {}
    }
}
