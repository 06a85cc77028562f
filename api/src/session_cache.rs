//! Sessions recently read from the store, by token hash, and their accounts' vehicles, so
//! that a burst of requests with one token costs one database read, not one per request.
//!
//! An entry is trusted for `ttl` after it was read (`auth.session_cache_s`, 2 s by default; 0
//! turns the cache off). Everything this process does that ends or changes a session or an
//! account (logout, revoke, password change, disable, idle expiry) forgets that account's
//! entries at once, so on a single instance nothing changes. Another instance's revocation
//! takes effect here within `ttl`: the price of the saved read, stated in docs/accounts.md.
//! Expiry and idle checks still run on every request, against the injected clock.

use std::borrow::Borrow;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Duration, Utc};
use dashmap::DashMap;
use parkd_store::{SessionRow, User, VehicleRow};

/// Entries kept before expired ones are swept (each sweep is one pass over the map).
const SWEEP_ABOVE: usize = 10_000;

/// Values read at some time, trusted for `ttl` after.
struct Recent<K: Eq + Hash, V> {
    ttl: Duration,
    entries: DashMap<K, (V, DateTime<Utc>)>,
}

impl<K: Eq + Hash, V: Clone> Recent<K, V> {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: DashMap::new(),
        }
    }

    fn get<Q>(&self, key: &Q, now: DateTime<Utc>) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entry = self.entries.get(key)?;
        // A clock that went back counts as stale too.
        let age = now - entry.1;
        (age < self.ttl && age >= Duration::zero()).then(|| entry.0.clone())
    }

    fn put(&self, key: K, value: V, now: DateTime<Utc>) {
        if self.ttl <= Duration::zero() {
            return;
        }
        if self.entries.len() >= SWEEP_ABOVE {
            self.entries
                .retain(|_, (_, read_at)| now - *read_at < self.ttl);
        }
        self.entries.insert(key, (value, now));
    }
}

/// The cache: sessions by token hash, and the vehicles of their accounts (the other read of
/// a booking). `Debug` shows sizes only (entries hold password hashes).
///
/// A read that started before a forget must not put back what the forget removed: every
/// forget advances `forgets` before removing, and a put made with a [`Ticket`] taken before
/// its read takes its entry out again if a forget happened since (so the entry is gone
/// whichever of the two ran first).
pub(crate) struct SessionCache {
    sessions: Recent<[u8; 32], (SessionRow, User)>,
    vehicles: Recent<String, Arc<Vec<VehicleRow>>>,
    forgets: AtomicU64,
}

/// Taken before reading the store, given back with what was read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache")
            .field("ttl", &self.sessions.ttl)
            .field("sessions", &self.sessions.entries.len())
            .field("vehicles", &self.vehicles.entries.len())
            .finish()
    }
}

impl SessionCache {
    /// A cache trusting entries for `ttl` (zero or less: never).
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            sessions: Recent::new(ttl),
            vehicles: Recent::new(ttl),
            forgets: AtomicU64::new(0),
        }
    }

    /// Take before reading the store; give to the put of what was read.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.forgets.load(Ordering::SeqCst))
    }

    fn forgot_since(&self, ticket: Ticket) -> bool {
        self.forgets.load(Ordering::SeqCst) != ticket.0
    }

    /// The session of `token_sha256` and its account, if read less than `ttl` before `now`.
    pub(crate) fn get(
        &self,
        token_sha256: &[u8; 32],
        now: DateTime<Utc>,
    ) -> Option<(SessionRow, User)> {
        self.sessions.get(token_sha256, now)
    }

    /// Remembers what the store said of a token at `now` (read after `ticket` was taken).
    pub(crate) fn put(
        &self,
        ticket: Ticket,
        session: &SessionRow,
        user: &User,
        now: DateTime<Utc>,
    ) {
        let key = session.token_sha256;
        self.sessions.put(key, (session.clone(), user.clone()), now);
        if self.forgot_since(ticket) {
            self.sessions.entries.remove(&key);
        }
    }

    /// Records that the session was touched at `at` (so the next request does not touch it
    /// again because of a stale copy).
    pub(crate) fn touched(&self, token_sha256: &[u8; 32], at: DateTime<Utc>) {
        if let Some(mut entry) = self.sessions.entries.get_mut(token_sha256) {
            entry.0.0.last_seen_at = at;
        }
    }

    /// The vehicles of `user_id`, if read less than `ttl` before `now`.
    pub(crate) fn vehicles(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Option<Arc<Vec<VehicleRow>>> {
        self.vehicles.get(user_id, now)
    }

    /// Remembers the vehicles of `user_id` as read at `now` (after `ticket` was taken).
    pub(crate) fn put_vehicles(
        &self,
        ticket: Ticket,
        user_id: &str,
        vehicles: Arc<Vec<VehicleRow>>,
        now: DateTime<Utc>,
    ) {
        self.vehicles.put(user_id.to_owned(), vehicles, now);
        if self.forgot_since(ticket) {
            self.vehicles.entries.remove(user_id);
        }
    }

    /// Forgets the vehicles of `user_id`: one was added or removed.
    pub(crate) fn forget_vehicles(&self, user_id: &str) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.vehicles.entries.remove(user_id);
    }

    /// Forgets every entry of `user_id`: its sessions or the account changed.
    pub(crate) fn forget_user(&self, user_id: &str) {
        self.forgets.fetch_add(1, Ordering::SeqCst);
        self.sessions
            .entries
            .retain(|_, ((_, user), _)| user.id != user_id);
        self.vehicles.entries.remove(user_id);
    }

    /// How many sessions are held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions.entries.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::TimeZone;
    use parkd_core::account::{Email, Role};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn pair(user_id: &str, token: u8) -> (SessionRow, User) {
        let session = SessionRow {
            id: format!("s{token}"),
            user_id: user_id.into(),
            token_sha256: [token; 32],
            created_at: t(0),
            last_seen_at: t(0),
            expires_at: t(86_400),
            user_agent: String::new(),
            ip: String::new(),
            revoked_at: None,
            revoked_reason: None,
        };
        let user = User {
            id: user_id.into(),
            email: Email::parse(&format!("{user_id}@example.com")).unwrap(),
            password_hash: "x".into(),
            role: Role::Driver,
            display_name: String::new(),
            disabled: false,
            created_at: t(0),
            password_changed_at: t(0),
        };
        (session, user)
    }

    #[test]
    fn entries_live_for_the_ttl_only() {
        let cache = SessionCache::new(Duration::seconds(2));
        let (session, user) = pair("u1", 1);
        assert!(cache.get(&[1; 32], t(0)).is_none());
        cache.put(cache.ticket(), &session, &user, t(10));
        assert_eq!(cache.get(&[1; 32], t(11)).unwrap().0, session);
        assert!(cache.get(&[1; 32], t(12)).is_none(), "expired at the ttl");
        assert!(
            cache.get(&[1; 32], t(9)).is_none(),
            "a clock that went back"
        );
        assert!(cache.get(&[2; 32], t(11)).is_none());
    }

    #[test]
    fn forgetting_a_user_drops_all_their_sessions_only() {
        let cache = SessionCache::new(Duration::seconds(60));
        for (user_id, token) in [("u1", 1), ("u1", 2), ("u2", 3)] {
            let (session, user) = pair(user_id, token);
            cache.put(cache.ticket(), &session, &user, t(0));
        }
        cache.forget_user("u1");
        assert!(cache.get(&[1; 32], t(1)).is_none());
        assert!(cache.get(&[2; 32], t(1)).is_none());
        assert!(cache.get(&[3; 32], t(1)).is_some());
    }

    #[test]
    fn a_touch_updates_the_copy_and_zero_ttl_keeps_nothing() {
        let cache = SessionCache::new(Duration::seconds(60));
        let (session, user) = pair("u1", 1);
        cache.put(cache.ticket(), &session, &user, t(0));
        cache.touched(&[1; 32], t(5));
        assert_eq!(cache.get(&[1; 32], t(6)).unwrap().0.last_seen_at, t(5));
        let off = SessionCache::new(Duration::zero());
        off.put(off.ticket(), &session, &user, t(0));
        assert_eq!(off.len(), 0);
        assert!(off.get(&[1; 32], t(0)).is_none());
    }

    #[test]
    fn vehicles_are_kept_per_account_and_forgotten_with_it() {
        let cache = SessionCache::new(Duration::seconds(2));
        let none = Arc::new(Vec::new());
        cache.put_vehicles(cache.ticket(), "u1", none.clone(), t(0));
        cache.put_vehicles(cache.ticket(), "u2", none.clone(), t(0));
        assert!(cache.vehicles("u1", t(1)).is_some());
        assert!(cache.vehicles("u1", t(2)).is_none(), "expired at the ttl");
        cache.forget_vehicles("u1");
        assert!(cache.vehicles("u1", t(1)).is_none());
        cache.forget_user("u2");
        assert!(cache.vehicles("u2", t(1)).is_none());
    }

    #[test]
    fn a_read_that_raced_a_forget_is_not_kept() {
        let cache = SessionCache::new(Duration::seconds(60));
        let (session, user) = pair("u1", 1);
        // Read the store, then the account's sessions end, then the read is put back.
        let before_the_read = cache.ticket();
        cache.forget_user("u1");
        cache.put(before_the_read, &session, &user, t(0));
        assert!(cache.get(&[1; 32], t(1)).is_none());
        cache.put_vehicles(before_the_read, "u1", Arc::new(Vec::new()), t(0));
        assert!(cache.vehicles("u1", t(1)).is_none());
        // A read after the forget is kept.
        cache.put(cache.ticket(), &session, &user, t(0));
        assert!(cache.get(&[1; 32], t(1)).is_some());
    }

    #[test]
    fn expired_entries_are_swept_when_the_map_is_large() {
        let cache = SessionCache::new(Duration::seconds(2));
        let (mut session, user) = pair("u1", 0);
        for i in 0..SWEEP_ABOVE {
            let bytes = u32::try_from(i).unwrap().to_be_bytes();
            session.token_sha256[..4].copy_from_slice(&bytes);
            cache.put(cache.ticket(), &session, &user, t(0));
        }
        assert_eq!(cache.len(), SWEEP_ABOVE);
        session.token_sha256 = [0xff; 32];
        cache.put(cache.ticket(), &session, &user, t(10));
        assert_eq!(cache.len(), 1, "the stale ones went");
    }
}
