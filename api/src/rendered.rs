//! Answers rendered once per [`LotVersion`] and served again while the version stands, with a
//! fresh time of reading: a lot changes a few times a minute and is read thousands of times a
//! second (availability), or by a crowd of reconnecting live maps at once (snapshots).
//!
//! An answer is kept in two pieces around its one time-of-reading field (`as_of`, `at`), so
//! a hit costs a map lookup and a copy instead of gathering and serialising the figures.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use parkd_occupancy::LotVersion;
use serde::Serialize;

/// A JSON answer cut around its time-of-reading field.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// The lot version the answer is at least as new as.
    pub(crate) version: LotVersion,
    /// The lot's sequence number inside the answer.
    pub(crate) seq: u64,
    /// Up to and including `"field":`.
    head: Bytes,
    /// From just after the field's value to the end.
    tail: Bytes,
}

impl Rendered {
    /// Renders `value`, whose top-level `field` holds `read_at`. `None` if the serialised form
    /// does not carry `field` (with that value) where a top-level field appears first.
    pub(crate) fn new(
        version: LotVersion,
        seq: u64,
        value: &impl Serialize,
        field: &str,
        read_at: DateTime<Utc>,
    ) -> Option<Self> {
        let key = format!(",\"{field}\":");
        let time = serde_json::to_vec(&read_at).ok()?;
        let mut whole = serde_json::to_vec(value).ok()?;
        let at = find(&whole, key.as_bytes())? + key.len();
        if !whole[at..].starts_with(&time) {
            return None;
        }
        let tail = whole[at + time.len()..].to_vec();
        whole.truncate(at);
        Some(Self {
            version,
            seq,
            head: whole.into(),
            tail: tail.into(),
        })
    }

    /// The answer as read at `now`.
    pub(crate) fn at(&self, now: DateTime<Utc>) -> Vec<u8> {
        let time = serde_json::to_vec(&now).unwrap_or_default();
        let mut out = Vec::with_capacity(self.head.len() + time.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&time);
        out.extend_from_slice(&self.tail);
        out
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Rendered answers by key (a lot and a variant), each valid for one [`LotVersion`].
#[derive(Debug)]
pub(crate) struct RenderCache<K> {
    entries: RwLock<HashMap<K, Arc<Rendered>>>,
}

impl<K> Default for RenderCache<K> {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> RenderCache<K> {
    /// The answer for `key` if it was rendered at `version`.
    pub(crate) fn get(&self, key: &K, version: LotVersion) -> Option<Arc<Rendered>> {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(key)
            .filter(|rendered| rendered.version == version)
            .cloned()
    }

    /// Keeps `rendered` unless a newer one is already there (two racing misses both render).
    pub(crate) fn put(&self, key: K, rendered: Arc<Rendered>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        match entries.get(&key) {
            Some(current) if current.version.is_newer_than(&rendered.version) => {}
            _ => {
                entries.insert(key, rendered);
            }
        }
    }

    /// Drops the entries `stale` picks (a removed lot's).
    pub(crate) fn forget(&self, stale: impl Fn(&K) -> bool) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| !stale(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parkd_core::garage::demo_garage;
    use parkd_core::ids::LotId;
    use parkd_occupancy::OccupancyEngine;

    #[test]
    fn a_rendered_answer_equals_a_fresh_one_read_at_the_same_time() {
        let engine = OccupancyEngine::default();
        let lot = LotId::parse("g").unwrap();
        let t0 = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        engine.install_lot(demo_garage(lot.clone(), 2, 10), t0);
        let (version, availability) = engine.versioned_availability(&lot, t0).unwrap();
        let rendered =
            Rendered::new(version, availability.seq, &availability, "as_of", t0).unwrap();
        let later = t0 + chrono::Duration::nanoseconds(1_234_567_891);
        let fresh = engine.availability(&lot, later).unwrap();
        assert_eq!(rendered.at(later), serde_json::to_vec(&fresh).unwrap());

        let snapshot = engine.snapshot(&lot, t0, Some("lagged")).unwrap();
        let rendered = Rendered::new(version, snapshot.seq, &snapshot, "at", t0).unwrap();
        let fresh = engine.snapshot(&lot, later, Some("lagged")).unwrap();
        assert_eq!(rendered.at(later), serde_json::to_vec(&fresh).unwrap());
        // A field that is not there, or holds another time: no rendering.
        assert!(Rendered::new(version, 0, &snapshot, "as_of", t0).is_none());
        assert!(Rendered::new(version, 0, &snapshot, "at", later).is_none());
    }
}
