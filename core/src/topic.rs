//! The MQTT topic grammar and the per-device topic ACL.
//!
//! Every topic lives under [`ROOT`] (`parking/v1`), versioned so that a v2 can run beside it:
//!
//! | topic | publisher | payload |
//! |---|---|---|
//! | `parking/v1/{lot}/spots/{spot}/state` | the spot's sensor | [`crate::payload::SpotState`] |
//! | `parking/v1/{lot}/spots/{spot}/heartbeat` | the spot's sensor | [`crate::payload::Heartbeat`] |
//! | `parking/v1/{lot}/spots/{spot}/status` | the spot's sensor (and its will) | [`crate::payload::DeviceStatus`] |
//! | `parking/v1/{lot}/gates/{gate}/request` | the gate controller | defined by the gates contract |
//! | `parking/v1/{lot}/gates/{gate}/event` | the gate controller | defined by the gates contract |
//! | `parking/v1/{lot}/gates/{gate}/status` | the gate controller (and its will) | [`crate::payload::DeviceStatus`] |
//! | `parking/v1/{lot}/gates/{gate}/command` | the platform | defined by the gates contract |
//! | `parking/v1/{lot}/availability` | the platform (retained) | defined by the live-occupancy contract |
//!
//! `docs/mqtt.md` is the prose version of this table; keep them together.

use std::fmt;

use crate::ids::{GateId, IdError, LotId, SpotId};

/// The first two levels of every parkd topic.
pub const ROOT: &str = "parking/v1";

/// The subscription that carries every spot message of every lot.
pub const SPOT_FILTER: &str = "parking/v1/+/spots/+/+";
/// The subscription that carries every gate message of every lot.
pub const GATE_FILTER: &str = "parking/v1/+/gates/+/+";
/// The gates' requests of every lot (answered by one parkd instance each).
pub const GATE_REQUEST_FILTER: &str = "parking/v1/+/gates/+/request";
/// The gates' barrier events of every lot.
pub const GATE_EVENT_FILTER: &str = "parking/v1/+/gates/+/event";
/// The gates' online/offline status of every lot.
pub const GATE_STATUS_FILTER: &str = "parking/v1/+/gates/+/status";

/// Longest topic accepted, in bytes (far above the longest valid one).
pub const MAX_TOPIC_LEN: usize = 256;

/// What a spot sensor publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpotChannel {
    /// Occupancy changes (and periodic confirmations).
    State,
    /// Battery, signal and uptime, without occupancy.
    Heartbeat,
    /// Online/offline, also used as the MQTT will.
    Status,
}

/// What flows on a gate's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateChannel {
    /// Entry or exit requests from the gate.
    Request,
    /// Barrier events from the gate (opened, closed, passed, fault).
    Event,
    /// Online/offline, also used as the MQTT will.
    Status,
    /// Open/deny answers from the platform to the gate.
    Command,
}

/// A parsed parkd topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A topic of one spot's sensor.
    Spot {
        /// The lot.
        lot: LotId,
        /// The spot.
        spot: SpotId,
        /// Which message.
        channel: SpotChannel,
    },
    /// A topic of one gate.
    Gate {
        /// The lot.
        lot: LotId,
        /// The gate.
        gate: GateId,
        /// Which message.
        channel: GateChannel,
    },
    /// The platform's retained availability summary for a lot.
    LotAvailability {
        /// The lot.
        lot: LotId,
    },
}

/// Why a topic is not a parkd topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Longer than [`MAX_TOPIC_LEN`].
    #[error("topic longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// Does not start with `parking/v1/`.
    #[error("topic is outside parking/v1/")]
    OutsideRoot,
    /// The levels do not match any known topic.
    #[error("unknown topic shape")]
    UnknownShape,
    /// A level that must be an identifier is not one.
    #[error("bad {level} in topic: {source}")]
    BadId {
        /// Which level (lot, spot or gate).
        level: &'static str,
        /// Why it is not an identifier.
        source: IdError,
    },
}

fn id<T>(
    level: &'static str,
    raw: &str,
    parse: fn(&str) -> Result<T, IdError>,
) -> Result<T, TopicError> {
    parse(raw).map_err(|source| TopicError::BadId { level, source })
}

impl Topic {
    /// Parses a concrete (wildcard-free) topic name.
    pub fn parse(topic: &str) -> Result<Topic, TopicError> {
        if topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        let rest = topic
            .strip_prefix(ROOT)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or(TopicError::OutsideRoot)?;
        let levels: Vec<&str> = rest.split('/').collect();
        match levels.as_slice() {
            [lot, "availability"] => Ok(Topic::LotAvailability {
                lot: id("lot", lot, LotId::parse)?,
            }),
            [lot, "spots", spot, channel] => {
                let channel = match *channel {
                    "state" => SpotChannel::State,
                    "heartbeat" => SpotChannel::Heartbeat,
                    "status" => SpotChannel::Status,
                    _ => return Err(TopicError::UnknownShape),
                };
                Ok(Topic::Spot {
                    lot: id("lot", lot, LotId::parse)?,
                    spot: id("spot", spot, SpotId::parse)?,
                    channel,
                })
            }
            [lot, "gates", gate, channel] => {
                let channel = match *channel {
                    "request" => GateChannel::Request,
                    "event" => GateChannel::Event,
                    "status" => GateChannel::Status,
                    "command" => GateChannel::Command,
                    _ => return Err(TopicError::UnknownShape),
                };
                Ok(Topic::Gate {
                    lot: id("lot", lot, LotId::parse)?,
                    gate: id("gate", gate, GateId::parse)?,
                    channel,
                })
            }
            _ => Err(TopicError::UnknownShape),
        }
    }

    /// The topic of a spot's channel.
    pub fn spot(lot: &LotId, spot: &SpotId, channel: SpotChannel) -> Topic {
        Topic::Spot {
            lot: lot.clone(),
            spot: spot.clone(),
            channel,
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Spot { lot, spot, channel } => {
                let channel = match channel {
                    SpotChannel::State => "state",
                    SpotChannel::Heartbeat => "heartbeat",
                    SpotChannel::Status => "status",
                };
                write!(f, "{ROOT}/{lot}/spots/{spot}/{channel}")
            }
            Topic::Gate { lot, gate, channel } => {
                let channel = match channel {
                    GateChannel::Request => "request",
                    GateChannel::Event => "event",
                    GateChannel::Status => "status",
                    GateChannel::Command => "command",
                };
                write!(f, "{ROOT}/{lot}/gates/{gate}/{channel}")
            }
            Topic::LotAvailability { lot } => write!(f, "{ROOT}/{lot}/availability"),
        }
    }
}

/// What a connected MQTT client may do, decided once at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A spot sensor: publishes its spot's `state`, `heartbeat` and `status` only.
    Sensor {
        /// Its lot.
        lot: LotId,
        /// Its spot.
        spot: SpotId,
    },
    /// A gate controller: publishes its gate's `request`, `event` and `status`, subscribes to
    /// its gate's topics (notably `command`).
    Gate {
        /// Its lot.
        lot: LotId,
        /// Its gate.
        gate: GateId,
    },
    /// A read-only integration (dashboards, bridges): subscribes to anything, publishes nothing.
    Observer,
    /// A client without credentials, on a broker configured to allow them (the demo): may
    /// publish any device topic and subscribe to anything, never publish platform topics.
    Anonymous,
}

/// Why a publish or subscribe was refused; also the label of the refusal counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AclDenied {
    /// The topic is not a parkd device topic.
    #[error("not a device topic")]
    NotADeviceTopic,
    /// The topic belongs to another device.
    #[error("topic belongs to another device")]
    OtherDevice,
    /// The client may not publish at all, or not on that channel.
    #[error("channel not allowed for this client")]
    ChannelNotAllowed,
    /// The filter reaches beyond what the client may read.
    #[error("subscription filter outside the client's own topics")]
    FilterOutsideGrant,
}

impl AclDenied {
    /// A stable label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            AclDenied::NotADeviceTopic => "not_a_device_topic",
            AclDenied::OtherDevice => "other_device",
            AclDenied::ChannelNotAllowed => "channel_not_allowed",
            AclDenied::FilterOutsideGrant => "filter_outside_grant",
        }
    }
}

impl Grant {
    /// The topic prefix (with trailing `/`) this grant owns, if it owns one.
    pub fn own_prefix(&self) -> Option<String> {
        match self {
            Grant::Sensor { lot, spot } => Some(format!("{ROOT}/{lot}/spots/{spot}/")),
            Grant::Gate { lot, gate } => Some(format!("{ROOT}/{lot}/gates/{gate}/")),
            Grant::Observer | Grant::Anonymous => None,
        }
    }

    /// May this client publish on `topic`?
    pub fn check_publish(&self, topic: &str) -> Result<(), AclDenied> {
        let parsed = Topic::parse(topic).map_err(|_| AclDenied::NotADeviceTopic)?;
        match (self, &parsed) {
            (Grant::Observer, _) => Err(AclDenied::ChannelNotAllowed),
            (_, Topic::LotAvailability { .. })
            | (
                _,
                Topic::Gate {
                    channel: GateChannel::Command,
                    ..
                },
            ) => Err(AclDenied::ChannelNotAllowed),
            (Grant::Anonymous, _) => Ok(()),
            (
                Grant::Sensor { lot, spot },
                Topic::Spot {
                    lot: l, spot: s, ..
                },
            ) => {
                if lot == l && spot == s {
                    Ok(())
                } else {
                    Err(AclDenied::OtherDevice)
                }
            }
            (
                Grant::Gate { lot, gate },
                Topic::Gate {
                    lot: l, gate: g, ..
                },
            ) => {
                if lot == l && gate == g {
                    Ok(())
                } else {
                    Err(AclDenied::OtherDevice)
                }
            }
            (Grant::Sensor { .. }, Topic::Gate { .. })
            | (Grant::Gate { .. }, Topic::Spot { .. }) => Err(AclDenied::OtherDevice),
        }
    }

    /// May this client subscribe to `filter`? Devices may only read below their own prefix,
    /// which a filter guarantees exactly when its literal start is that prefix.
    pub fn check_subscribe(&self, filter: &str) -> Result<(), AclDenied> {
        match self {
            Grant::Observer | Grant::Anonymous => Ok(()),
            Grant::Sensor { .. } | Grant::Gate { .. } => {
                let prefix = self.own_prefix().unwrap_or_default();
                if filter.starts_with(&prefix) {
                    Ok(())
                } else {
                    Err(AclDenied::FilterOutsideGrant)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lot(s: &str) -> LotId {
        LotId::parse(s).unwrap()
    }
    fn spot(s: &str) -> SpotId {
        SpotId::parse(s).unwrap()
    }

    #[test]
    fn parses_every_shape() {
        assert_eq!(
            Topic::parse("parking/v1/g1/spots/A-1/state").unwrap(),
            Topic::spot(&lot("g1"), &spot("A-1"), SpotChannel::State)
        );
        assert!(matches!(
            Topic::parse("parking/v1/g1/gates/in-1/command").unwrap(),
            Topic::Gate {
                channel: GateChannel::Command,
                ..
            }
        ));
        assert!(matches!(
            Topic::parse("parking/v1/g1/availability").unwrap(),
            Topic::LotAvailability { .. }
        ));
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "",
            "parking/v1",
            "parking/v1/",
            "parking/v2/g1/spots/1/state",
            "parking/v1/g1/spots/1/state/extra",
            "parking/v1/g1/spots/1/colour",
            "parking/v1/g1/spots/+/state",
            "parking/v1/g1/spots//state",
            "/parking/v1/g1/spots/1/state",
        ] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Topic::parse(&format!("parking/v1/{}", "a".repeat(300))),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn sensor_publishes_only_its_own_spot() {
        let grant = Grant::Sensor {
            lot: lot("g1"),
            spot: spot("7"),
        };
        assert!(grant.check_publish("parking/v1/g1/spots/7/state").is_ok());
        assert!(
            grant
                .check_publish("parking/v1/g1/spots/7/heartbeat")
                .is_ok()
        );
        assert!(grant.check_publish("parking/v1/g1/spots/7/status").is_ok());
        assert_eq!(
            grant.check_publish("parking/v1/g1/spots/8/state"),
            Err(AclDenied::OtherDevice)
        );
        assert_eq!(
            grant.check_publish("parking/v1/g2/spots/7/state"),
            Err(AclDenied::OtherDevice)
        );
        assert_eq!(
            grant.check_publish("parking/v1/g1/gates/7/request"),
            Err(AclDenied::OtherDevice)
        );
        assert_eq!(
            grant.check_publish("other/topic"),
            Err(AclDenied::NotADeviceTopic)
        );
        assert!(grant.check_subscribe("parking/v1/g1/spots/7/#").is_ok());
        assert!(
            grant
                .check_subscribe("parking/v1/g1/spots/+/state")
                .is_err()
        );
        assert!(grant.check_subscribe("#").is_err());
    }

    #[test]
    fn nobody_but_the_platform_publishes_commands_or_availability() {
        let gate = Grant::Gate {
            lot: lot("g1"),
            gate: GateId::parse("in").unwrap(),
        };
        for grant in [gate.clone(), Grant::Anonymous, Grant::Observer] {
            assert!(
                grant
                    .check_publish("parking/v1/g1/gates/in/command")
                    .is_err()
            );
            assert!(grant.check_publish("parking/v1/g1/availability").is_err());
        }
        assert!(gate.check_publish("parking/v1/g1/gates/in/request").is_ok());
        assert!(
            gate.check_subscribe("parking/v1/g1/gates/in/command")
                .is_ok()
        );
        assert!(
            Grant::Observer
                .check_publish("parking/v1/g1/spots/1/state")
                .is_err()
        );
        assert!(
            Grant::Anonymous
                .check_publish("parking/v1/g1/spots/1/state")
                .is_ok()
        );
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(
            l in "[A-Za-z0-9_-]{1,64}",
            s in "[A-Za-z0-9_-]{1,64}",
            c in 0usize..3,
        ) {
            let channel = [SpotChannel::State, SpotChannel::Heartbeat, SpotChannel::Status][c];
            let topic = Topic::spot(&lot(&l), &spot(&s), channel);
            prop_assert_eq!(Topic::parse(&topic.to_string()).unwrap(), topic);
        }

        #[test]
        fn parse_never_panics(raw in "\\PC{0,300}") {
            let _ = Topic::parse(&raw);
        }

        #[test]
        fn a_sensor_never_may_publish_to_another_spot(
            own in "[a-z0-9]{1,8}",
            other in "[a-z0-9]{1,8}",
        ) {
            prop_assume!(own != other);
            let grant = Grant::Sensor { lot: lot("g"), spot: spot(&own) };
            let topic = format!("parking/v1/g/spots/{other}/state");
            prop_assert_eq!(grant.check_publish(&topic), Err(AclDenied::OtherDevice));
        }
    }
}
