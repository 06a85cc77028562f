//! Fuzzes everything parkd parses from a device: the topic and each payload codec.
//! The first byte splits the input into a topic and a payload.
//!
//! Run: `cargo install cargo-fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run device_message`
//! (from the repository root; cargo-fuzz needs nightly features, which RUSTC_BOOTSTRAP allows
//! on the stable toolchain).

#![no_main]

use libfuzzer_sys::fuzz_target;
use parkd_core::payload::{DeviceStatus, Heartbeat, SpotState};
use parkd_core::topic::{Grant, Topic};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (topic, payload) = rest.split_at(split);
    if let Ok(topic) = std::str::from_utf8(topic) {
        if let Ok(parsed) = Topic::parse(topic) {
            // Whatever parses must print back to the same topic.
            assert_eq!(parsed.to_string(), topic);
        }
        let _ = Grant::Anonymous.check_publish(topic);
    }
    if let Ok(state) = SpotState::decode(payload) {
        // Whatever decodes must survive a round trip.
        assert_eq!(SpotState::decode(&state.encode()).ok(), Some(state));
    }
    let _ = Heartbeat::decode(payload);
    let _ = DeviceStatus::decode(payload);
});
