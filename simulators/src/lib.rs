//! Simulators for parkd: sensor fleets and a load generator that speak real MQTT.
//!
//! - [`demand`]: the pure demand model (time-of-day occupancy, stays around two hours), from
//!   the customer's capacity figures; no I/O.
//! - [`fleet`]: [`run_fleet`], N lots x M spots of occupancy sensors, each publishing its
//!   `state`, `heartbeat` and `status` like a real device, with time acceleration.
//! - [`load`]: [`run_load`], C connections publishing `state` messages at a given rate or as
//!   fast as possible, with exact counts, for benchmarks.
//! - [`mqtt`]: the connection plumbing both share (endpoint, credentials, QoS, event loops).
//! - [`gates`]: [`run_gates`], cars through the entry and exit barriers of a lot (walk-ins, and
//!   drivers who booked through the REST API, see [`bookings`]), asking the platform over MQTT
//!   and parking where it says; their spots' sensors are a driven fleet
//!   ([`fleet::run_fleet_driven`]), and [`run_garage`] runs both.
//! - [`payments`]: the drivers pay, in advance or at the exit (a walk-in at the pay station).
//! - [`http`]: the small HTTP/1.1 client the simulated drivers use.
//! - [`allocation`]: reservation requests on the customer's demand curve, allocated by each
//!   policy of `parkd_core::allocation` to compare acceptance; pure, no I/O.
//! - [`duration`]: parsing of `10s`, `250ms`, `5m` for the command line.
//!
//! The runners take a [`CancellationToken`](tokio_util::sync::CancellationToken) and stop
//! cleanly when it fires: last messages sent, DISCONNECT, every task joined or aborted.

pub mod allocation;
pub mod bookings;
pub mod demand;
pub mod duration;
pub mod error;
pub mod fleet;
pub mod gates;
pub mod http;
pub mod load;
pub mod mqtt;
pub mod payments;

pub use bookings::{BookingConfig, BookingReport};
pub use error::SimError;
pub use fleet::{
    FleetConfig, FleetReport, SensorFeed, SensorLink, run_fleet, run_fleet_driven, sensor_link,
};
pub use gates::{GarageReport, GateReport, GateSimConfig, run_garage, run_gates};
pub use http::HttpEndpoint;
pub use load::{LoadConfig, LoadReport, run_load};
pub use mqtt::{Credentials, Login, MqttEndpoint, Qos};
pub use payments::{PaymentConfig, PaymentReport};
