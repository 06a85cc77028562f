//! The reservation book: each lot's holding reservations in memory, so that choosing a spot for
//! a new reservation reads nothing from the database.
//!
//! The database stays the only guarantee against double booking (the exclusion constraint on
//! PostgreSQL, the serialized overlap check on SQLite); the book is a hint that is kept close
//! to it and is never trusted where being wrong would hurt a driver:
//!
//! - **This process's writes** update it at once: a reservation being created is *held* on its
//!   spot before its row is written ([`Book::hold`]), so concurrent requests of this process see
//!   the spot busy and never send the store the same spot and time; the hold becomes a booking
//!   when the row is committed and goes away if the write fails. A cancelled, moved or no-show
//!   reservation is removed or moved.
//! - **A conflict** (the store refuses the spot the book said was free: another instance, or a
//!   path that does not hold, booked it first) re-reads that spot's bookings around the
//!   request before allocating again.
//! - **A refusal** (no fitting spot free) is never answered from the book alone: the lot's
//!   bookings overlapping the request are re-read first, and only a refusal on fresh bookings
//!   is answered.
//! - **Everything else** (a gate's check-out completing a reservation, writes by other
//!   instances) is picked up by [`Book::refresh_loaded`], run by the reservation sweep (every
//!   30 s by default). Until then such a spot looks busy, which costs at worst a less tight
//!   packing, never a double booking or a wrong refusal.
//!
//! A re-read replaces what the book holds in its window except entries the book learned after
//! the re-read started (each entry carries the sequence number of its local write, or of the
//! start of the re-read that brought it) and holds (their rows are not committed yet). So a
//! re-read racing a local create does not lose the create, and re-reads that finish out of
//! order do not let the older snapshot remove what the newer one saw.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Duration, Utc};
use parkd_core::allocation::Interval;
use parkd_core::garage::{Lot, Spot};
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
    /// Sequence number of what this process learns: each local write takes the next one, and
    /// each re-read notes the current one when it starts.
    seq: AtomicU64,
}

#[derive(Debug, Default)]
struct LotEntry {
    /// Serialises the first load of the lot.
    loading: tokio::sync::Mutex<()>,
    state: Mutex<LotBook>,
}

/// One booking on a spot's timeline.
#[derive(Debug, Clone)]
struct Booking {
    span: Span,
    meta: Meta,
}

/// A booking's time, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: i64,
    end: i64,
}

/// The rest of a booking.
#[derive(Debug, Clone)]
struct Meta {
    /// When this process learned it: the sequence number of its local write, or the one noted
    /// when the re-read that brought it started. A re-read that started earlier does not
    /// remove it.
    seq: u64,
    /// Held by a request of this process whose write is in flight: kept by every re-read
    /// (the store cannot show it yet) until the request confirms or releases it.
    pending: bool,
    id: Box<str>,
}

/// One spot's bookings, sorted by (start, id): a binary search finds the few that matter to a
/// request, whatever the spot holds months ahead.
///
/// Every request searches every spot, and on a large book those searches wait on memory, so
/// the times are kept apart from the rest (16 bytes a booking) and every 16th start is sampled:
/// a search reads the small sample and then one block of times, not ~9 scattered entries
/// (the profiles behind this are in `bench/results/reservations.md`, "What changed").
#[derive(Debug, Default)]
struct SpotTimeline {
    times: Vec<Span>,
    /// The start of every [`STRIDE`]th booking: searched first, so that the search of `times`
    /// touches one block of it.
    every: Vec<i64>,
    /// Aligned with `times`.
    meta: Vec<Meta>,
    /// The longest booking this spot has held (bounds how far back an overlap can start).
    longest_s: i64,
}

/// Bookings per block of [`SpotTimeline::every`].
const STRIDE: usize = 16;

impl SpotTimeline {
    /// Index of the first booking that starts at or after `at`.
    fn lower_bound(&self, at: i64) -> usize {
        // Blocks whose first booking starts before `at`: the answer is past the first booking
        // of the last of them and at most the first booking of the next block.
        let blocks = self.every.partition_point(|s| *s < at);
        let low = blocks.saturating_sub(1) * STRIDE + usize::from(blocks > 0);
        let high = (blocks * STRIDE).min(self.times.len());
        // Sorted, so the count of earlier starts is the position; counting loads the block's
        // few cache lines at once, where a binary search would wait for each in turn.
        low + self.times[low..high]
            .iter()
            .filter(|t| t.start < at)
            .count()
    }

    /// Re-samples `every` from the block of booking `from` on.
    fn resample(&mut self, from: usize) {
        let blocks = self.times.len().div_ceil(STRIDE);
        self.every.truncate(blocks);
        for block in from / STRIDE..blocks {
            let start = self.times[block * STRIDE].start;
            match self.every.get_mut(block) {
                Some(sample) => *sample = start,
                None => self.every.push(start),
            }
        }
    }

    fn position(&self, start: i64, id: &str) -> Result<usize, usize> {
        let mut at = self.lower_bound(start);
        while self.times.get(at).is_some_and(|t| t.start == start) {
            match (*self.meta[at].id).cmp(id) {
                std::cmp::Ordering::Less => at += 1,
                std::cmp::Ordering::Equal => return Ok(at),
                std::cmp::Ordering::Greater => break,
            }
        }
        Err(at)
    }

    fn insert(&mut self, booking: Booking) {
        let Booking { span, meta } = booking;
        self.longest_s = self.longest_s.max(span.end - span.start);
        match self.position(span.start, &meta.id) {
            Ok(at) => {
                self.times[at] = span;
                self.meta[at] = meta;
            }
            Err(at) => {
                self.times.insert(at, span);
                self.meta.insert(at, meta);
                self.resample(at);
            }
        }
    }

    fn remove(&mut self, start: i64, id: &str) {
        if let Ok(at) = self.position(start, id) {
            self.times.remove(at);
            self.meta.remove(at);
            self.resample(at);
        }
    }

    fn meta(&self, start: i64, id: &str) -> Option<&Meta> {
        self.meta.get(self.position(start, id).ok()?)
    }

    fn meta_mut(&mut self, start: i64, id: &str) -> Option<&mut Meta> {
        let at = self.position(start, id).ok()?;
        self.meta.get_mut(at)
    }

    /// Every booking, in order.
    fn all(&self) -> impl Iterator<Item = Booking> + '_ {
        self.times.iter().zip(&self.meta).map(|(t, m)| Booking {
            span: *t,
            meta: m.clone(),
        })
    }

    /// Forgets the bookings that ended at or before `before`; their ids go to `gone`.
    fn prune(&mut self, before: i64, gone: &mut Vec<Box<str>>) {
        let keep: Vec<bool> = self.times.iter().map(|t| t.end > before).collect();
        let mut flags = keep.iter();
        self.times.retain(|_| flags.next().copied().unwrap_or(true));
        let mut flags = keep.iter();
        self.meta.retain(|m| {
            let kept = flags.next().copied().unwrap_or(true);
            if !kept {
                gone.push(m.id.clone());
            }
            kept
        });
        self.resample(0);
    }

    /// Index of the first booking that can reach past `at`: every one before it started more
    /// than `longest_s` earlier, so it ended at or before `at`.
    fn first_reaching(&self, at: i64) -> usize {
        self.lower_bound(at.saturating_sub(self.longest_s))
    }

    /// The bookings overlapping `[from, to)`.
    fn overlapping(&self, from: i64, to: i64) -> impl Iterator<Item = (Span, &Meta)> {
        let first = self.first_reaching(from);
        self.times[first..]
            .iter()
            .zip(&self.meta[first..])
            .take_while(move |(t, _)| t.start < to)
            .filter(move |(t, _)| t.end > from)
            .map(|(t, m)| (*t, m))
    }

    /// Appends to `out` what decides `request` on this spot within `context`: every booking
    /// overlapping the request, the one before it that ends last (if it ends inside the
    /// context) and the first one after it (if it starts inside the context). A timeline of
    /// these answers `gap_around(request)` exactly as one of every booking in the context.
    fn around(&self, request: Interval, context: Interval, out: &mut Vec<Interval>) {
        let first = self.first_reaching(request.start());
        let mut before: Option<Span> = None;
        let later = |t: Span, before: &mut Option<Span>| {
            if before.is_none_or(|b| t.end > b.end) {
                *before = Some(t);
            }
        };
        let mut next = first;
        for &t in &self.times[first..] {
            if t.start >= request.end() {
                break;
            }
            next += 1;
            if t.end > request.start() {
                out.extend(Interval::new(t.start, t.end).ok());
            } else {
                later(t, &mut before);
            }
        }
        // Earlier bookings all ended before the request; the scan back stops once none can end
        // later than the latest end found (they started more than `longest_s` before it).
        for &t in self.times[..first].iter().rev() {
            if before.is_some_and(|b| t.start.saturating_add(self.longest_s) <= b.end) {
                break;
            }
            later(t, &mut before);
        }
        if let Some(b) = before.filter(|b| b.end > context.start()) {
            out.extend(Interval::new(b.start, b.end).ok());
        }
        if let Some(t) = self.times.get(next).filter(|t| t.start < context.end()) {
            out.extend(Interval::new(t.start, t.end).ok());
        }
    }
}

#[derive(Debug, Default)]
struct LotBook {
    loaded: bool,
    /// Spot → its place in `timelines`.
    slots: HashMap<SpotId, usize>,
    timelines: Vec<(SpotId, SpotTimeline)>,
    /// Reservation id → (its spot's place, start).
    index: HashMap<String, (usize, i64)>,
    /// The places of the spots of the last lot model asked about, in its order (`None`: no
    /// booking known), so that a request of the same model looks up no spot id. The model is
    /// kept, so its address cannot be reused by another while cached.
    order: Option<(Arc<Lot>, Vec<Option<usize>>)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves a consistent map (no invariant spans two calls).
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LotBook {
    fn insert(&mut self, span: &HoldingSpan, seq: u64) {
        self.replace(span, seq, false);
    }

    /// Puts `span` in the book in place of any earlier entry of its reservation.
    fn replace(&mut self, span: &HoldingSpan, seq: u64, pending: bool) {
        let (start, end) = (span.starts_at.timestamp(), span.ends_at.timestamp());
        if end <= start {
            return;
        }
        self.remove(&span.id);
        self.put(
            &span.spot,
            Booking {
                span: Span { start, end },
                meta: Meta {
                    seq,
                    pending,
                    id: span.id.as_str().into(),
                },
            },
        );
    }

    /// Adds `booking` on `spot` (its id must not be in the book).
    fn put(&mut self, spot: &SpotId, booking: Booking) {
        let slot = match self.slots.get(spot) {
            Some(slot) => *slot,
            None => {
                let slot = self.timelines.len();
                self.timelines.push((spot.clone(), SpotTimeline::default()));
                self.slots.insert(spot.clone(), slot);
                // A spot the cached order saw without bookings has some now.
                self.order = None;
                slot
            }
        };
        self.index
            .insert(booking.meta.id.to_string(), (slot, booking.span.start));
        self.timelines[slot].1.insert(booking);
    }

    fn remove(&mut self, id: &str) {
        if let Some((slot, start)) = self.index.remove(id)
            && let Some((_, timeline)) = self.timelines.get_mut(slot)
        {
            timeline.remove(start, id);
        }
    }

    /// Makes `order` the places of `model`'s spots (in its order); kept while the model stays
    /// the same.
    fn cache_places(&mut self, model: &Arc<Lot>) {
        if !self
            .order
            .as_ref()
            .is_some_and(|(cached, _)| Arc::ptr_eq(cached, model))
        {
            let places = model
                .spots
                .iter()
                .map(|s| self.slots.get(&s.id).copied())
                .collect();
            self.order = Some((model.clone(), places));
        }
    }

    /// Replaces what the book holds of `spot` (or every spot) in `[from, to)` by `fresh`, a
    /// snapshot whose read started at `since`, keeping what the book learned after that.
    fn merge(
        &mut self,
        spot: Option<&SpotId>,
        from: i64,
        to: i64,
        fresh: &[HoldingSpan],
        since: u64,
    ) {
        let stale: Vec<Box<str>> = self
            .timelines
            .iter()
            .filter(|(s, _)| spot.is_none_or(|only| only == s))
            .flat_map(|(_, timeline)| timeline.overlapping(from, to))
            .filter(|(_, m)| m.seq <= since && !m.pending)
            .map(|(_, m)| m.id.clone())
            .collect();
        for id in &stale {
            self.remove(id);
        }
        for span in fresh {
            // What the book learned after this snapshot wins over it.
            let newer = self
                .meta(&span.id)
                .is_some_and(|m| m.seq > since || m.pending);
            if !newer {
                self.insert(span, since);
            }
        }
    }

    /// A book of exactly `fresh`, a snapshot whose read started at `since` (built outside any
    /// lock).
    fn rebuilt(fresh: &[HoldingSpan], since: u64) -> LotBook {
        let mut book = LotBook {
            loaded: true,
            ..LotBook::default()
        };
        for span in fresh {
            book.insert(span, since);
        }
        book
    }

    /// Moves what this book learned after `since` (and its holds) into `into` and
    /// makes `into` this book: the swap that ends a whole-lot re-read, short enough to hold
    /// the lock for.
    fn replace_keeping_local(&mut self, mut into: LotBook, since: u64) {
        for (spot, timeline) in &self.timelines {
            for booking in timeline
                .all()
                .filter(|b| b.meta.seq > since || b.meta.pending)
            {
                into.remove(&booking.meta.id);
                into.put(spot, booking);
            }
        }
        *self = into;
    }

    fn meta(&self, id: &str) -> Option<&Meta> {
        let (slot, start) = self.index.get(id)?;
        self.timelines.get(*slot)?.1.meta(*start, id)
    }

    fn meta_mut(&mut self, id: &str) -> Option<&mut Meta> {
        let (slot, start) = self.index.get(id)?;
        self.timelines.get_mut(*slot)?.1.meta_mut(*start, id)
    }

    /// Holds `span` for a write in flight if nothing this book knows overlaps it on its spot.
    fn hold(&mut self, span: &HoldingSpan, seq: u64) -> bool {
        let (start, end) = (span.starts_at.timestamp(), span.ends_at.timestamp());
        let taken = self.slots.get(&span.spot).is_some_and(|slot| {
            self.timelines[*slot]
                .1
                .overlapping(start, end)
                .any(|(_, m)| *m.id != *span.id)
        });
        if taken || end <= start {
            return false;
        }
        self.replace(span, seq, true);
        true
    }

    /// Forgets bookings that ended before `before`.
    fn prune(&mut self, before: i64) {
        let mut gone = Vec::new();
        for (_, timeline) in &mut self.timelines {
            timeline.prune(before, &mut gone);
        }
        for id in gone {
            self.index.remove(&*id);
        }
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
        let rebuilt = LotBook::rebuilt(&fresh, since);
        lock(&entry.state).replace_keeping_local(rebuilt, since);
        Ok(())
    }

    /// For each spot of `model` (in its order), the bookings that decide `request` within
    /// `context` (see [`Timeline::gap_around`](parkd_core::allocation::Timeline::gap_around)):
    /// those overlapping it, the one before it that ends last and the first one after it; a
    /// spot the book does not know, or that is not `wanted` (allocation would skip it), has
    /// none. Loads the lot first if needed. Aligned with the model's spot list, so that
    /// allocation needs no map and no copy of a spot id.
    ///
    /// At most a few intervals a spot, found by a search that touches a few cache lines: the
    /// cost does not grow with how densely the lot is booked around the request.
    pub async fn around(
        &self,
        store: &dyn ReservationStore,
        model: &Arc<Lot>,
        wanted: impl Fn(&Spot) -> bool,
        request: Interval,
        context: Interval,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<Vec<Interval>>> {
        let entry = self.ensure_loaded(store, &model.id, now).await?;
        let mut state = lock(&entry.state);
        state.cache_places(model);
        let places = state.order.as_ref().map_or(&[][..], |(_, places)| places);
        let timelines = &state.timelines;
        Ok(model
            .spots
            .iter()
            .zip(places)
            .map(|(spot, place)| {
                let mut out = Vec::new();
                if wanted(spot)
                    && let Some((_, timeline)) = place.and_then(|p| timelines.get(p))
                {
                    timeline.around(request, context, &mut out);
                }
                out
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
            let rebuilt = LotBook::rebuilt(&fresh, since);
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

    /// Holds `span`'s spot and time for a write in flight, unless a booking or hold this
    /// process knows overlaps it (`None`: choose again). Concurrent requests of this process
    /// then never send the store the same spot and time: the store's refusal (a rolled-back
    /// write, a re-read) is left for what another process booked. The hold is released when
    /// the returned guard is dropped, unless [`Hold::confirm`]ed once the write committed.
    pub fn hold<'a>(&'a self, lot: &LotId, span: &HoldingSpan) -> Option<Hold<'a>> {
        let entry = self.entry(lot);
        let seq = self.next_seq();
        if !lock(&entry.state).hold(span, seq) {
            return None;
        }
        Some(Hold {
            book: self,
            entry,
            id: span.id.clone(),
            confirmed: false,
        })
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

/// A spot held for a reservation whose write is in flight ([`Book::hold`]).
#[derive(Debug)]
#[must_use = "dropping a hold releases it at once"]
pub struct Hold<'a> {
    book: &'a Book,
    entry: Arc<LotEntry>,
    id: String,
    confirmed: bool,
}

impl Hold<'_> {
    /// The write committed: the hold becomes a booking of this process like [`Book::add`]'s.
    pub fn confirm(mut self) {
        let seq = self.book.next_seq();
        if let Some(meta) = lock(&self.entry.state).meta_mut(&self.id) {
            meta.pending = false;
            meta.seq = seq;
        }
        self.confirmed = true;
    }
}

impl Drop for Hold<'_> {
    /// The write failed, or the request was dropped mid-way: the spot is free again for this
    /// process (if the write did commit after all, the next re-read brings it back).
    fn drop(&mut self) {
        if self.confirmed {
            return;
        }
        let mut state = lock(&self.entry.state);
        if state.meta(&self.id).is_some_and(|m| m.pending) {
            state.remove(&self.id);
        }
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
            .timelines
            .iter()
            .flat_map(|(_, t)| t.overlapping(base + from_h * 3600, base + to_h * 3600))
            .map(|(_, m)| m.id.to_string())
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
    fn an_older_re_read_finishing_last_keeps_what_a_newer_one_saw() {
        let base = 1_800_000_000;
        let mut book = LotBook::default();
        // Re-read A starts at sequence 7 and reads nothing; a booking commits (made elsewhere,
        // or confirmed here at 8); re-read B starts at 8, sees it and is merged first.
        book.merge(None, base, base + 10 * 3600, &[span("made", "s1", 0, 2)], 8);
        book.merge(None, base, base + 10 * 3600, &[], 7);
        assert_eq!(
            ids(&book, -1, 10),
            vec!["made"],
            "A's snapshot is older than B's"
        );
        // A re-read that starts later and no longer sees it (cancelled elsewhere) removes it.
        book.merge(None, base, base + 10 * 3600, &[], 9);
        assert_eq!(ids(&book, -1, 10), Vec::<String>::new());
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
        let rebuilt = LotBook::rebuilt(
            &[
                span("elsewhere", "s4", 1, 3),
                span("local-before-read", "s3", 0, 2),
            ],
            5,
        );
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

    #[test]
    fn around_keeps_the_neighbours_and_the_overlaps_only() {
        let mut book = LotBook::default();
        for (n, (start, end)) in [(0, 2), (3, 5), (6, 8), (9, 10), (12, 14), (20, 22)]
            .into_iter()
            .enumerate()
        {
            book.insert(&span(&format!("r{n}"), "s1", start, end), 0);
        }
        let base = 1_800_000_000;
        let h = |x: i64| base + x * 3600;
        let iv = |a: i64, b: i64| Interval::new(h(a), h(b)).unwrap();
        let (_, timeline) = &book.timelines[0];
        let mut out = Vec::new();
        // Free between 8 and 9: the booking before ends at 8, the next starts at 9.
        timeline.around(iv(8, 9), iv(-4, 21), &mut out);
        assert_eq!(out, vec![iv(6, 8), iv(9, 10)]);
        // Overlapping two: both, with their neighbours.
        out.clear();
        timeline.around(iv(4, 7), iv(-8, 19), &mut out);
        assert_eq!(out, vec![iv(3, 5), iv(6, 8), iv(0, 2), iv(9, 10)]);
        // Neighbours outside the context are left out.
        out.clear();
        timeline.around(iv(15, 16), iv(14, 20), &mut out);
        assert_eq!(out, Vec::<Interval>::new());
    }

    #[tokio::test]
    async fn the_lot_order_cache_sees_a_spot_booked_after_it_was_made() {
        let (store, _dir) = parkd_store::testing::sqlite_store().await;
        let lot = LotId::parse("lot").unwrap();
        let model = Arc::new(parkd_core::garage::demo_garage(lot.clone(), 1, 2));
        let (s1, s2) = (model.spots[0].id.to_string(), model.spots[1].id.to_string());
        let book = Book::new();
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let h = |x: i64| t0.timestamp() + x * 3600;
        let request = Interval::new(h(0), h(1)).unwrap();
        let context = Interval::new(h(-12), h(13)).unwrap();
        let every = |_: &Spot| true;
        // Loaded (empty: the store holds none of these), then the order is cached.
        let busy = book
            .around(&store, &model, every, request, context, t0)
            .await
            .unwrap();
        assert_eq!(busy, vec![vec![], vec![]]);
        book.add(&lot, &span("a", &s1, 0, 2));
        let busy = book
            .around(&store, &model, every, request, context, t0)
            .await
            .unwrap();
        assert_eq!(busy, vec![vec![Interval::new(h(0), h(2)).unwrap()], vec![]]);
        book.add(&lot, &span("b", &s2, 0, 1));
        let busy = book
            .around(&store, &model, every, request, context, t0)
            .await
            .unwrap();
        assert_eq!(busy[1], vec![Interval::new(h(0), h(1)).unwrap()]);
        // A spot allocation would skip is not looked at.
        let busy = book
            .around(
                &store,
                &model,
                |s| s.id.as_str() != s2,
                request,
                context,
                t0,
            )
            .await
            .unwrap();
        assert_eq!(busy[1], Vec::<Interval>::new());
        // Another model of the lot (an operator's edit) is mapped afresh.
        let mut edited = (*model).clone();
        edited.spots.reverse();
        let busy = book
            .around(&store, &Arc::new(edited), every, request, context, t0)
            .await
            .unwrap();
        assert_eq!(busy[0], vec![Interval::new(h(0), h(1)).unwrap()]);
    }

    /// A timeline of (start, length) bookings named `r0`, `r1`, ...
    fn timeline_of(bookings: &[(i64, i64)]) -> SpotTimeline {
        let mut timeline = SpotTimeline::default();
        for (n, (start, length)) in bookings.iter().enumerate() {
            timeline.insert(Booking {
                span: Span {
                    start: *start,
                    end: start + length,
                },
                meta: Meta {
                    seq: 0,
                    pending: false,
                    id: format!("r{n}").into(),
                },
            });
        }
        timeline
    }

    proptest::proptest! {
        /// Whatever the spot holds (stale overlapping bookings included), the few bookings
        /// `around` keeps decide a request exactly as every booking in the context would.
        #[test]
        fn around_decides_like_the_whole_context(
            bookings in proptest::collection::vec((0i64..200, 1i64..30), 0..40),
            start in 0i64..200,
            length in 1i64..20,
            before in 0i64..50,
            after in 0i64..50,
        ) {
            use parkd_core::allocation::Timeline;
            let timeline = timeline_of(&bookings);
            let request = Interval::new(start, start + length).unwrap();
            let context = Interval::new(start - before, start + length + after + 1).unwrap();
            let whole = Timeline::from_intervals(
                timeline
                    .overlapping(context.start(), context.end())
                    .map(|(t, _)| Interval::new(t.start, t.end).unwrap()),
            );
            let mut few = Vec::new();
            timeline.around(request, context, &mut few);
            proptest::prop_assert!(few.len() <= bookings.len());
            let few = Timeline::from_intervals(few);
            proptest::prop_assert_eq!(few.gap_around(request), whole.gap_around(request));
        }
    }

    #[test]
    fn a_hold_keeps_the_spot_from_other_requests_until_released_or_confirmed() {
        let book = Book::new();
        let lot = LotId::parse("lot").unwrap();
        let first = book.hold(&lot, &span("a", "s1", 0, 2));
        assert!(first.is_some());
        assert!(
            book.hold(&lot, &span("b", "s1", 1, 3)).is_none(),
            "overlaps the hold"
        );
        let touching = book.hold(&lot, &span("c", "s1", 2, 3));
        assert!(touching.is_some(), "ends are exclusive");
        // Released (the write failed): the time is free again.
        drop(first);
        let retry = book.hold(&lot, &span("d", "s1", 1, 2));
        assert!(retry.is_some());
        retry.unwrap().confirm();
        drop(touching);
        assert_eq!(book.len(&lot), 1, "only the confirmed booking is left");
        assert!(book.hold(&lot, &span("e", "s1", 0, 2)).is_none());
    }

    #[test]
    fn a_hold_outlives_re_reads_that_cannot_see_it_yet() {
        let mut book = LotBook::default();
        assert!(book.hold(&span("held", "s1", 0, 2), 9));
        // Both re-reads started after the hold (sequence 10) and saw no row for it.
        book.merge(
            None,
            1_800_000_000 - 3600,
            1_800_000_000 + 10 * 3600,
            &[],
            10,
        );
        assert_eq!(ids(&book, -1, 10), vec!["held"]);
        book.replace_keeping_local(LotBook::rebuilt(&[span("other", "s2", 0, 1)], 10), 10);
        assert_eq!(ids(&book, -1, 10), vec!["held", "other"]);
        assert!(book.meta("held").is_some_and(|m| m.pending));
    }

    proptest::proptest! {
        /// The sampled search finds what a search of every booking finds, as bookings come and go.
        #[test]
        fn the_sampled_search_matches_a_plain_one(
            bookings in proptest::collection::vec((0i64..500, 1i64..30), 0..120),
            removed in proptest::collection::vec(0usize..120, 0..60),
            probes in proptest::collection::vec(-10i64..520, 1..20),
        ) {
            let mut timeline = timeline_of(&bookings);
            for n in removed {
                if let Some((s, _)) = bookings.get(n) {
                    timeline.remove(*s, &format!("r{n}"));
                }
            }
            let mut gone = Vec::new();
            timeline.prune(probes[0], &mut gone);
            proptest::prop_assert_eq!(timeline.times.len(), timeline.meta.len());
            proptest::prop_assert!(timeline.times.is_sorted_by_key(|t| t.start));
            let samples: Vec<i64> = timeline.times.iter().step_by(STRIDE).map(|t| t.start).collect();
            proptest::prop_assert_eq!(&timeline.every, &samples);
            for at in probes {
                let plain = timeline.times.partition_point(|t| t.start < at);
                proptest::prop_assert_eq!(timeline.lower_bound(at), plain);
            }
        }
    }
}
