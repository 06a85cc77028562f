//! `parkd`: the command line. Parses arguments, loads configuration, and hands over to the
//! library; `anyhow` lives only here, at the edge.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};
use parkd::app::{Mode, RunningApp, open_store, shutdown_signal};
use parkd::config::ParkdConfig;
use parkd::devices::new_secret;
use parkd_core::garage::Lot;
use parkd_core::ids::{DeviceId, GateId, LotId, SpotId};
use parkd_store::{Device, DeviceBinding};

/// mimalloc instead of glibc's malloc: less CPU per request and far less memory kept after
/// bursts (ARCHITECTURE.md, "Allocator"; bench/results/availability.md and scale.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "parkd", version, about = "Real-time parking platform")]
struct Cli {
    /// A TOML configuration file (see parkd.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Command,
}

/// Flags that override the configuration (highest precedence).
#[derive(Debug, Args)]
struct Overrides {
    /// HTTP listen address (http.listen).
    #[arg(long, global = true, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// Embedded MQTT broker listen address (mqtt.listen).
    #[arg(long, global = true, value_name = "ADDR")]
    mqtt_addr: Option<SocketAddr>,
    /// Data directory for the embedded SQLite database (data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the platform (production).
    Serve,
    /// Run everything in one process with a simulated 300-spot garage.
    Demo,
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the device registry.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Manage accounts (create the first admin here).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Manage the garage model (lots, levels, zones, spots). A running server picks changes
    /// up within `live.model_reload_s`.
    #[command(subcommand)]
    Lot(LotCommand),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an account. Without --password-stdin a strong password is generated and
    /// printed once.
    CreateUser {
        /// Its e-mail address (the login).
        #[arg(long)]
        email: String,
        /// driver, operator or admin.
        #[arg(long, default_value = "admin")]
        role: String,
        /// A display name.
        #[arg(long, default_value = "")]
        name: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts.
    Users,
    /// Disable an account and end all its sessions.
    Disable {
        /// Its e-mail address.
        email: String,
    },
    /// Enable a disabled account.
    Enable {
        /// Its e-mail address.
        email: String,
    },
    /// Change an account's role.
    SetRole {
        /// Its e-mail address.
        email: String,
        /// driver, operator or admin.
        role: String,
    },
}

#[derive(Debug, Subcommand)]
enum LotCommand {
    /// Create or replace a lot from its JSON document (format: docs/garage.md). Spots no
    /// longer in the document are removed.
    Import {
        /// The JSON file; `-` reads standard input.
        file: PathBuf,
    },
    /// Print a lot's JSON document (the import format).
    Export {
        /// Lot id.
        id: String,
    },
    /// List the lots.
    List,
    /// Remove a lot and its spots (telemetry is kept).
    Remove {
        /// Lot id.
        id: String,
    },
    /// Print the demo garage's document (300 spots on 3 levels): a starting point to edit.
    Template {
        /// The lot id to put in it.
        #[arg(long, default_value = "my-garage")]
        id: String,
        /// Its number of spots (100 per level).
        #[arg(long, default_value_t = 300)]
        spots: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted.
    Print,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device (or replace its binding) and print its new secret once.
    Add {
        /// Device id: its MQTT client id and username.
        id: String,
        /// The lot it belongs to (sensors and gates).
        #[arg(long)]
        lot: Option<String>,
        /// The spot a sensor watches.
        #[arg(long, conflicts_with_all = ["gate", "observer"])]
        spot: Option<String>,
        /// The gate a controller drives.
        #[arg(long, conflicts_with = "observer")]
        gate: Option<String>,
        /// A read-only integration (subscribes to anything, publishes nothing).
        #[arg(long)]
        observer: bool,
    },
    /// List devices.
    List,
    /// Refuse a device's logins and messages.
    Disable {
        /// Device id.
        id: String,
    },
    /// Accept a disabled device again.
    Enable {
        /// Device id.
        id: String,
    },
    /// Remove a device (its telemetry is kept).
    Remove {
        /// Device id.
        id: String,
    },
    /// Register, without secrets, the sensors `parkd-sim fleet` simulates for one lot
    /// (`{lot}-s-L1-001` ...), so a demo or a benchmark on `serve` with anonymous MQTT is stored.
    SeedSim {
        /// The simulated lot.
        #[arg(long, default_value = "lot-1")]
        lot: String,
        /// Its number of spots.
        #[arg(long, default_value_t = 300)]
        spots: u32,
    },
}

fn load_config(cli: &Cli) -> anyhow::Result<ParkdConfig> {
    let mut config = ParkdConfig::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(addr) = cli.overrides.http_addr {
        config.http.listen = addr;
    }
    if let Some(addr) = cli.overrides.mqtt_addr {
        config.mqtt.listen = addr;
    }
    if let Some(dir) = &cli.overrides.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load_config(&cli)?;
    parkd::telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command, config))
}

async fn run(command: Command, config: ParkdConfig) -> anyhow::Result<()> {
    match command {
        Command::Serve | Command::Demo => {
            let mode = if matches!(command, Command::Demo) {
                Mode::Demo
            } else {
                Mode::Serve
            };
            let app = RunningApp::start(config, mode).await?;
            if mode == Mode::Demo {
                println!("parkd demo is running");
                println!("  map:     http://{}/  (the live garage)", app.http_addr());
                println!(
                    "  api:     http://{}/api/v1/lots  (health: /healthz, /readyz, /metrics)",
                    app.http_addr()
                );
                if let Some(mqtt) = app.mqtt_addr() {
                    println!("  mqtt:    mqtt://{mqtt}  (anonymous allowed in the demo)");
                    println!(
                        "  try:     mosquitto_sub -h {} -p {} -t 'parking/v1/#' -v",
                        mqtt.ip(),
                        mqtt.port()
                    );
                }
                println!("  stop:    Ctrl-C");
            }
            shutdown_signal().await;
            app.shutdown().await
        }
        Command::Migrate => {
            let store = open_store(&config).await?;
            println!("migrations applied ({})", store.backend());
            Ok(())
        }
        Command::Config(ConfigCommand::Print) => {
            print!("{}", config.to_toml());
            Ok(())
        }
        Command::Device(command) => device(command, &config).await,
        Command::Lot(command) => lot(command, &config).await,
        Command::Admin(command) => admin(command, &config).await,
    }
}

async fn admin(command: AdminCommand, config: &ParkdConfig) -> anyhow::Result<()> {
    use parkd_core::account::{Email, Role};
    let store = open_store(config).await?;
    let user_by = |email: String| {
        let store = store.clone();
        async move {
            let email = Email::parse(&email).context("e-mail")?;
            store
                .user_by_email(&email)
                .await?
                .with_context(|| format!("no account {email}"))
        }
    };
    match command {
        AdminCommand::CreateUser {
            email,
            role,
            name,
            password_stdin,
        } => {
            let email = Email::parse(&email).context("e-mail")?;
            let role: Role = role.parse()?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_owned(), false)
            } else {
                let mut bytes = [0u8; 18];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
                (hex::encode(bytes), true)
            };
            let accounts = parkd_api::auth::Accounts::new(
                store.clone(),
                std::sync::Arc::new(parkd_core::clock::SystemClock),
                config.auth_settings(),
                &prometheus::Registry::new(),
            )
            .map_err(|error| anyhow::anyhow!("{error}"))?;
            let user = accounts
                .create_user(&email, &password, role, &name)
                .await
                .map_err(|problem| {
                    anyhow::anyhow!("{}", problem.detail.unwrap_or(problem.title))
                })?;
            println!(
                "account {} created: {} ({})",
                user.id, user.email, user.role
            );
            if generated {
                println!("  password (shown once): {password}");
            }
        }
        AdminCommand::Users => {
            for user in store.users().await? {
                let state = if user.disabled { "disabled" } else { "enabled" };
                println!("{}\t{}\t{}\t{state}", user.id, user.email, user.role);
            }
        }
        AdminCommand::Disable { email } => {
            let user = user_by(email).await?;
            store.set_user_disabled(&user.id, true, Utc::now()).await?;
            println!("account {} disabled; its sessions ended", user.email);
        }
        AdminCommand::Enable { email } => {
            let user = user_by(email).await?;
            store.set_user_disabled(&user.id, false, Utc::now()).await?;
            println!("account {} enabled", user.email);
        }
        AdminCommand::SetRole { email, role } => {
            let user = user_by(email).await?;
            let role: Role = role.parse()?;
            store.set_role(&user.id, role).await?;
            println!("account {} is now {role}", user.email);
        }
    }
    Ok(())
}

async fn lot(command: LotCommand, config: &ParkdConfig) -> anyhow::Result<()> {
    if let LotCommand::Template { id, spots } = &command {
        let id = LotId::parse(id).context("lot id")?;
        if *spots == 0 || *spots > 100_000 {
            bail!("--spots must be in [1, 100000]");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&parkd::app::demo_lot(&id, *spots))?
        );
        return Ok(());
    }
    let store = open_store(config).await?;
    match command {
        LotCommand::Import { file } => {
            let raw = if file.as_os_str() == "-" {
                let mut raw = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut raw)?;
                raw
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            let model = Lot::from_json(&raw).context("the lot document is not valid")?;
            let version = store.put_lot(&model).await?;
            println!(
                "lot {} imported: {} spots on {} levels (version {version})",
                model.id,
                model.spots.len(),
                model.levels.len()
            );
        }
        LotCommand::Export { id } => {
            let id = LotId::parse(&id).context("lot id")?;
            let Some(model) = store.lot(&id).await? else {
                bail!("no lot {id}");
            };
            println!("{}", serde_json::to_string_pretty(&model)?);
        }
        LotCommand::List => {
            for model in store.lots().await? {
                println!(
                    "{}\t{}\t{} spots\t{} levels",
                    model.id,
                    model.name,
                    model.spots.len(),
                    model.levels.len()
                );
            }
        }
        LotCommand::Remove { id } => {
            let id = LotId::parse(&id).context("lot id")?;
            if !store.delete_lot(&id).await? {
                bail!("no lot {id}");
            }
            println!("lot {id} removed");
        }
        LotCommand::Template { .. } => {}
    }
    Ok(())
}

async fn device(command: DeviceCommand, config: &ParkdConfig) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    match command {
        DeviceCommand::Add {
            id,
            lot,
            spot,
            gate,
            observer,
        } => {
            let id = DeviceId::parse(&id).context("device id")?;
            let binding = match (lot, spot, gate, observer) {
                (_, None, None, true) => DeviceBinding::Observer,
                (Some(lot), Some(spot), None, false) => DeviceBinding::Spot {
                    lot: LotId::parse(&lot).context("lot id")?,
                    spot: SpotId::parse(&spot).context("spot id")?,
                },
                (Some(lot), None, Some(gate), false) => DeviceBinding::Gate {
                    lot: LotId::parse(&lot).context("lot id")?,
                    gate: GateId::parse(&gate).context("gate id")?,
                },
                _ => bail!("give --lot with --spot (sensor) or --gate (gate), or --observer"),
            };
            let secret = new_secret();
            store
                .upsert_device(&Device {
                    id: id.clone(),
                    binding,
                    secret_sha256: Some(parkd_broker::auth::hash_secret(&secret)),
                    disabled: false,
                    created_at: Utc::now(),
                })
                .await?;
            println!("device {id} registered; its MQTT login (shown once):");
            println!("  client id / username: {id}");
            println!("  password:             {secret}");
        }
        DeviceCommand::List => {
            for device in store.devices().await? {
                let binding = match &device.binding {
                    DeviceBinding::Spot { lot, spot } => format!("sensor lot={lot} spot={spot}"),
                    DeviceBinding::Gate { lot, gate } => format!("gate lot={lot} gate={gate}"),
                    DeviceBinding::Observer => "observer".to_owned(),
                };
                let state = if device.disabled {
                    "disabled"
                } else {
                    "enabled"
                };
                println!("{}\t{binding}\t{state}", device.id);
            }
        }
        DeviceCommand::Disable { id } => set_disabled(store.as_ref(), &id, true).await?,
        DeviceCommand::Enable { id } => set_disabled(store.as_ref(), &id, false).await?,
        DeviceCommand::SeedSim { lot, spots } => {
            let lot = LotId::parse(&lot).context("lot id")?;
            let added = parkd::devices::seed_demo_sensors(store.as_ref(), &lot, spots).await?;
            println!("{added} simulated sensors registered for lot {lot}");
        }
        DeviceCommand::Remove { id } => {
            let id = DeviceId::parse(&id).context("device id")?;
            if !store.delete_device(&id).await? {
                bail!("no device {id}");
            }
            println!("device {id} removed");
        }
    }
    Ok(())
}

async fn set_disabled(
    store: &dyn parkd_store::Store,
    id: &str,
    disabled: bool,
) -> anyhow::Result<()> {
    let id = DeviceId::parse(id).context("device id")?;
    if !store.set_device_disabled(&id, disabled).await? {
        bail!("no device {id}");
    }
    println!(
        "device {id} {}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}
