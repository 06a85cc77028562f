//! Simulators for parkd: sensor fleets and a load generator that speak real MQTT.
//!
//! - [`demand`]: the pure demand model (time-of-day occupancy, stays around two hours), from
//!   the customer's capacity figures; no I/O.
//! - [`fleet`]: [`run_fleet`], N lots x M spots of occupancy sensors, each publishing its
//!   `state`, `heartbeat` and `status` like a real device, with time acceleration.
//! - [`load`]: [`run_load`], C connections publishing `state` messages at a given rate or as
//!   fast as possible, with exact counts, for benchmarks.
//! - [`mqtt`]: the connection plumbing both share (endpoint, credentials, QoS, event loops).
//! - [`allocation`]: reservation requests on the customer's demand curve, allocated by each
//!   policy of `parkd_core::allocation` to compare acceptance; pure, no I/O.
//! - [`duration`]: parsing of `10s`, `250ms`, `5m` for the command line.
//!
//! Both runners take a [`CancellationToken`](tokio_util::sync::CancellationToken) and stop
//! cleanly when it fires: last messages sent, DISCONNECT, every task joined or aborted.

pub mod allocation;
pub mod demand;
pub mod duration;
pub mod error;
pub mod fleet;
pub mod load;
pub mod mqtt;

pub use error::SimError;
pub use fleet::{FleetConfig, FleetReport, run_fleet};
pub use load::{LoadConfig, LoadReport, run_load};
pub use mqtt::{Credentials, Login, MqttEndpoint, Qos};
