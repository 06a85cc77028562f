//! Per-device de-duplication on the message counter `seq`.
//!
//! QoS 1 redelivery, a device's own retries and a replaying attacker all show up as a `seq`
//! seen before. [`SeqWindow`] is a sliding anti-replay window (as in IPsec, RFC 4303 §3.4.3):
//! it remembers the highest `seq` and a bitmap of the [`WINDOW`] counters below it, so messages
//! reordered within the window are still accepted exactly once.
//!
//! A device that reboots starts counting again from zero; a small `seq` far below the window is
//! therefore taken as a restart (accepted, window reset) rather than as a replay. A counter that
//! jumps back by more than [`RESTART_GAP`] is also a restart (a new device behind an old id).
//! Anything else older than the window is stale and dropped.

/// How many counters below the highest one are remembered.
pub const WINDOW: u64 = 64;

/// A backwards jump this large is a restart, whatever the new value.
pub const RESTART_GAP: u64 = 1 << 20;

/// What to do with a message, given its `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// First time this counter is seen: keep it.
    Fresh,
    /// The device restarted its counter: keep it (the window was reset).
    Restarted,
    /// Seen before: drop it.
    Duplicate,
    /// Older than the window and not a restart: drop it.
    Stale,
}

impl SeqVerdict {
    /// Whether the message should be kept.
    pub fn is_kept(self) -> bool {
        matches!(self, SeqVerdict::Fresh | SeqVerdict::Restarted)
    }
}

/// The window of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWindow {
    max: u64,
    /// Bit `i` set: counter `max - i` was seen.
    seen: u64,
}

impl SeqWindow {
    /// A window that has seen exactly `seq`.
    pub fn starting_at(seq: u64) -> Self {
        Self { max: seq, seen: 1 }
    }

    /// The highest counter seen.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Checks `seq` and records it when kept.
    pub fn check(&mut self, seq: u64) -> SeqVerdict {
        if seq > self.max {
            let shift = seq - self.max;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.max = seq;
            return SeqVerdict::Fresh;
        }
        let age = self.max - seq;
        if age < WINDOW {
            let bit = 1u64 << age;
            if self.seen & bit != 0 {
                return SeqVerdict::Duplicate;
            }
            self.seen |= bit;
            return SeqVerdict::Fresh;
        }
        if seq < WINDOW || age > RESTART_GAP {
            *self = SeqWindow::starting_at(seq);
            return SeqVerdict::Restarted;
        }
        SeqVerdict::Stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn in_order_counters_are_fresh_and_repeats_are_not() {
        let mut window = SeqWindow::starting_at(1);
        for seq in 2..200 {
            assert_eq!(window.check(seq), SeqVerdict::Fresh);
            assert_eq!(window.check(seq), SeqVerdict::Duplicate);
        }
    }

    #[test]
    fn late_but_new_is_kept_once() {
        let mut window = SeqWindow::starting_at(100);
        assert_eq!(window.check(105), SeqVerdict::Fresh);
        assert_eq!(window.check(103), SeqVerdict::Fresh);
        assert_eq!(window.check(103), SeqVerdict::Duplicate);
        assert_eq!(window.check(100), SeqVerdict::Duplicate);
    }

    #[test]
    fn reboot_and_staleness() {
        let mut window = SeqWindow::starting_at(5_000);
        assert_eq!(window.check(1_000), SeqVerdict::Stale);
        assert_eq!(window.check(0), SeqVerdict::Restarted);
        assert_eq!(window.check(1), SeqVerdict::Fresh);
        assert_eq!(window.check(0), SeqVerdict::Duplicate);
        let mut window = SeqWindow::starting_at(10 * RESTART_GAP);
        assert_eq!(window.check(5_000), SeqVerdict::Restarted);
    }

    proptest! {
        /// Any reordering within the window, with duplicates mixed in, keeps each counter
        /// exactly once.
        #[test]
        fn each_counter_kept_exactly_once(
            base in 1_000u64..1_000_000,
            mut offsets in proptest::collection::vec(0u64..WINDOW / 2, 1..200),
        ) {
            let mut window = SeqWindow::starting_at(base);
            let mut kept = HashSet::from([base]);
            offsets.sort_unstable();
            // Shuffle deterministically by interleaving from both ends; stays within the window.
            let mut order = Vec::new();
            while !offsets.is_empty() {
                order.push(offsets.remove(offsets.len() / 2));
            }
            for offset in order {
                let seq = base + offset;
                let verdict = window.check(seq);
                prop_assert_ne!(verdict, SeqVerdict::Stale);
                prop_assert_ne!(verdict, SeqVerdict::Restarted);
                prop_assert_eq!(verdict.is_kept(), kept.insert(seq));
            }
        }

        /// Without a restart, nothing is ever kept twice.
        #[test]
        fn never_kept_twice(seqs in proptest::collection::vec(WINDOW..10_000u64, 1..300)) {
            let mut window = SeqWindow::starting_at(seqs[0]);
            let mut kept = HashSet::from([seqs[0]]);
            for &seq in &seqs[1..] {
                let verdict = window.check(seq);
                if verdict == SeqVerdict::Restarted {
                    kept.clear();
                }
                if verdict.is_kept() {
                    prop_assert!(kept.insert(seq), "seq {} kept twice", seq);
                }
            }
        }
    }
}
