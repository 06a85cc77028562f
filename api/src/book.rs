//! The reservation book: each lot's holding reservations in memory, so that choosing a spot for
//! a new reservation reads nothing from the database.
//!
//! The database stays the only guarantee against double booking (the exclusion constraint on
//! PostgreSQL, the serialized overlap check on SQLite); the book is a hint that is kept close
//! to it and is never trusted where being wrong would hurt a driver:
//!
//! - **This process's writes** update it at once: a created reservation is added when its row
//!   is committed; a cancelled, moved or no-show one is removed or moved.
//! - **A conflict** (the store refuses the spot the book said was free: another instance, or a
//!   concurrent request of this one, booked it first) re-reads that spot's bookings around the
//!   request before allocating again.
//! - **A refusal** (no fitting spot free) is never answered from the book alone: the lot's
//!   bookings around the request are re-read first, and only a refusal on fresh bookings is
//!   answered.
//! - **Everything else** (a gate's check-out completing a reservation, writes by other
//!   instances) is picked up by [`Book::refresh_loaded`], run by the reservation sweep (every
//!   30 s by default). Until then such a spot looks busy, which costs at worst a less tight
//!   packing, never a double booking or a wrong refusal.
//!
//! A re-read replaces what the book holds in its window except entries this process added
//! after the re-read started (each entry carries the sequence number of its local write), so a
//! re-read racing a local create does not lose the create.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Duration, Utc};
use parkd_core::allocation::Interval;
use parkd_core::garage::Spot;
use parkd_core::ids::{LotId, SpotId};
use parkd_store::{HoldingSpan, ReservationStore, StoreResult};

/// Bookings that ended this long ago are forgotten (allocation looks at most
/// [`KEEP_BEFORE_HOURS`] either side of a request).
pub const KEEP_BEFORE_HOURS: i64 = 12;
/// How far ahead a lot's first load reads (far beyond any booking horizon).
const LOAD_AHEAD_DAYS: i64 = 3_660;

/// Every lot's holding reservations, as far as this process knows.
#[derive(Debug, Default)]
pub struct Book {
    lots: Mutex<HashMap<LotId, Arc<LotEntry>>>,
    /// Sequence number of local writes (0 = loaded from the database).
    seq: AtomicU64,
}

#[derive(Debug, Default)]
struct LotEntry {
    /// Serialises the first load of the lot.
    loading: tokio::sync::Mutex<()>,
    state: Mutex<LotBook>,
}

/// One spot's bookings: (start, id) → (end, sequence number of the local write that added
/// it), in seconds.
type SpotTimeline = BTreeMap<(i64, String), (i64, u64)>;

#[derive(Debug, Default)]
struct LotBook {
    loaded: bool,
    spots: HashMap<SpotId, SpotTimeline>,
    /// Reservation id → (spot, start).
    index: HashMap<String, (SpotId, i64)>,
    /// The longest booking seen (bounds the range scanned for overlaps).
    longest_s: i64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a consistent map (no invariant spans two calls).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LotBook {
    fn insert(&mut self, span: &HoldingSpan, seq: u64) {
        let (start, end) = (span.starts_at.timestamp(), span.ends_at.timestamp());
        if end <= start {
            return;
        }
        self.remove(&span.id);
        self.longest_s = self.longest_s.max(end - start);
        self.spots
            .entry(span.spot.clone())
            .or_default()
            .insert((start, span.id.clone()), (end, seq));
        self.index
            .insert(span.id.clone(), (span.spot.clone(), start));
    }

    fn remove(&mut self, id: &str) {
        if let Some((spot, start)) = self.index.remove(id)
            && let Some(timeline) = self.spots.get_mut(&spot)
        {
            timeline.remove(&(start, id.to_owned()));
        }
    }

    /// Entries of `timeline` overlapping `[from, to)`: (start, id, end, seq).
    fn overlapping(
        timeline: &SpotTimeline,
        longest_s: i64,
        from: i64,
        to: i64,
    ) -> impl Iterator<Item = (i64, &String, i64, u64)> {
        let low = (from.saturating_sub(longest_s), String::new());
        let high = (to, String::new());
        timeline
            .range(low..high)
            .filter(move |(_, (end, _))| *end > from)
            .map(|((start, id), (end, seq))| (*start, id, *end, *seq))
    }

    /// Replaces what the book holds of `spot` (or every spot) in `[from, to)` by `fresh`,
    /// keeping local writes newer than `since`.
    fn merge(
        &mut self,
        spot: Option<&SpotId>,
        from: i64,
        to: i64,
        fresh: &[HoldingSpan],
        since: u64,
    ) {
        let stale: Vec<String> = self
            .spots
            .iter()
            .filter(|(s, _)| spot.is_none_or(|only| only == *s))
            .flat_map(|(_, timeline)| Self::overlapping(timeline, self.longest_s, from, to))
            .filter(|(_, _, _, seq)| *seq <= since)
            .map(|(_, id, _, _)| id.clone())
            .collect();
        for id in &stale {
            self.remove(id);
        }
        for span in fresh {
            // A newer local write of the same reservation wins over the snapshot.
            let newer_local = self.index.get(&span.id).is_some_and(|(s, start)| {
                self.spots
                    .get(s)
                    .and_then(|t| t.get(&(*start, span.id.clone())))
                    .is_some_and(|(_, seq)| *seq > since)
            });
            if !newer_local {
                self.insert(span, 0);
            }
        }
    }

    /// A book of exactly `fresh` (built outside any lock), plus this book's local writes newer
    /// than `since`.
    fn rebuilt(fresh: &[HoldingSpan]) -> LotBook {
        let mut book = LotBook {
            loaded: true,
            ..LotBook::default()
        };
        for span in fresh {
            book.insert(span, 0);
        }
        book
    }

    /// Moves this book's local writes newer than `since` into `into` and makes `into` this
    /// book: the swap that ends a whole-lot re-read, short enough to hold the lock for.
    fn replace_keeping_local(&mut self, mut into: LotBook, since: u64) {
        for (spot, timeline) in &self.spots {
            for ((start, id), (end, seq)) in timeline {
                if *seq > since {
                    let span = HoldingSpan {
                        id: id.clone(),
                        spot: spot.clone(),
                        starts_at: DateTime::from_timestamp(*start, 0).unwrap_or_default(),
                        ends_at: DateTime::from_timestamp(*end, 0).unwrap_or_default(),
                    };
                    into.insert(&span, *seq);
                }
            }
        }
        *self = into;
    }

    /// Forgets bookings that ended before `before`.
    fn prune(&mut self, before: i64) {
        let mut gone = Vec::new();
        for timeline in self.spots.values_mut() {
            timeline.retain(|(_, id), (end, _)| {
                let keep = *end > before;
                if !keep {
                    gone.push(id.clone());
                }
                keep
            });
        }
        for id in gone {
            self.index.remove(&id);
        }
        self.spots.retain(|_, timeline| !timeline.is_empty());
    }
}

impl Book {
    /// An empty book (lots load on first use).
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&self, lot: &LotId) -> Arc<LotEntry> {
        lock(&self.lots).entry(lot.clone()).or_default().clone()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Loads the lot's current and future holding reservations if this process has not yet.
    async fn ensure_loaded(
        &self,
        store: &dyn ReservationStore,
        lot: &LotId,
        now: DateTime<Utc>,
    ) -> StoreResult<Arc<LotEntry>> {
        let entry = self.entry(lot);
        if !lock(&entry.state).loaded {
            self.load(store, lot, &entry, now).await?;
        }
        Ok(entry)
    }

    async fn load(
        &self,
        store: &dyn ReservationStore,
        lot: &LotId,
        entry: &LotEntry,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        let _loading = entry.loading.lock().await;
        if lock(&entry.state).loaded {
            return Ok(());
        }
        let since = self.seq.load(Ordering::Relaxed);
        let from = now - Duration::hours(KEEP_BEFORE_HOURS);
        let to = now + Duration::days(LOAD_AHEAD_DAYS);
        let fresh = store.holding_spans(lot, None, from, to).await?;
        let rebuilt = LotBook::rebuilt(&fresh);
        lock(&entry.state).replace_keeping_local(rebuilt, since);
        Ok(())
    }

    /// The busy intervals overlapping `[from, to)` of each of `spots` (in that order; a spot
    /// the book does not know has none), loading the lot first if needed. Aligned with the
    /// caller's spot list, so that allocation needs no map and no copy of a spot id.
    pub async fn busy(
        &self,
        store: &dyn ReservationStore,
        lot: &LotId,
        spots: &[Spot],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Vec<Interval>>> {
        let entry = self.ensure_loaded(store, lot, now).await?;
        let state = lock(&entry.state);
        let (from, to) = (from.timestamp(), to.timestamp());
        Ok(spots
            .iter()
            .map(|spot| {
                state.spots.get(&spot.id).map_or_else(Vec::new, |timeline| {
                    LotBook::overlapping(timeline, state.longest_s, from, to)
                        .filter_map(|(start, _, end, _)| Interval::new(start, end).ok())
                        .collect()
                })
            })
            .collect())
    }

    /// Re-reads the holding reservations of `spot` (or the whole lot) overlapping `[from, to)`
    /// from the store. A lot not loaded yet is left to its first use.
    pub async fn refresh(
        &self,
        store: &dyn ReservationStore,
        lot: &LotId,
        spot: Option<&SpotId>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<()> {
        let entry = self.entry(lot);
        if !lock(&entry.state).loaded {
            return Ok(());
        }
        let since = self.seq.load(Ordering::Relaxed);
        let fresh = store.holding_spans(lot, spot, from, to).await?;
        lock(&entry.state).merge(spot, from.timestamp(), to.timestamp(), &fresh, since);
        Ok(())
    }

    /// Re-reads every loaded lot whole and forgets bookings that ended long ago: picks up what
    /// other processes and other paths of this one changed. Returns how many lots it read.
    pub async fn refresh_loaded(
        &self,
        store: &dyn ReservationStore,
        now: DateTime<Utc>,
    ) -> StoreResult<usize> {
        let lots: Vec<LotId> = lock(&self.lots).keys().cloned().collect();
        let from = now - Duration::hours(KEEP_BEFORE_HOURS);
        let to = now + Duration::days(LOAD_AHEAD_DAYS);
        for lot in &lots {
            let entry = self.entry(lot);
            if !lock(&entry.state).loaded {
                continue;
            }
            let since = self.seq.load(Ordering::Relaxed);
            let fresh = store.holding_spans(lot, None, from, to).await?;
            // Tens of thousands of bookings: built outside the lock, swapped in under it.
            let rebuilt = LotBook::rebuilt(&fresh);
            let mut state = lock(&entry.state);
            state.replace_keeping_local(rebuilt, since);
            state.prune(from.timestamp());
        }
        Ok(lots.len())
    }

    /// Records a reservation this process has just committed (holding its spot). Kept even
    /// while the lot's first load runs: a local write outlives the snapshot it raced.
    pub fn add(&self, lot: &LotId, span: &HoldingSpan) {
        let seq = self.next_seq();
        lock(&self.entry(lot).state).insert(span, seq);
    }

    /// Forgets a reservation that no longer holds its spot (cancelled, no-show, completed).
    pub fn remove(&self, lot: &LotId, id: &str) {
        self.next_seq();
        let entry = self.entry(lot);
        lock(&entry.state).remove(id);
    }

    /// How many bookings the book holds for `lot` (for tests and metrics).
    pub fn len(&self, lot: &LotId) -> usize {
        lock(&self.entry(lot).state).index.len()
    }

    /// Whether the book holds nothing for `lot`.
    pub fn is_empty(&self, lot: &LotId) -> bool {
        self.len(lot) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, spot: &str, start_h: i64, end_h: i64) -> HoldingSpan {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        HoldingSpan {
            id: id.into(),
            spot: SpotId::parse(spot).unwrap(),
            starts_at: t0 + Duration::hours(start_h),
            ends_at: t0 + Duration::hours(end_h),
        }
    }

    fn ids(book: &LotBook, from_h: i64, to_h: i64) -> Vec<String> {
        let base = 1_800_000_000;
        let mut out: Vec<String> = book
            .spots
            .values()
            .flat_map(|t| {
                LotBook::overlapping(t, book.longest_s, base + from_h * 3600, base + to_h * 3600)
            })
            .map(|(_, id, _, _)| id.clone())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn overlap_scan_finds_long_bookings_that_start_early() {
        let mut book = LotBook::default();
        book.insert(&span("long", "s1", 0, 48), 0);
        book.insert(&span("short", "s1", 50, 51), 0);
        book.insert(&span("other", "s2", 10, 11), 0);
        assert_eq!(ids(&book, 40, 41), vec!["long"]);
        assert_eq!(
            ids(&book, 48, 50),
            Vec::<String>::new(),
            "ends are exclusive"
        );
        assert_eq!(ids(&book, 10, 51), vec!["long", "other", "short"]);
    }

    #[test]
    fn merge_replaces_the_window_but_keeps_newer_local_writes() {
        let mut book = LotBook::default();
        book.insert(&span("cancelled-elsewhere", "s1", 0, 2), 0);
        book.insert(&span("outside", "s1", 100, 101), 0);
        book.insert(&span("local-after-read", "s2", 0, 2), 7);
        book.insert(&span("local-before-read", "s3", 0, 2), 3);
        // The re-read started at sequence 5 and saw a booking made by another instance.
        book.merge(
            None,
            1_800_000_000,
            1_800_000_000 + 10 * 3600,
            &[span("elsewhere", "s4", 1, 3)],
            5,
        );
        assert_eq!(
            ids(&book, -10, 200),
            vec!["elsewhere", "local-after-read", "outside"]
        );
    }

    #[test]
    fn a_moved_booking_replaces_its_old_times() {
        let mut book = LotBook::default();
        book.insert(&span("r", "s1", 0, 2), 0);
        book.insert(&span("r", "s1", 5, 6), 1);
        assert_eq!(ids(&book, 0, 3), Vec::<String>::new());
        assert_eq!(ids(&book, 5, 6), vec!["r"]);
        assert_eq!(book.index.len(), 1);
    }

    #[test]
    fn a_whole_reread_is_swapped_in_keeping_newer_local_writes() {
        let mut book = LotBook::default();
        book.insert(&span("cancelled-elsewhere", "s1", 0, 2), 0);
        book.insert(&span("local-after-read", "s2", 0, 2), 7);
        book.insert(&span("local-before-read", "s3", 0, 2), 3);
        let rebuilt = LotBook::rebuilt(&[
            span("elsewhere", "s4", 1, 3),
            span("local-before-read", "s3", 0, 2),
        ]);
        book.replace_keeping_local(rebuilt, 5);
        assert_eq!(
            ids(&book, -10, 200),
            vec!["elsewhere", "local-after-read", "local-before-read"]
        );
        assert!(book.loaded);
    }

    #[test]
    fn prune_forgets_what_ended() {
        let mut book = LotBook::default();
        book.insert(&span("old", "s1", 0, 2), 0);
        book.insert(&span("new", "s1", 5, 6), 0);
        book.prune(1_800_000_000 + 3 * 3600);
        assert_eq!(ids(&book, -10, 200), vec!["new"]);
        assert_eq!(book.index.len(), 1);
    }
}
