//! The pure domain of parkd.
//!
//! This crate owns the vocabulary every other crate speaks and must stay free of I/O and of any
//! async runtime, so that it can be property-tested and fuzzed in isolation:
//!
//! - [`account`]: roles, e-mail addresses, the password policy, vehicles, session tokens;
//! - [`ids`]: validated identifiers for lots, levels, zones, spots, gates and devices;
//! - [`garage`]: the garage model (lots, levels, zones, spots) and its JSON format;
//! - [`vehicle`]: spot kinds, vehicle types and the table of which fits where;
//! - [`allocation`]: the rule that picks a spot for a reservation (fit, scarcity, best fit on
//!   each spot's timeline, walk);
//! - [`reservation`]: reservation states, their moves, and the rules on times;
//! - [`tariff`]: tariffs and the exact pricing of stays, reservations, no-shows and refunds;
//! - [`secret`]: [`secret::Secret`], a credential that never prints;
//! - [`topic`]: the MQTT topic grammar (`parking/v1/...`) and the per-device topic ACL;
//! - [`payload`]: codecs for every device payload, with the size limit and typed errors;
//! - [`dedup`]: the per-device sequence window that drops duplicates and replays;
//! - [`clock`]: the injected clock, so expiry is tested without sleeping;
//! - [`throttle`]: one log line per period on hot paths, with a count of what was suppressed.

pub mod account;
pub mod allocation;
pub mod clock;
pub mod dedup;
pub mod garage;
pub mod gate;
pub mod ids;
pub mod payload;
pub mod reservation;
pub mod secret;
pub mod tariff;
pub mod throttle;
pub mod topic;
pub mod vehicle;
