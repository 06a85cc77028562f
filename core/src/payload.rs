//! Codecs for device payloads.
//!
//! Payloads are small JSON objects. Decoding is strict about what it needs (types, ranges, the
//! size limit) and lenient about what it does not know: unknown fields are ignored, so that a
//! newer firmware can add fields without being rejected by an older platform. Every failure is a
//! typed [`PayloadError`] whose [`PayloadError::reason`] labels the reject counter.

use serde::{Deserialize, Serialize};

/// Largest payload accepted on any device topic, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024;

/// Earliest device timestamp accepted (2020-01-01T00:00:00Z), in Unix milliseconds. A sensor
/// that reports an earlier time has lost its clock; the reading is kept, the timestamp is not.
pub const MIN_PLAUSIBLE_TS_MS: i64 = 1_577_836_800_000;

/// An occupancy reading, published on `.../spots/{spot}/state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpotState {
    /// Whether a vehicle is over the sensor.
    pub occupied: bool,
    /// The device's message counter, used to drop duplicates and replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the device measured, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Battery voltage in millivolts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<u16>,
    /// Received signal strength in dBm (negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i16>,
}

/// A liveness report without occupancy, published on `.../spots/{spot}/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The device's message counter (shared with `state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When the device sent it, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
    /// Battery voltage in millivolts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub battery_mv: Option<u16>,
    /// Received signal strength in dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rssi: Option<i16>,
    /// Seconds since the device booted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// Firmware version, at most 32 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fw: Option<String>,
}

/// Online/offline, published on `.../status` (retained) and set as the MQTT will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// `true` when the device connects, `false` in its will.
    pub online: bool,
    /// When, in Unix milliseconds, if the device knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<i64>,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Larger than [`MAX_PAYLOAD_BYTES`].
    #[error("payload of {0} bytes exceeds {MAX_PAYLOAD_BYTES}")]
    Oversized(usize),
    /// Not JSON, or not an object.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// JSON, but a field is missing or has the wrong type.
    #[error("wrong type: {0}")]
    WrongType(String),
    /// Well-typed, but a value is outside its range.
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
}

impl PayloadError {
    /// A stable label for the reject counter.
    pub fn reason(&self) -> &'static str {
        match self {
            PayloadError::Oversized(_) => "oversized",
            PayloadError::Malformed(_) => "malformed",
            PayloadError::WrongType(_) => "wrong_type",
            PayloadError::OutOfRange(_) => "out_of_range",
        }
    }
}

pub(crate) fn decode_json<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, PayloadError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::Oversized(bytes.len()));
    }
    // serde would accept a JSON array as a struct; the contract says object.
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first != Some(&b'{') {
        return match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Err(PayloadError::WrongType("expected a JSON object".into())),
            Err(_) => Err(PayloadError::Malformed("not JSON".into())),
        };
    }
    serde_json::from_slice(bytes).map_err(|error| {
        // Keep the message short: it reaches logs, and the payload came from outside.
        let text = error.to_string();
        let text: String = text.chars().take(120).collect();
        match error.classify() {
            serde_json::error::Category::Data => PayloadError::WrongType(text),
            _ => PayloadError::Malformed(text),
        }
    })
}

/// Keeps a device timestamp only when it is plausible: after 2020 and not more than a day
/// ahead of `now_ms`.
pub fn plausible_ts(ts: Option<i64>, now_ms: i64) -> Option<i64> {
    ts.filter(|&ts| ts >= MIN_PLAUSIBLE_TS_MS && ts <= now_ms.saturating_add(86_400_000))
}

fn check_rssi(rssi: Option<i16>) -> Result<(), PayloadError> {
    match rssi {
        Some(value) if !(-200..=20).contains(&value) => Err(PayloadError::OutOfRange("rssi")),
        _ => Ok(()),
    }
}

fn check_battery(battery_mv: Option<u16>) -> Result<(), PayloadError> {
    match battery_mv {
        Some(value) if value > 20_000 => Err(PayloadError::OutOfRange("battery_mv")),
        _ => Ok(()),
    }
}

pub(crate) fn check_ts(ts: Option<i64>) -> Result<(), PayloadError> {
    match ts {
        Some(value) if value < 0 => Err(PayloadError::OutOfRange("ts")),
        _ => Ok(()),
    }
}

impl SpotState {
    /// Decodes and validates a `state` payload.
    pub fn decode(bytes: &[u8]) -> Result<SpotState, PayloadError> {
        let state: SpotState = decode_json(bytes)?;
        check_ts(state.ts)?;
        check_battery(state.battery_mv)?;
        check_rssi(state.rssi)?;
        Ok(state)
    }

    /// Encodes to the wire form.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of plain fields cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl Heartbeat {
    /// Decodes and validates a `heartbeat` payload.
    pub fn decode(bytes: &[u8]) -> Result<Heartbeat, PayloadError> {
        let heartbeat: Heartbeat = decode_json(bytes)?;
        check_ts(heartbeat.ts)?;
        check_battery(heartbeat.battery_mv)?;
        check_rssi(heartbeat.rssi)?;
        if heartbeat
            .fw
            .as_ref()
            .is_some_and(|fw| fw.chars().count() > 32)
        {
            return Err(PayloadError::OutOfRange("fw"));
        }
        Ok(heartbeat)
    }

    /// Encodes to the wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

impl DeviceStatus {
    /// Decodes and validates a `status` payload.
    pub fn decode(bytes: &[u8]) -> Result<DeviceStatus, PayloadError> {
        let status: DeviceStatus = decode_json(bytes)?;
        check_ts(status.ts)?;
        Ok(status)
    }

    /// Encodes to the wire form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_minimal_and_the_full_form() {
        assert_eq!(
            SpotState::decode(br#"{"occupied":true}"#).unwrap(),
            SpotState {
                occupied: true,
                seq: None,
                ts: None,
                battery_mv: None,
                rssi: None
            }
        );
        let full = SpotState::decode(
            br#"{"occupied":false,"seq":42,"ts":1764000000000,"battery_mv":3600,"rssi":-71,"future":1}"#,
        )
        .unwrap();
        assert_eq!(full.seq, Some(42));
        assert_eq!(full.rssi, Some(-71));
    }

    #[test]
    fn classifies_every_failure() {
        let reason = |bytes: &[u8]| SpotState::decode(bytes).unwrap_err().reason();
        assert_eq!(reason(b"not json"), "malformed");
        assert_eq!(reason(b"{\"occupied\":tru"), "malformed");
        assert_eq!(reason(b""), "malformed");
        assert_eq!(reason(br#"{"occupied":"yes"}"#), "wrong_type");
        assert_eq!(reason(br#"{}"#), "wrong_type");
        assert_eq!(reason(br#"[true]"#), "wrong_type");
        assert_eq!(reason(br#"{"occupied":true,"seq":-1}"#), "wrong_type");
        assert_eq!(reason(br#"{"occupied":true,"rssi":500}"#), "out_of_range");
        assert_eq!(
            reason(br#"{"occupied":true,"battery_mv":65000}"#),
            "out_of_range"
        );
        assert_eq!(reason(br#"{"occupied":true,"ts":-5}"#), "out_of_range");
        let big = format!(
            r#"{{"occupied":true,"pad":"{}"}}"#,
            "x".repeat(MAX_PAYLOAD_BYTES)
        );
        assert_eq!(reason(big.as_bytes()), "oversized");
        assert_eq!(
            Heartbeat::decode(format!(r#"{{"fw":"{}"}}"#, "v".repeat(33)).as_bytes())
                .unwrap_err()
                .reason(),
            "out_of_range"
        );
    }

    #[test]
    fn implausible_timestamps_are_dropped() {
        let now = 1_764_000_000_000;
        assert_eq!(plausible_ts(Some(now), now), Some(now));
        assert_eq!(plausible_ts(Some(1000), now), None);
        assert_eq!(plausible_ts(Some(now + 2 * 86_400_000), now), None);
        assert_eq!(plausible_ts(None, now), None);
    }

    proptest! {
        #[test]
        fn state_round_trips(
            occupied: bool,
            seq: Option<u64>,
            ts in proptest::option::of(0i64..i64::MAX),
            battery_mv in proptest::option::of(0u16..=20_000),
            rssi in proptest::option::of(-200i16..=20),
        ) {
            let state = SpotState { occupied, seq, ts, battery_mv, rssi };
            prop_assert_eq!(SpotState::decode(&state.encode()).unwrap(), state);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = SpotState::decode(&bytes);
            let _ = Heartbeat::decode(&bytes);
            let _ = DeviceStatus::decode(&bytes);
        }
    }
}
