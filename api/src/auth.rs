//! Accounts and sessions over HTTP: register, login, logout, me, password change, sessions,
//! vehicles, and the admin's account switches. The rules and their reasons are in
//! `docs/accounts.md`; in short:
//!
//! - Passwords are hashed with Argon2id (OWASP's minimum or stronger, enforced by config) on
//!   blocking threads, at most as many at once as there are cores, so logins never stall the
//!   async workers and a login storm queues instead of thrashing.
//! - A session token is 256 random bits, shown once; only its SHA-256 is stored. Sessions end
//!   on logout, after `session_idle` without a request, at `session_absolute` after login, for
//!   the other sessions on a password change, and all of them when the account is disabled.
//! - Registration and login answer alike for known and unknown addresses (same status, same
//!   body, same Argon2 work), so neither reveals who has an account.
//! - Failed logins are limited per address, per (account, address) and per account; the
//!   per-account limit does not apply to addresses that logged into that account before, so
//!   an attacker cannot lock the real user out from their usual place.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use parkd_core::account::{
    AccountError, Email, Plate, Role, VehicleClass, VehicleProfile, check_password, encode_token,
    token_shape_ok,
};
use parkd_core::clock::Clock;
use parkd_core::vehicle::VehicleType;
use parkd_store::{SessionRow, Store, StoreError, StoreResult, User, VehicleRow};
use prometheus::{IntCounterVec, Opts, Registry};
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::ApiState;
use crate::problem::Problem;
use crate::session_cache::SessionCache;

/// Argon2id cost. [`Argon2Cost::OWASP`] is the floor the configuration accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Argon2Cost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Argon2Cost {
    /// OWASP Password Storage Cheat Sheet (2023+): m = 19 MiB, t = 2, p = 1.
    pub const OWASP: Argon2Cost = Argon2Cost {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    /// Whether this is at least as strong as OWASP's minimum in memory and passes.
    pub fn meets_owasp(&self) -> bool {
        self.memory_kib >= Self::OWASP.memory_kib
            && self.iterations >= Self::OWASP.iterations
            && self.parallelism >= 1
    }
}

/// The tunables of accounts and sessions.
#[derive(Debug, Clone, Copy)]
pub struct AuthSettings {
    /// Argon2id cost of new hashes (existing hashes verify with their own).
    pub argon2: Argon2Cost,
    /// Hashes computed at once; more wait their turn.
    pub hash_concurrency: usize,
    /// A session unused this long ends.
    pub session_idle: Duration,
    /// A session ends this long after login, used or not.
    pub session_absolute: Duration,
    /// The window over which failed logins are counted.
    pub failure_window: Duration,
    /// Failed logins per client address per window.
    pub max_failures_per_ip: usize,
    /// Failed logins per (account, address) per window.
    pub max_failures_per_account_ip: usize,
    /// Failed logins per account per window, from addresses that never logged into it.
    pub max_failures_per_account: usize,
    /// How long a session read from the store is trusted without reading it again (zero:
    /// read at every request). Another instance's logout or revoke takes this long to reach
    /// this one; this instance's own take effect at once.
    pub session_cache: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            argon2: Argon2Cost::OWASP,
            hash_concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            session_idle: Duration::hours(24),
            session_absolute: Duration::days(30),
            failure_window: Duration::minutes(15),
            max_failures_per_ip: 30,
            max_failures_per_account_ip: 5,
            max_failures_per_account: 50,
            session_cache: Duration::seconds(2),
        }
    }
}

#[derive(Debug, Clone)]
struct AuthMetrics {
    logins: IntCounterVec,
    registrations: IntCounterVec,
    sessions_ended: IntCounterVec,
}

impl AuthMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let logins = IntCounterVec::new(
            Opts::new("parkd_auth_logins_total", "Login attempts by outcome"),
            &["outcome"],
        )?;
        let registrations = IntCounterVec::new(
            Opts::new(
                "parkd_auth_registrations_total",
                "Registration requests by outcome (created, existing, invalid)",
            ),
            &["outcome"],
        )?;
        let sessions_ended = IntCounterVec::new(
            Opts::new(
                "parkd_auth_sessions_ended_total",
                "Sessions ended or refused, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(registrations.clone()))?;
        registry.register(Box::new(sessions_ended.clone()))?;
        Ok(Self {
            logins,
            registrations,
            sessions_ended,
        })
    }
}

/// Failure timestamps per key, pruned to the window.
#[derive(Debug, Default)]
struct LimiterState {
    per_ip: HashMap<IpAddr, VecDeque<DateTime<Utc>>>,
    per_account_ip: HashMap<(String, IpAddr), VecDeque<DateTime<Utc>>>,
    per_account: HashMap<String, VecDeque<DateTime<Utc>>>,
    /// (account, address) pairs that logged in successfully, with the last time.
    known: HashMap<(String, IpAddr), DateTime<Utc>>,
}

/// How long an address stays "known" to an account after a successful login.
const KNOWN_FOR_DAYS: i64 = 30;

fn prune(queue: &mut VecDeque<DateTime<Utc>>, since: DateTime<Utc>) {
    while queue.front().is_some_and(|at| *at <= since) {
        queue.pop_front();
    }
}

/// The failed-login limiter (in memory, per process).
#[derive(Debug, Default)]
struct LoginLimiter {
    state: Mutex<LimiterState>,
}

impl LoginLimiter {
    /// `Some(retry after)` when this attempt must be refused before checking the password.
    fn check(
        &self,
        account: &str,
        ip: IpAddr,
        now: DateTime<Utc>,
        settings: &AuthSettings,
    ) -> Option<StdDuration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let since = now - settings.failure_window;
        let key = (account.to_owned(), ip);
        let known = state
            .known
            .get(&key)
            .is_some_and(|at| now - *at < Duration::days(KNOWN_FOR_DAYS));
        let mut limited: Vec<DateTime<Utc>> = Vec::new();
        let mut consider = |queue: Option<&mut VecDeque<DateTime<Utc>>>, max: usize| {
            if let Some(queue) = queue {
                prune(queue, since);
                if queue.len() >= max
                    && let Some(oldest) = queue.front()
                {
                    limited.push(*oldest);
                }
            }
        };
        consider(state.per_ip.get_mut(&ip), settings.max_failures_per_ip);
        consider(
            state.per_account_ip.get_mut(&key),
            settings.max_failures_per_account_ip,
        );
        if !known {
            consider(
                state.per_account.get_mut(account),
                settings.max_failures_per_account,
            );
        }
        limited.into_iter().max().map(|oldest| {
            let until = oldest + settings.failure_window;
            (until - now)
                .to_std()
                .unwrap_or_default()
                .max(StdDuration::from_secs(1))
        })
    }

    fn failed(&self, account: &str, ip: IpAddr, now: DateTime<Utc>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // Bound memory under a flood: each queue keeps at most 256 entries.
        let push = |queue: &mut VecDeque<DateTime<Utc>>| {
            if queue.len() >= 256 {
                queue.pop_front();
            }
            queue.push_back(now);
        };
        push(state.per_ip.entry(ip).or_default());
        push(
            state
                .per_account_ip
                .entry((account.to_owned(), ip))
                .or_default(),
        );
        push(state.per_account.entry(account.to_owned()).or_default());
    }

    fn succeeded(&self, account: &str, ip: IpAddr, now: DateTime<Utc>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let key = (account.to_owned(), ip);
        state.per_account_ip.remove(&key);
        state.known.insert(key, now);
    }

    /// Drops empty and old entries (called now and then).
    fn sweep(&self, now: DateTime<Utc>, window: Duration) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let since = now - window;
        state.per_ip.retain(|_, q| {
            prune(q, since);
            !q.is_empty()
        });
        state.per_account_ip.retain(|_, q| {
            prune(q, since);
            !q.is_empty()
        });
        state.per_account.retain(|_, q| {
            prune(q, since);
            !q.is_empty()
        });
        state
            .known
            .retain(|_, at| now - *at < Duration::days(KNOWN_FOR_DAYS));
    }
}

/// Argon2id on blocking threads, at most `hash_concurrency` at once.
#[derive(Debug)]
struct Hasher {
    cost: Argon2Cost,
    permits: Semaphore,
    /// A hash of a random password, verified against for unknown accounts so that their
    /// answer takes as long as a wrong password for a known one.
    dummy: String,
}

#[derive(Debug, thiserror::Error)]
enum HashError {
    #[error("argon2: {0}")]
    Argon2(String),
    #[error("the hashing task failed: {0}")]
    Task(String),
}

fn argon2(cost: Argon2Cost) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(cost: Argon2Cost, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    argon2(cost)?
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

impl Hasher {
    fn new(cost: Argon2Cost, concurrency: usize) -> Result<Self, HashError> {
        let mut random = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut random);
        Ok(Self {
            cost,
            permits: Semaphore::new(concurrency.max(1)),
            dummy: hash_now(cost, &random)?,
        })
    }

    async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError::Task(e.to_string()))?;
        let cost = self.cost;
        tokio::task::spawn_blocking(move || hash_now(cost, password.as_bytes()))
            .await
            .map_err(|e| HashError::Task(e.to_string()))?
    }

    /// Verifies `password` against `hash` (its own parameters), or against the dummy hash
    /// when there is no account, returning false then.
    async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| HashError::Task(e.to_string()))?;
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let matches = tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash).map_err(|e| HashError::Argon2(e.to_string()))?;
            Ok::<_, HashError>(
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await
        .map_err(|e| HashError::Task(e.to_string()))??;
        Ok(real && matches)
    }
}

/// Accounts and sessions: the state behind the auth routes.
#[derive(Debug)]
pub struct Accounts {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: AuthSettings,
    hasher: Hasher,
    limiter: LoginLimiter,
    metrics: AuthMetrics,
    sessions: SessionCache,
}

impl Accounts {
    /// Accounts over `store`, registering the metrics. Computes one Argon2 hash (the dummy).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: AuthSettings,
        registry: &Registry,
    ) -> Result<Self, String> {
        let hasher =
            Hasher::new(settings.argon2, settings.hash_concurrency).map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            clock,
            settings,
            hasher,
            limiter: LoginLimiter::default(),
            metrics: AuthMetrics::new(registry).map_err(|e| e.to_string())?,
            sessions: SessionCache::new(settings.session_cache),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current time, from the injected clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The vehicles of `user_id`, from the session cache if read within
    /// `auth.session_cache_s` (a vehicle added or removed through this instance is seen at
    /// once; through another, within that time).
    pub(crate) async fn vehicles_of(&self, user_id: &str) -> StoreResult<Arc<Vec<VehicleRow>>> {
        let now = self.clock.now();
        if let Some(vehicles) = self.sessions.vehicles(user_id, now) {
            return Ok(vehicles);
        }
        let ticket = self.sessions.ticket();
        let vehicles = Arc::new(self.store.vehicles(user_id).await?);
        self.sessions
            .put_vehicles(ticket, user_id, vehicles.clone(), now);
        Ok(vehicles)
    }

    /// Hashes a password with the configured cost (for the CLI's `admin create-user`).
    pub async fn hash_password(&self, password: &str) -> Result<String, String> {
        self.hasher
            .hash(password.to_owned())
            .await
            .map_err(|e| e.to_string())
    }

    /// Forgets old limiter entries; call every few minutes.
    pub fn sweep(&self) {
        self.limiter
            .sweep(self.clock.now(), self.settings.failure_window);
    }

    /// Creates an account (for the CLI and the admin API): validates like registration,
    /// refuses a taken address with a conflict.
    pub async fn create_user(
        &self,
        email: &Email,
        password: &str,
        role: Role,
        display_name: &str,
    ) -> Result<User, Problem> {
        check_password(password, Some(email)).map_err(weak_input)?;
        let hash = self
            .hasher
            .hash(password.to_owned())
            .await
            .map_err(Problem::internal)?;
        let now = self.clock.now();
        let user = User {
            id: random_id(),
            email: email.clone(),
            password_hash: hash,
            role,
            display_name: display_name.to_owned(),
            disabled: false,
            created_at: now,
            password_changed_at: now,
        };
        match self.store.create_user(&user).await {
            Ok(()) => Ok(user),
            Err(StoreError::Conflict(_)) => {
                Err(
                    Problem::new(StatusCode::CONFLICT, "account-exists", "Account exists")
                        .with_detail("an account with this e-mail exists"),
                )
            }
            Err(error) => Err(Problem::internal(error)),
        }
    }
}

fn weak_input(error: AccountError) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-account-data",
        "Invalid account data",
    )
    .with_detail(error.to_string())
}

/// A random id: 128 bits, hex.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The auth routes, merged into the API's router.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/me/password", post(change_password))
        .route("/api/v1/me/sessions", get(sessions))
        .route("/api/v1/me/sessions/{id}", delete(revoke_session))
        .route("/api/v1/me/vehicles", get(list_vehicles).post(add_vehicle))
        .route("/api/v1/me/vehicles/{id}", delete(delete_vehicle))
        .route("/api/v1/admin/users", get(admin_users))
        .route("/api/v1/admin/users/{id}/disable", post(admin_disable))
        .route("/api/v1/admin/users/{id}/enable", post(admin_enable))
}

/// A JSON body: size-limited by the router, unknown fields refused by the types, every
/// failure a problem+json (400 malformed, 413 too large, 415 not JSON, 422 wrong shape).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonDataError(_) => Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-body",
                    "Invalid body",
                ),
                JsonRejection::JsonSyntaxError(_) => {
                    Problem::new(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
                }
                JsonRejection::MissingJsonContentType(_) => Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "json-required",
                    "JSON required",
                ),
                _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "Body too large",
                ),
                _ => Problem::new(rejection.status(), "invalid-body", "Invalid body"),
            }
            .with_detail(rejection.body_text())),
        }
    }
}

/// Who called: a valid session of an enabled account. Refusals are 401 problem+json with a
/// `WWW-Authenticate: Bearer` header.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account.
    pub user: User,
    /// The session used.
    pub session: SessionRow,
}

fn unauthorized(kind: &str, detail: &str) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, kind, "Unauthorized")
        .with_detail(detail)
        .into_response();
    let challenge = if kind == "missing-token" {
        HeaderValue::from_static("Bearer realm=\"parkd\"")
    } else {
        HeaderValue::from_static("Bearer realm=\"parkd\", error=\"invalid_token\"")
    };
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}

/// Minimum time between two `last_seen_at` writes of one session.
const TOUCH_EVERY_S: i64 = 60;

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ApiState,
    ) -> Result<Self, Self::Rejection> {
        let accounts = &state.accounts;
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(unauthorized(
                "missing-token",
                "send Authorization: Bearer <token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or_default();
        if !token_shape_ok(token) {
            accounts
                .metrics
                .sessions_ended
                .with_label_values(&["malformed_token"])
                .inc();
            return Err(unauthorized("invalid-token", "the token is malformed"));
        }
        let token_sha256 = sha256(token);
        let now = accounts.clock.now();
        let found = match accounts.sessions.get(&token_sha256, now) {
            Some(cached) => Some(cached),
            None => {
                let ticket = accounts.sessions.ticket();
                let found = accounts
                    .store
                    .session_by_token(&token_sha256)
                    .await
                    .map_err(|e| Problem::internal(e).into_response())?;
                if let Some((session, user)) = &found {
                    accounts.sessions.put(ticket, session, user, now);
                }
                found
            }
        };
        let refuse = |reason: &str, detail: &str| {
            accounts
                .metrics
                .sessions_ended
                .with_label_values(&[reason])
                .inc();
            unauthorized("invalid-token", detail)
        };
        let Some((session, user)) = found else {
            return Err(refuse("unknown_token", "unknown or forged token"));
        };
        if session.revoked_at.is_some() {
            return Err(refuse("revoked", "the session has ended; log in again"));
        }
        if now >= session.expires_at {
            return Err(refuse("expired", "the session has expired; log in again"));
        }
        if now - session.last_seen_at >= accounts.settings.session_idle {
            let _ = accounts
                .store
                .revoke_session(&user.id, &session.id, now, "idle")
                .await;
            accounts.sessions.forget_user(&user.id);
            return Err(refuse(
                "idle",
                "the session expired after inactivity; log in again",
            ));
        }
        if user.disabled {
            return Err(refuse("disabled", "the account is disabled"));
        }
        if (now - session.last_seen_at).num_seconds() >= TOUCH_EVERY_S {
            accounts
                .store
                .touch_session(&session.id, now)
                .await
                .map_err(|e| Problem::internal(e).into_response())?;
            accounts.sessions.touched(&token_sha256, now);
        }
        Ok(Caller { user, session })
    }
}

impl Caller {
    /// 403 `forbidden` unless the caller's role includes `role`.
    pub(crate) fn require(&self, role: Role) -> Result<(), Problem> {
        if self.user.role.includes(role) {
            Ok(())
        } else {
            Err(
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                    .with_detail(format!("this needs the {role} role")),
            )
        }
    }
}

/// A registration.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    /// The e-mail address (the login).
    email: String,
    /// The password (rules in docs/accounts.md).
    password: String,
    /// The name shown.
    #[serde(default)]
    display_name: String,
}

/// The same answer for new and known addresses.
#[derive(Serialize, utoipa::ToSchema)]
struct Accepted {
    /// Always `accepted`.
    status: &'static str,
    /// What to do next.
    detail: &'static str,
}

/// Registers a driver account; answers alike whether or not the address has one.
#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = RegisterBody,
    responses(
        (status = 202, description = "Accepted: log in with the account", body = Accepted),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid e-mail, weak password, bad display name or body shape (`invalid-account-data`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn register(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let invalid = |error: AccountError| {
        accounts
            .metrics
            .registrations
            .with_label_values(&["invalid"])
            .inc();
        weak_input(error)
    };
    let email = Email::parse(&body.email).map_err(invalid)?;
    check_password(&body.password, Some(&email)).map_err(invalid)?;
    if body.display_name.chars().count() > 100 || body.display_name.chars().any(char::is_control) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-account-data",
            "Invalid account data",
        )
        .with_detail("display_name: at most 100 characters, no control characters"));
    }
    // The same work and the same answer whether or not the address has an account.
    let outcome = match accounts
        .create_user(&email, &body.password, Role::Driver, &body.display_name)
        .await
    {
        Ok(_) => "created",
        Err(problem) if problem.status == StatusCode::CONFLICT.as_u16() => "existing",
        Err(problem) => return Err(problem),
    };
    accounts
        .metrics
        .registrations
        .with_label_values(&[outcome])
        .inc();
    tracing::info!(outcome, "registration");
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            status: "accepted",
            detail: "If this address can be used, its account is ready: log in with it.",
        }),
    )
        .into_response())
}

/// A login.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    /// The e-mail address.
    email: String,
    /// The password.
    password: String,
}

/// An account.
#[derive(Serialize, utoipa::ToSchema)]
struct UserOut<'a> {
    /// Account id.
    id: &'a str,
    /// E-mail address.
    email: &'a str,
    /// Role.
    role: Role,
    /// The name shown.
    display_name: &'a str,
    /// When it was created.
    created_at: DateTime<Utc>,
}

fn user_out(user: &User) -> UserOut<'_> {
    UserOut {
        id: &user.id,
        email: user.email.as_str(),
        role: user.role,
        display_name: &user.display_name,
        created_at: user.created_at,
    }
}

/// A new session.
#[derive(Serialize, utoipa::ToSchema)]
struct LoginOut<'a> {
    /// The session token, shown once: send it as `Authorization: Bearer <token>`.
    token: String,
    /// Always `Bearer`.
    token_type: &'static str,
    /// The session id (for `DELETE /api/v1/me/sessions/{id}`).
    session_id: String,
    /// The session ends at this time at the latest.
    expires_at: DateTime<Utc>,
    /// The session ends after this many seconds without a request.
    idle_timeout_s: i64,
    /// The account.
    user: UserOut<'a>,
}

fn bad_credentials() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Invalid credentials",
    )
    .with_detail("the e-mail or the password is wrong")
}

/// Logs in: a new session and its bearer token.
#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Logged in", body = LoginOut),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong e-mail or password, or disabled account (`invalid-credentials`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Wrong body shape (`invalid-body`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed logins (`too-many-attempts`)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait"))),
    )
)]
async fn login(
    State(state): State<ApiState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let ip = addr.ip();
    let now = accounts.clock.now();
    // The limiter's key: the normalised address, or the raw text for a malformed one, so
    // both are limited alike.
    let email = Email::parse(&body.email).ok();
    let key = email.as_ref().map_or_else(
        || body.email.trim().to_lowercase(),
        |e| e.as_str().to_owned(),
    );
    if let Some(retry) = accounts.limiter.check(&key, ip, now, &accounts.settings) {
        accounts
            .metrics
            .logins
            .with_label_values(&["rate_limited"])
            .inc();
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-attempts",
            "Too many attempts",
        )
        .with_detail("too many failed logins; wait before trying again")
        .into_response();
        if let Ok(value) = HeaderValue::from_str(&retry.as_secs().max(1).to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return Ok(response);
    }
    let user = match &email {
        Some(email) => accounts
            .store
            .user_by_email(email)
            .await
            .map_err(Problem::internal)?,
        None => None,
    };
    // Verify against the account's hash, or the dummy, so both take the same time.
    let password_ok = accounts
        .hasher
        .verify(
            body.password.chars().take(1024).collect(),
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await
        .map_err(Problem::internal)?;
    let user = match user {
        Some(user) if password_ok && !user.disabled => user,
        found => {
            let outcome = match found {
                None => "unknown_account",
                Some(user) if user.disabled && password_ok => "disabled",
                Some(_) => "wrong_password",
            };
            accounts.limiter.failed(&key, ip, now);
            accounts.metrics.logins.with_label_values(&[outcome]).inc();
            return Err(bad_credentials());
        }
    };
    accounts.limiter.succeeded(&key, ip, now);
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = encode_token(&raw);
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let session = SessionRow {
        id: random_id(),
        user_id: user.id.clone(),
        token_sha256: sha256(&token),
        created_at: now,
        last_seen_at: now,
        expires_at: now + accounts.settings.session_absolute,
        user_agent,
        ip: ip.to_string(),
        revoked_at: None,
        revoked_reason: None,
    };
    accounts
        .store
        .create_session(&session)
        .await
        .map_err(Problem::internal)?;
    accounts.metrics.logins.with_label_values(&["ok"]).inc();
    Ok(Json(LoginOut {
        token,
        token_type: "Bearer",
        session_id: session.id.clone(),
        expires_at: session.expires_at,
        idle_timeout_s: accounts.settings.session_idle.num_seconds(),
        user: user_out(&user),
    })
    .into_response())
}

/// Ends the calling session.
#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
    )
)]
async fn logout(State(state): State<ApiState>, caller: Caller) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    accounts
        .store
        .revoke_session(
            &caller.user.id,
            &caller.session.id,
            accounts.clock.now(),
            "logout",
        )
        .await
        .map_err(Problem::internal)?;
    accounts.sessions.forget_user(&caller.user.id);
    accounts
        .metrics
        .sessions_ended
        .with_label_values(&["logout"])
        .inc();
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The calling account.
#[utoipa::path(
    get,
    path = "/api/v1/me",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = UserOut),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
    )
)]
async fn me(caller: Caller) -> Response {
    Json(user_out(&caller.user)).into_response()
}

/// A password change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    /// The password now.
    current_password: String,
    /// The new password (rules in docs/accounts.md).
    new_password: String,
}

/// The password changed.
#[derive(Serialize, utoipa::ToSchema)]
struct PasswordChanged {
    /// Sessions other than the calling one, now ended.
    other_sessions_ended: u64,
}

/// Changes the password and ends the other sessions.
#[utoipa::path(
    post,
    path = "/api/v1/me/password",
    tag = "auth",
    request_body = PasswordBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = PasswordChanged),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "The current password is wrong (`wrong-password`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Weak new password or wrong body shape (`invalid-account-data`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn change_password(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let ok = accounts
        .hasher
        .verify(
            body.current_password.chars().take(1024).collect(),
            Some(caller.user.password_hash.clone()),
        )
        .await
        .map_err(Problem::internal)?;
    if !ok {
        return Err(
            Problem::new(StatusCode::FORBIDDEN, "wrong-password", "Wrong password")
                .with_detail("the current password is wrong"),
        );
    }
    check_password(&body.new_password, Some(&caller.user.email)).map_err(weak_input)?;
    let hash = accounts
        .hasher
        .hash(body.new_password)
        .await
        .map_err(Problem::internal)?;
    let ended = accounts
        .store
        .set_password(
            &caller.user.id,
            &hash,
            accounts.clock.now(),
            Some(&caller.session.id),
        )
        .await
        .map_err(Problem::internal)?;
    accounts.sessions.forget_user(&caller.user.id);
    accounts
        .metrics
        .sessions_ended
        .with_label_values(&["password_changed"])
        .inc_by(ended);
    Ok(Json(PasswordChanged {
        other_sessions_ended: ended,
    })
    .into_response())
}

/// An active session.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionOut<'a> {
    /// Session id.
    id: &'a str,
    /// Whether it is the calling session.
    current: bool,
    /// Login time.
    created_at: DateTime<Utc>,
    /// Last request (to the minute).
    last_seen_at: DateTime<Utc>,
    /// Ends at this time at the latest.
    expires_at: DateTime<Utc>,
    /// The login's User-Agent.
    user_agent: &'a str,
    /// The login's client address.
    ip: &'a str,
}

/// The caller's active sessions.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionList<'a> {
    /// The sessions.
    sessions: Vec<SessionOut<'a>>,
}

/// The caller's active sessions.
#[utoipa::path(
    get,
    path = "/api/v1/me/sessions",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The sessions", body = SessionList),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
    )
)]
async fn sessions(State(state): State<ApiState>, caller: Caller) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let now = accounts.clock.now();
    let rows = accounts
        .store
        .active_sessions(&caller.user.id, now)
        .await
        .map_err(Problem::internal)?;
    let idle = accounts.settings.session_idle;
    let sessions = rows
        .iter()
        .filter(|s| now - s.last_seen_at < idle)
        .map(|s| SessionOut {
            id: &s.id,
            current: s.id == caller.session.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            user_agent: &s.user_agent,
            ip: &s.ip,
        })
        .collect();
    Ok(Json(SessionList { sessions }).into_response())
}

/// Ends one of the caller's sessions.
#[utoipa::path(
    delete,
    path = "/api/v1/me/sessions/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "Session id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Ended"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 404, description = "No such active session of the caller (`not-found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revoke_session(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let revoked = accounts
        .store
        .revoke_session(&caller.user.id, &id, accounts.clock.now(), "revoked")
        .await
        .map_err(Problem::internal)?;
    if revoked {
        accounts.sessions.forget_user(&caller.user.id);
        accounts
            .metrics
            .sessions_ended
            .with_label_values(&["revoked"])
            .inc();
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found("no such active session of yours"))
    }
}

/// A vehicle to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct VehicleBody {
    /// Licence plate.
    plate: String,
    /// Vehicle class.
    class: VehicleClass,
    /// Electric (may use charging spots).
    #[serde(default)]
    ev: bool,
    /// Holds an accessible parking permit.
    #[serde(default)]
    accessible_permit: bool,
    /// The driver's own name for it (at most 50 characters).
    #[serde(default)]
    label: String,
}

/// A registered vehicle.
#[derive(Serialize, utoipa::ToSchema)]
struct VehicleOut<'a> {
    /// Vehicle id (`vehicle_id` of a reservation).
    id: &'a str,
    /// Licence plate, normalised.
    plate: &'a str,
    /// Vehicle class.
    class: VehicleClass,
    /// Electric.
    ev: bool,
    /// Holds an accessible parking permit.
    accessible_permit: bool,
    /// The vehicle type availability and allocation use.
    vehicle_type: VehicleType,
    /// The driver's own name for it.
    label: &'a str,
    /// When it was registered.
    created_at: DateTime<Utc>,
}

fn vehicle_out(v: &VehicleRow) -> VehicleOut<'_> {
    VehicleOut {
        id: &v.id,
        plate: v.plate.as_str(),
        class: v.profile.class,
        ev: v.profile.ev,
        accessible_permit: v.profile.accessible_permit,
        vehicle_type: v.profile.vehicle_type(),
        label: &v.label,
        created_at: v.created_at,
    }
}

/// The caller's vehicles.
#[derive(Serialize, utoipa::ToSchema)]
struct VehicleList<'a> {
    /// The vehicles.
    vehicles: Vec<VehicleOut<'a>>,
}

/// Most vehicles one driver may register.
const MAX_VEHICLES: usize = 20;

/// The caller's vehicles.
#[utoipa::path(
    get,
    path = "/api/v1/me/vehicles",
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The vehicles", body = VehicleList),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
    )
)]
async fn list_vehicles(State(state): State<ApiState>, caller: Caller) -> Result<Response, Problem> {
    let rows = state
        .accounts
        .store
        .vehicles(&caller.user.id)
        .await
        .map_err(Problem::internal)?;
    Ok(Json(VehicleList {
        vehicles: rows.iter().map(vehicle_out).collect(),
    })
    .into_response())
}

/// Registers a vehicle of the caller.
#[utoipa::path(
    post,
    path = "/api/v1/me/vehicles",
    tag = "auth",
    request_body = VehicleBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = VehicleOut),
        (status = 400, description = "Malformed JSON (`malformed-json`)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large (`body-too-large`)", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON (`json-required`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 409, description = "Duplicate plate or too many vehicles (`duplicate-vehicle`, `too-many-vehicles`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid plate, profile or label, or wrong body shape (`invalid-account-data`, `invalid-body`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn add_vehicle(
    State(state): State<ApiState>,
    caller: Caller,
    ApiJson(body): ApiJson<VehicleBody>,
) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let plate = Plate::parse(&body.plate).map_err(weak_input)?;
    let profile = VehicleProfile {
        class: body.class,
        ev: body.ev,
        accessible_permit: body.accessible_permit,
    };
    profile.validate().map_err(weak_input)?;
    if body.label.chars().count() > 50 || body.label.chars().any(char::is_control) {
        return Err(weak_input(AccountError::InvalidPlate)
            .with_detail("label: at most 50 characters, no control characters"));
    }
    let existing = accounts
        .store
        .vehicles(&caller.user.id)
        .await
        .map_err(Problem::internal)?;
    if existing.len() >= MAX_VEHICLES {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "too-many-vehicles",
            "Too many vehicles",
        )
        .with_detail(format!("at most {MAX_VEHICLES} vehicles per account")));
    }
    let vehicle = VehicleRow {
        id: random_id(),
        user_id: caller.user.id.clone(),
        plate,
        profile,
        label: body.label,
        created_at: accounts.clock.now(),
    };
    let added = accounts.store.add_vehicle(&vehicle).await;
    accounts.sessions.forget_vehicles(&caller.user.id);
    match added {
        Ok(()) => Ok((StatusCode::CREATED, Json(vehicle_out(&vehicle))).into_response()),
        Err(StoreError::Conflict(_)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "duplicate-vehicle",
            "Duplicate vehicle",
        )
        .with_detail("you have a vehicle with this plate")),
        Err(error) => Err(Problem::internal(error)),
    }
}

/// Removes a vehicle of the caller.
#[utoipa::path(
    delete,
    path = "/api/v1/me/vehicles/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "Vehicle id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 404, description = "No such vehicle of the caller (`not-found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn delete_vehicle(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let accounts = &state.accounts;
    let deleted = accounts
        .store
        .delete_vehicle(&caller.user.id, &id)
        .await
        .map_err(Problem::internal)?;
    accounts.sessions.forget_vehicles(&caller.user.id);
    if deleted {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(Problem::not_found("no such vehicle of yours"))
    }
}

/// An account as the admin sees it.
#[derive(Serialize, utoipa::ToSchema)]
struct AdminUser<'a> {
    #[serde(flatten)]
    user: UserOut<'a>,
    /// Whether it is disabled.
    disabled: bool,
}

/// Every account.
#[derive(Serialize, utoipa::ToSchema)]
struct AdminUsers<'a> {
    /// The accounts.
    users: Vec<AdminUser<'a>>,
}

/// Every account (admin only).
#[utoipa::path(
    get,
    path = "/api/v1/admin/users",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The accounts", body = AdminUsers),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "Needs the admin role (`forbidden`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn admin_users(State(state): State<ApiState>, caller: Caller) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    let users = state
        .accounts
        .store
        .users()
        .await
        .map_err(Problem::internal)?;
    Ok(Json(AdminUsers {
        users: users
            .iter()
            .map(|u| AdminUser {
                user: user_out(u),
                disabled: u.disabled,
            })
            .collect(),
    })
    .into_response())
}

async fn admin_set_disabled(
    state: &ApiState,
    caller: &Caller,
    id: &str,
    disabled: bool,
) -> Result<Response, Problem> {
    caller.require(Role::Admin)?;
    if disabled && id == caller.user.id {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "self-disable",
            "Cannot disable yourself",
        )
        .with_detail("another admin must disable this account"));
    }
    let accounts = &state.accounts;
    let found = accounts
        .store
        .set_user_disabled(id, disabled, accounts.clock.now())
        .await
        .map_err(Problem::internal)?;
    accounts.sessions.forget_user(id);
    if !found {
        return Err(Problem::not_found("no such account"));
    }
    tracing::info!(admin = %caller.user.id, account = %id, disabled, "account switched");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Disables an account and ends its sessions (admin only).
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/disable",
    tag = "admin",
    params(("id" = String, Path, description = "Account id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Disabled"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "Needs the admin role (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (`not-found`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot disable themself (`self-disable`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn admin_disable(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    admin_set_disabled(&state, &caller, &id, true).await
}

/// Enables an account again (admin only).
#[utoipa::path(
    post,
    path = "/api/v1/admin/users/{id}/enable",
    tag = "admin",
    params(("id" = String, Path, description = "Account id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Enabled"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "Needs the admin role (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account (`not-found`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn admin_enable(
    State(state): State<ApiState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    admin_set_disabled(&state, &caller, &id, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn the_limiter_refuses_after_the_limits_and_spares_known_addresses() {
        let settings = AuthSettings::default();
        let limiter = LoginLimiter::default();
        let home: IpAddr = [10, 0, 0, 1].into();
        let attacker: IpAddr = [192, 0, 2, 7].into();
        // The real user logged in from home once.
        limiter.succeeded("ana@example.com", home, t(0));
        // An attacker fails 5 times from one address: that pair is limited...
        for i in 0..5 {
            assert!(
                limiter
                    .check("ana@example.com", attacker, t(i), &settings)
                    .is_none()
            );
            limiter.failed("ana@example.com", attacker, t(i));
        }
        let retry = limiter.check("ana@example.com", attacker, t(10), &settings);
        assert!(
            retry.is_some_and(|r| r.as_secs() > 800 && r.as_secs() <= 900),
            "{retry:?}"
        );
        // ...the real user at home is not.
        assert!(
            limiter
                .check("ana@example.com", home, t(10), &settings)
                .is_none()
        );
        // Many addresses spraying the account trip the per-account limit, but not for home.
        for i in 0..60u8 {
            limiter.failed("ana@example.com", [198, 51, 100, i].into(), t(20));
        }
        assert!(
            limiter
                .check("ana@example.com", [203, 0, 113, 1].into(), t(30), &settings)
                .is_some()
        );
        assert!(
            limiter
                .check("ana@example.com", home, t(30), &settings)
                .is_none()
        );
        // After the window everything is forgiven.
        assert!(
            limiter
                .check("ana@example.com", attacker, t(20 + 901), &settings)
                .is_none()
        );
        limiter.sweep(t(2_000), settings.failure_window);
        assert!(limiter.state.lock().unwrap().per_ip.is_empty());
    }

    #[test]
    fn the_owasp_floor() {
        assert!(Argon2Cost::OWASP.meets_owasp());
        assert!(
            !Argon2Cost {
                memory_kib: 4096,
                iterations: 3,
                parallelism: 1
            }
            .meets_owasp()
        );
    }
}
