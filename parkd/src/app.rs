//! Wiring: everything `parkd serve` and `parkd demo` run, started in dependency order and
//! stopped in the reverse order of data flow:
//!
//! 1. the simulator (demo only) stops publishing;
//! 2. the broker stops accepting and its delivery to ingest stops;
//! 3. ingest drains its queue and commits its last batch;
//! 4. WebSocket clients get a 1001 close and their tasks end;
//! 5. HTTP stops (so `/readyz` and `/metrics` answer until the data is safe);
//! 6. background tasks (retention, gate answers' retention, store health, the occupancy ticker, model reload,
//!    retained availability, the payment reconciler, the gates) stop;
//! 7. the gates' last commands go out: the embedded publisher thread ends, or the external
//!    broker connection sends its queue and disconnects.
//!
//! Each step is owned by [`RunningApp`]; nothing is spawned without an owner.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use parkd_api::auth::Accounts;
use parkd_api::live::{LiveHub, LiveSettings};
use parkd_api::{ApiState, HttpMetrics, ReadinessCheck};
use parkd_broker::embedded::{EmbeddedBroker, EmbeddedSettings};
use parkd_broker::external::{ExternalBroker, ExternalSettings, Route};
use parkd_broker::metrics::BrokerMetrics;
use parkd_core::clock::{Clock, SystemClock};
use parkd_core::ids::LotId;
use parkd_core::topic::{
    GATE_EVENT_FILTER, GATE_FILTER, GATE_REQUEST_FILTER, GATE_STATUS_FILTER, SPOT_FILTER,
};
use parkd_gates::mqtt::{CommandOut, EmbeddedCommands, GateSink, GateStates};
use parkd_gates::{GateMetrics, GateService};
use parkd_ingest::{DeviceIndex, Ingest, IngestMetrics, IngestSettings};
use parkd_occupancy::OccupancyEngine;
use parkd_store::{Store, StoreConfig};
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{MqttMode, ParkdConfig};
use crate::devices::{StoreCredentials, seed_demo_gates, seed_demo_sensors};
use crate::live::{EngineCollector, EngineFeed};

/// Which command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Production: anonymous MQTT refused unless configured.
    Serve,
    /// Everything in one process with a simulated garage; anonymous MQTT allowed by default.
    Demo,
}

/// The store the configuration asks for.
pub fn store_config(config: &ParkdConfig) -> StoreConfig {
    match &config.database.url {
        Some(url) => StoreConfig::Postgres {
            url: url.expose().to_owned(),
            pool_size: config.database.pool_size,
            retention_days: config.database.retention_days,
        },
        None => StoreConfig::Sqlite {
            path: config.data_dir.join("parkd.sqlite3"),
        },
    }
}

/// The demo garage: [`parkd_core::garage::demo_garage`] with `spots` spots, 100 per level,
/// numbered as the demo simulator numbers its sensors.
pub fn demo_lot(lot: &LotId, spots: u32) -> parkd_core::garage::Lot {
    let per_level = parkd_core::garage::DEMO_SPOTS_PER_LEVEL;
    let levels = spots.div_ceil(per_level).max(1);
    let mut model = parkd_core::garage::demo_garage(lot.clone(), levels, per_level);
    model.spots.truncate(spots as usize);
    model
}

/// Opens the store and applies migrations.
pub async fn open_store(config: &ParkdConfig) -> anyhow::Result<Arc<dyn Store>> {
    let store_config = store_config(config);
    parkd_store::open(&store_config)
        .await
        .with_context(|| format!("opening the store ({store_config:?})"))
}

struct DatabaseReady(Arc<dyn Store>);

#[async_trait]
impl ReadinessCheck for DatabaseReady {
    fn name(&self) -> &'static str {
        "database"
    }
    async fn check(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|error| error.to_string())
    }
}

enum BrokerHandle {
    Embedded(Arc<EmbeddedBroker>),
    External(Arc<ExternalBroker>),
}

struct BrokerReady(Arc<BrokerHandle>);

#[async_trait]
impl ReadinessCheck for BrokerReady {
    fn name(&self) -> &'static str {
        "mqtt"
    }
    async fn check(&self) -> Result<(), String> {
        let running = match self.0.as_ref() {
            BrokerHandle::Embedded(broker) => broker.is_running(),
            BrokerHandle::External(external) => external.is_running(),
        };
        if running {
            Ok(())
        } else {
            Err("mqtt is not running".into())
        }
    }
}

/// The whole product, running.
pub struct RunningApp {
    http_addr: SocketAddr,
    mqtt_addr: Option<SocketAddr>,
    store: Arc<dyn Store>,
    registry: Registry,
    ingest_metrics: IngestMetrics,
    engine: Arc<OccupancyEngine>,
    broker: Arc<BrokerHandle>,
    simulator: Option<(CancellationToken, JoinHandle<()>)>,
    link_stop: CancellationToken,
    link: Option<std::thread::JoinHandle<()>>,
    gate_link: Option<std::thread::JoinHandle<()>>,
    gate_commands: Option<Arc<EmbeddedCommands>>,
    gates: Arc<GateService>,
    gate_states: Arc<GateStates>,
    external: Option<Arc<ExternalBroker>>,
    ingest_stop: CancellationToken,
    ingest: Ingest,
    live: Arc<LiveHub>,
    http_stop: CancellationToken,
    http: JoinHandle<std::io::Result<()>>,
    background_stop: CancellationToken,
    background: TaskTracker,
}

impl std::fmt::Debug for RunningApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningApp")
            .field("http_addr", &self.http_addr)
            .field("mqtt_addr", &self.mqtt_addr)
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl RunningApp {
    /// Starts everything the configuration asks for.
    pub async fn start(config: ParkdConfig, mode: Mode) -> anyhow::Result<RunningApp> {
        let started = Instant::now();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let registry = Registry::new();
        let store = open_store(&config).await?;

        let build_info = IntGaugeVec::new(
            Opts::new(
                "parkd_build_info",
                "The running parkd version and store backend",
            ),
            &["version", "store"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), store.backend()])
            .set(1);
        registry.register(Box::new(build_info))?;
        let store_up = IntGauge::new(
            "parkd_store_up",
            "Whether the database answered the last ping",
        )?;
        registry.register(Box::new(store_up.clone()))?;
        registry.register(Box::new(crate::store_metrics::StoreCollector::new(
            store.clone(),
        )?))?;

        if mode == Mode::Demo && config.demo.simulate {
            let lot = LotId::parse(&config.demo.lot).context("demo.lot is not a valid lot id")?;
            if store.lot(&lot).await?.is_none() {
                store.put_lot(&demo_lot(&lot, config.demo.spots)).await?;
                tracing::info!(lot = %lot, spots = config.demo.spots, "demo garage created");
            }
            if crate::demo::seed_demo_tariff(store.as_ref(), &lot, clock.as_ref()).await? {
                tracing::info!(lot = %lot, "demo tariff stored (docs/tariffs.md)");
            }
            let added = seed_demo_sensors(store.as_ref(), &lot, config.demo.spots).await?;
            tracing::info!(lot = %lot, added, "demo sensors registered");
            if config.demo.gates {
                let gates: Vec<_> = parkd_sim::gates::default_entry_gates()
                    .into_iter()
                    .chain(parkd_sim::gates::default_exit_gates())
                    .collect();
                let added = seed_demo_gates(store.as_ref(), &lot, &gates).await?;
                tracing::info!(lot = %lot, added, "demo gates registered");
                // The simulated cars of an earlier run are gone (the garage starts empty, its
                // sensors report every spot free): their sessions end now.
                let now = clock.now();
                let mut ended = 0;
                for session in store.open_parking_sessions(&lot).await? {
                    if store
                        .close_parking_session(&session.id, now, None, None)
                        .await?
                    {
                        ended += 1;
                    }
                }
                if ended > 0 {
                    tracing::info!(lot = %lot, ended, "demo: sessions of an earlier run ended");
                }
            }
        }

        let engine = Arc::new(OccupancyEngine::new(config.engine_settings()));
        let lot_versions = crate::live::load_lots(&engine, store.as_ref(), clock.now()).await?;
        let restored = crate::live::restore(&engine, store.as_ref()).await?;
        tracing::info!(
            lots = lot_versions.len(),
            restored,
            "live occupancy restored from the store"
        );
        registry.register(Box::new(EngineCollector::new(engine.clone())?))?;
        let feed = EngineFeed::new(engine.clone(), &registry)?;

        // Ingest first, so the broker has somewhere to deliver.
        let ingest_metrics = IngestMetrics::new(&registry)?;
        let index = Arc::new(DeviceIndex::load(store.as_ref()).await?);
        let ingest_stop = CancellationToken::new();
        let ingest = Ingest::start_observed(
            IngestSettings {
                batch_size: config.ingest.batch_size,
                batch_interval: config.batch_interval(),
                queue_capacity: config.ingest.queue_capacity,
                write_attempts: config.ingest.write_attempts,
                writers: config
                    .ingest
                    .writers
                    .unwrap_or(if store.backend() == "postgres" { 2 } else { 1 }),
                registry_reload: Duration::from_secs(10),
            },
            store.clone(),
            index,
            ingest_metrics.clone(),
            clock.clone(),
            ingest_stop.clone(),
            Some(Arc::new(feed)),
        )?;

        // Gates: requests in through a link (embedded) or subscriptions (external) of their
        // own, commands out through the same broker.
        let gate_dropped = IntCounterVec::new(
            Opts::new(
                "parkd_gate_dropped_total",
                "Gate requests dropped before a decision (queue full) and commands not sent",
            ),
            &["stage"],
        )?;
        registry.register(Box::new(gate_dropped.clone()))?;
        let (gate_sink, gate_rx) = GateSink::new(
            config.gates.queue_capacity,
            gate_dropped.with_label_values(&["queue"]),
        );
        let broker_metrics = BrokerMetrics::new(&registry)?;
        let link_stop = CancellationToken::new();
        let (broker, mqtt_addr, link, external) = match config.mqtt.mode {
            MqttMode::Embedded => {
                let allow_anonymous = config.mqtt.allow_anonymous.unwrap_or(mode == Mode::Demo);
                let settings = EmbeddedSettings {
                    listen: config.mqtt.listen,
                    allow_anonymous,
                    max_connections: config.mqtt.max_connections,
                    max_packet_size: config.mqtt.max_packet_size,
                    segment_size: config.mqtt.segment_size,
                    segment_count: config.mqtt.segment_count,
                    ..EmbeddedSettings::default()
                };
                let broker = EmbeddedBroker::start(
                    settings,
                    Arc::new(StoreCredentials(store.clone())),
                    broker_metrics,
                )
                .await
                .context("starting the embedded MQTT broker")?;
                let link = broker
                    .subscribe(
                        "ingest",
                        &[SPOT_FILTER],
                        ingest.sink(),
                        clock.clone(),
                        link_stop.clone(),
                    )
                    .await?;
                let addr = broker.local_addr();
                (
                    BrokerHandle::Embedded(Arc::new(broker)),
                    Some(addr),
                    Some(link),
                    None,
                )
            }
            MqttMode::External => {
                let external = &config.mqtt.external;
                let gate_sink: Arc<GateSink> = Arc::new(gate_sink.clone());
                // Ingest and gate requests are shared by the group (one instance takes each);
                // gate events and status go to every instance, for its operators' view.
                let route =
                    |filter: &str, shared: bool, sink: Arc<dyn parkd_broker::MessageSink>| Route {
                        filter: filter.to_owned(),
                        shared,
                        sink,
                    };
                let broker = ExternalBroker::connect(
                    ExternalSettings {
                        url: external.url.clone(),
                        client_id: external.client_id.clone(),
                        username: external.username.clone(),
                        password: external.password.as_ref().map(|p| p.expose().to_owned()),
                        shared_group: external.shared_group.clone(),
                        keep_alive: Duration::from_secs(30),
                    },
                    vec![
                        route(SPOT_FILTER, true, ingest.sink()),
                        route(GATE_REQUEST_FILTER, true, gate_sink.clone()),
                        route(GATE_EVENT_FILTER, false, gate_sink.clone()),
                        route(GATE_STATUS_FILTER, false, gate_sink),
                    ],
                    clock.clone(),
                    gate_dropped.with_label_values(&["command"]),
                )?;
                let broker = Arc::new(broker);
                (
                    BrokerHandle::External(broker.clone()),
                    None,
                    None,
                    Some(broker),
                )
            }
        };
        let broker = Arc::new(broker);

        let (gate_link, gate_commands, gate_out): (_, _, Arc<dyn CommandOut>) =
            match broker.as_ref() {
                BrokerHandle::Embedded(embedded) => {
                    let link = embedded
                        .subscribe(
                            "gates",
                            &[GATE_FILTER],
                            Arc::new(gate_sink),
                            clock.clone(),
                            link_stop.clone(),
                        )
                        .await?;
                    let commands = Arc::new(EmbeddedCommands::start(
                        embedded.publisher("gate-commands").await?,
                        gate_dropped.with_label_values(&["command"]),
                    )?);
                    (Some(link), Some(commands.clone()), commands)
                }
                BrokerHandle::External(external) => (None, None, Arc::new(external.publisher())),
            };
        let charge: Arc<dyn parkd_gates::ExitCharge> = Arc::new(parkd_gates::TariffCharge::new(
            store.clone(),
            engine.clone(),
            parkd_gates::TariffCharge::DEFAULT_EXIT_GRACE,
        ));
        let provider = config
            .payments
            .build_provider(clock.clone())
            .map_err(|error| anyhow::anyhow!("payments: {error}"))?;
        if provider.name() == "test" && mode != Mode::Demo {
            tracing::warn!(
                "payments go to the built-in TEST provider: no money moves; set [payments] \
                 provider = \"stripe\" for real payments (docs/payments.md)"
            );
        }
        // Payments: Stripe's webhook endpoint (provider "stripe" only) and the reconciler
        // (spawned with the background tasks below).
        let webhook = match config.payments.provider {
            parkd_payments::ProviderKind::Stripe => Some(parkd_api::webhooks::StripeWebhook::new(
                config.payments.stripe.webhook_secrets.clone(),
                config.payments.stripe.webhook_tolerance(),
                &registry,
            )?),
            parkd_payments::ProviderKind::Test => None,
        };
        let reconciler = (
            provider.clone(),
            parkd_api::reconcile::ReconcileMetrics::new(&registry)?,
        );
        let gates = Arc::new(GateService::new(
            store.clone(),
            engine.clone(),
            clock.clone(),
            config.gate_settings(),
            charge.clone(),
            GateMetrics::new(&registry)?,
            gate_out.clone(),
        ));
        let gate_states = Arc::new(GateStates::default());
        let emergencies = gates.restore().await?;
        for (lot, emergency) in &emergencies {
            tracing::warn!(%lot, since = %emergency.started_at, "lot is in emergency mode");
            gates.repeat_emergency(lot).await?;
        }

        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding HTTP on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let readiness: Vec<Box<dyn ReadinessCheck>> = vec![
            Box::new(DatabaseReady(store.clone())),
            Box::new(BrokerReady(broker.clone())),
        ];
        let live = Arc::new(LiveHub::new(
            engine.clone(),
            clock.clone(),
            LiveSettings {
                heartbeat: Duration::from_secs(config.live.heartbeat_s),
                max_clients: config.live.max_clients,
                frame_interval: Duration::from_millis(config.live.frame_interval_ms),
                ..LiveSettings::default()
            },
            &registry,
        )?);
        for (lot, emergency) in &emergencies {
            live.set_alert(lot, Some(emergency));
        }
        let accounts = Arc::new(
            Accounts::new(
                store.clone(),
                clock.clone(),
                config.auth_settings(),
                &registry,
            )
            .map_err(|error| anyhow::anyhow!("setting up accounts: {error}"))?,
        );
        // The demo's simulated walk-ins pay at a pay station: an operator account.
        let pay_station = if mode == Mode::Demo && config.demo.simulate && config.demo.gates {
            crate::demo::pay_station(&accounts).await?
        } else {
            None
        };
        let api_state = ApiState {
            http_metrics: HttpMetrics::new(&registry)?,
            registry: registry.clone(),
            readiness: Arc::new(readiness),
            live: live.clone(),
            accounts: accounts.clone(),
            reservation_rules: config.reservation_rules(),
            reservation_metrics: parkd_api::reservations::metrics(&registry)?,
            book: Default::default(),
            gates: Some(parkd_api::gates::GatesApi {
                service: gates.clone(),
                states: gate_states.clone(),
            }),
            payments: Some(parkd_api::payments::PaymentsApi {
                provider,
                charge,
                metrics: parkd_api::payments::PaymentMetrics::new(&registry)?,
                webhook,
            }),
        };
        let app = parkd_api::router(api_state.clone());
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(parkd_api::serve(
            listener,
            app,
            http_stop.clone().cancelled_owned(),
        ));

        let background_stop = CancellationToken::new();
        let background = TaskTracker::new();
        background.spawn(store_health(
            store.clone(),
            store_up,
            background_stop.clone(),
        ));
        background.spawn(retention(
            store.clone(),
            clock.clone(),
            config.database.retention_days,
            background_stop.clone(),
        ));
        background.spawn(sweep_limiter(accounts.clone(), background_stop.clone()));
        background.spawn(prune_gate_decisions(gates.clone(), background_stop.clone()));
        background.spawn(parkd_gates::mqtt::run(
            gates.clone(),
            gate_rx,
            gate_out,
            gate_states.clone(),
            background_stop.clone(),
        ));
        background.spawn(parkd_gates::mqtt::watch_arrivals(
            gates.clone(),
            engine.clone(),
            Duration::from_secs(config.live.model_reload_s),
            background_stop.clone(),
        ));
        background.spawn(sweep_reservations(
            api_state,
            gates.clone(),
            chrono::Duration::minutes(i64::from(config.reservations.hold_window_min)),
            Duration::from_secs(config.reservations.sweep_every_s),
            background_stop.clone(),
        ));
        background.spawn(crate::live::ticker(
            engine.clone(),
            clock.clone(),
            background_stop.clone(),
        ));
        background.spawn(crate::live::reload_models(
            engine.clone(),
            store.clone(),
            clock.clone(),
            lot_versions,
            Duration::from_secs(config.live.model_reload_s),
            background_stop.clone(),
        ));
        // Open payments whose outcome never arrived: asked again every 30 s.
        let (reconcile_provider, reconcile_metrics) = reconciler;
        background.spawn(parkd_api::reconcile::run(
            store.clone(),
            reconcile_provider,
            clock.clone(),
            reconcile_metrics,
            parkd_api::reconcile::RECONCILE_EVERY,
            background_stop.clone(),
        ));
        if let (BrokerHandle::Embedded(embedded), true) =
            (broker.as_ref(), config.live.retained_availability_ms > 0)
        {
            let publisher = embedded.publisher("availability").await?;
            background.spawn(crate::live::publish_availability(
                engine.clone(),
                publisher,
                clock.clone(),
                Duration::from_millis(config.live.retained_availability_ms),
                background_stop.clone(),
            ));
        }
        background.close();

        // The demo's simulated garage: sensors, and (with `demo.gates`) cars through the gates.
        // One task runs both; stopping it stops the gates first, then the sensors, all before
        // the broker.
        let simulator = match (mode, mqtt_addr) {
            (Mode::Demo, Some(addr)) if config.demo.simulate => {
                let lot = LotId::parse(&config.demo.lot)?;
                let reachable = |addr: SocketAddr| {
                    if addr.ip().is_unspecified() {
                        std::net::IpAddr::from([127, 0, 0, 1]).to_string()
                    } else {
                        addr.ip().to_string()
                    }
                };
                let endpoint = parkd_sim::MqttEndpoint::new(reachable(addr), addr.port());
                let mut fleet = parkd_sim::FleetConfig::new(endpoint.clone(), 1, config.demo.spots);
                fleet.lots = vec![lot.clone()];
                fleet.speed = config.demo.speed;
                let gates = config.demo.gates.then(|| {
                    let mut gates = parkd_sim::GateSimConfig::new(endpoint, lot, config.demo.spots);
                    gates.speed = config.demo.speed;
                    gates.api = Some(parkd_sim::HttpEndpoint::new(
                        reachable(http_addr),
                        http_addr.port(),
                    ));
                    let share = config.demo.booking_share;
                    gates.bookings.share = if share.is_finite() {
                        share.clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    gates.bookings.min_booking =
                        Duration::from_secs(60 * u64::from(config.reservations.min_duration_min));
                    gates.payments.pay_station = pay_station;
                    gates
                });
                let stop = CancellationToken::new();
                let token = stop.clone();
                let task = tokio::spawn(async move {
                    match gates {
                        Some(gates) => match parkd_sim::run_garage(fleet, gates, token).await {
                            Ok(report) => tracing::info!(
                                admitted = report.gates.admitted_total(),
                                denied = report.gates.denied_total(),
                                exits = report.gates.exits_total(),
                                paid_in_advance = report.gates.payments.paid_in_advance,
                                paid_at_exit = report.gates.payments.paid_at_exit,
                                ?report,
                                "demo simulator stopped"
                            ),
                            Err(error) => tracing::error!(%error, "demo simulator failed"),
                        },
                        None => match parkd_sim::run_fleet(fleet, token).await {
                            Ok(report) => tracing::info!(?report, "demo simulator stopped"),
                            Err(error) => tracing::error!(%error, "demo simulator failed"),
                        },
                    }
                });
                Some((stop, task))
            }
            _ => None,
        };

        tracing::info!(
            %http_addr,
            ?mqtt_addr,
            store = store.backend(),
            startup_ms = started.elapsed().as_millis(),
            "parkd ready"
        );
        Ok(RunningApp {
            http_addr,
            mqtt_addr,
            store,
            registry,
            ingest_metrics,
            engine,
            broker,
            simulator,
            link_stop,
            link,
            gate_link,
            gate_commands,
            gates,
            gate_states,
            external,
            ingest_stop,
            ingest,
            live,
            http_stop,
            http,
            background_stop,
            background,
        })
    }

    /// Where HTTP listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the embedded broker listens (`None` in external mode).
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// The metrics registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Ingest's metrics.
    pub fn ingest_metrics(&self) -> &IngestMetrics {
        &self.ingest_metrics
    }

    /// The live occupancy engine.
    pub fn engine(&self) -> Arc<OccupancyEngine> {
        self.engine.clone()
    }

    /// The gate rules.
    pub fn gates(&self) -> Arc<GateService> {
        self.gates.clone()
    }

    /// What the gates last said.
    pub fn gate_states(&self) -> Arc<GateStates> {
        self.gate_states.clone()
    }

    /// Stops everything in order; returns when ingest has committed what it had.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.simulator {
            stop.cancel();
            let _ = task.await;
        }
        if let BrokerHandle::Embedded(broker) = self.broker.as_ref() {
            broker.shutdown();
            if tokio::time::timeout(Duration::from_secs(5), broker.closed())
                .await
                .is_err()
            {
                tracing::warn!("mqtt client connections still closing after 5 s");
            }
        }
        self.link_stop.cancel();
        for link in [self.link, self.gate_link].into_iter().flatten() {
            tokio::task::spawn_blocking(move || link.join()).await.ok();
        }
        if let Some(external) = &self.external {
            external.stop_delivery();
        }
        self.ingest_stop.cancel();
        self.ingest.join().await;
        tracing::info!("ingest drained");
        self.live.shutdown().await;
        self.http_stop.cancel();
        self.http.await??;
        self.background_stop.cancel();
        self.background.wait().await;
        if let Some(commands) = self.gate_commands {
            tokio::task::spawn_blocking(move || commands.stop())
                .await
                .ok();
        }
        // The gates' last commands (decided while background tasks stopped) go out, then the
        // external connection closes.
        if let Some(external) = self.external {
            external.close(Duration::from_secs(5)).await;
        }
        self.store.settle().await;
        tracing::info!("parkd stopped");
        Ok(())
    }
}

async fn store_health(store: Arc<dyn Store>, up: IntGauge, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = store.ping().await.is_ok();
        up.set(i64::from(ok));
    }
}

/// Marks no-shows, holds the spots of imminent reservations in live availability, and forgets
/// idempotency keys older than a day.
async fn sweep_reservations(
    state: ApiState,
    gates: Arc<GateService>,
    hold_window: chrono::Duration,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut awaiting = std::collections::HashMap::new();
        for lot in state.live.engine().lot_ids() {
            match gates.awaiting_arrival(&lot).await {
                Ok(spots) => {
                    awaiting.insert(lot, spots);
                }
                Err(error) => tracing::warn!(%lot, %error, "reading open parking sessions failed"),
            }
        }
        if let Err(error) = parkd_api::reservations::sweep(&state, hold_window, &awaiting).await {
            tracing::warn!(%error, "reservation sweep failed");
        }
        let day_ago = state.accounts.now() - chrono::Duration::days(1);
        if let Err(error) = state.accounts.store().purge_idempotent(day_ago).await {
            tracing::warn!(%error, "purging idempotency keys failed");
        }
    }
}

/// Deletes the gates' recorded answers past `gates.decision_retention_h`, at start and then
/// hourly, in batches (a first run after an upgrade may have a long backlog).
async fn prune_gate_decisions(gates: Arc<GateService>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match gates.prune_decisions(&stop).await {
            Ok(deleted) if deleted > 0 => {
                tracing::info!(deleted, "gate answers past their retention deleted")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "pruning gate answers failed"),
        }
    }
}

/// Forgets old failed-login records every five minutes.
async fn sweep_limiter(accounts: Arc<Accounts>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(300));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => accounts.sweep(),
        }
    }
}

/// Deletes raw telemetry past its retention (a no-op where TimescaleDB's policy does it).
async fn retention(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    days: u32,
    stop: CancellationToken,
) {
    if days == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let before = clock.now() - chrono::Duration::days(i64::from(days));
        match store.enforce_retention(before).await {
            Ok(deleted) if deleted > 0 => {
                tracing::info!(deleted, %before, "raw telemetry past retention deleted")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention run failed"),
        }
    }
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
