//! The parkd binary's library: configuration, wiring and the commands.
//!
//! `main.rs` only parses the command line; everything else is here so that tests can start
//! the whole product in-process on port 0 ([`app::App::start`]) and stop it in order.
//!
//! - [`config`]: layered configuration with secrets that never print;
//! - [`app`]: builds the store, the broker, ingest and HTTP, and shuts them down in order;
//! - [`demo`]: the demo lot's tariff and the simulator's pay-station account;
//! - [`devices`]: the device registry commands and the broker's view of the registry;
//! - [`live`]: the occupancy engine fed by ingest and exported as metrics;
//! - [`telemetry`]: logging setup.

pub mod app;
pub mod config;
pub mod demo;
pub mod devices;
pub mod live;
pub mod store_metrics;
pub mod telemetry;
