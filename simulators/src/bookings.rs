//! Simulated drivers who book ahead through parkd's REST API, for the gate simulator.
//!
//! A driver is a real account: registered (`POST /api/v1/auth/register`), logged in
//! (`POST /api/v1/auth/login`, the token kept and renewed on a 401) and with one vehicle
//! (`POST /api/v1/me/vehicles`: its plate, class and EV / accessible-permit flags). Drivers are
//! signed up when needed, one per booking at a time, up to [`BookingConfig::max_drivers`];
//! a driver whose car has left books again later. Each run signs up drivers of its own
//! (e-mail `driver-{run}-{n}@sim.example.com`, a random password that passes the platform's
//! policy and is never shown), so runs never share an account.
//!
//! A booking is `POST /api/v1/reservations` with an `Idempotency-Key` of its own, repeated
//! with the same key after a timeout, a server error or `request-in-flight`, as the app does:
//! it never books twice. Reservation times are real (the platform's clock); the gate
//! simulator converts its simulated lead and stay, and books at least
//! [`BookingConfig::min_booking`] (the platform's `reservations.min_duration_min`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use parkd_core::account::{Email, check_password};
use parkd_core::ids::{LotId, SpotId};
use parkd_core::vehicle::{SpotKind, VehicleType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::SimError;
use crate::http::{Answer, Call, HttpEndpoint, send, send_retrying};

/// How drivers book (used when [`crate::gates::GateSimConfig::api`] is set).
#[derive(Debug, Clone)]
pub struct BookingConfig {
    /// Share of arriving cars whose driver booked ahead, `0..=1`. Default 0.15; 0 turns
    /// bookings off.
    pub share: f64,
    /// How far ahead they book, in simulated seconds (uniform in this range). Default 15 min
    /// to 2 h.
    pub lead_s: (f64, f64),
    /// Shortest reservation the platform accepts (`reservations.min_duration_min`), real
    /// time. Default 15 min.
    pub min_booking: Duration,
    /// Share of drivers on a reservation who show its code (QR) at the entry; the others are
    /// recognised by their plate. Default 0.5.
    pub code_share: f64,
    /// Most driver accounts a run signs up. Default 100.
    pub max_drivers: usize,
    /// API calls at once. Default 4.
    pub concurrency: usize,
    /// Timeout of one API call. Default 10 s.
    pub request_timeout: Duration,
    /// Attempts of one API call (timeouts, server errors). Default 3.
    pub attempts: u32,
}

impl Default for BookingConfig {
    fn default() -> Self {
        Self {
            share: 0.15,
            lead_s: (15.0 * 60.0, 2.0 * 3600.0),
            min_booking: Duration::from_secs(15 * 60),
            code_share: 0.5,
            max_drivers: 100,
            concurrency: 4,
            request_timeout: Duration::from_secs(10),
            attempts: 3,
        }
    }
}

impl BookingConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        let share_ok = |share: f64| share.is_finite() && (0.0..=1.0).contains(&share);
        if !share_ok(self.share) || !share_ok(self.code_share) {
            return Err(SimError::config("booking shares must be within 0..=1"));
        }
        let (low, high) = self.lead_s;
        if !(low.is_finite() && high.is_finite() && 0.0 <= low && low <= high) {
            return Err(SimError::config(
                "the booking lead must be a range of non-negative seconds",
            ));
        }
        if self.min_booking.is_zero()
            || self.max_drivers == 0
            || self.concurrency == 0
            || self.attempts == 0
            || self.request_timeout.is_zero()
        {
            return Err(SimError::config(
                "min_booking, max_drivers, concurrency, attempts and request_timeout must be positive",
            ));
        }
        Ok(())
    }
}

/// What the drivers did through the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BookingReport {
    /// Driver accounts signed up (each with one vehicle).
    pub drivers: u64,
    /// Reservations made.
    pub booked: u64,
    /// Bookings the platform refused, by problem type (`no-spot-available`, ...).
    pub refused: BTreeMap<String, u64>,
    /// Bookings that failed (the API unreachable, server errors after every attempt).
    pub failed: u64,
    /// Cars that wanted to book but came as walk-ins: every driver busy and the account cap
    /// reached, or signing up failed.
    pub walked_in: u64,
    /// Cars on a reservation that showed its code at the entry (the others: by plate).
    pub showed_code: u64,
    /// Reservations cancelled through the API at the end of the run because their car was
    /// still to come.
    pub cancelled_at_end: u64,
}

/// A reservation made for a driver's car.
#[derive(Debug, Clone)]
pub(crate) struct Booked {
    /// The reservation.
    pub id: String,
    /// The driver, to hand back with [`Office::release`].
    pub driver: usize,
    /// The car's plate.
    pub plate: String,
    /// Its vehicle type.
    pub vehicle: VehicleType,
    /// The code for the gate.
    pub code: String,
    /// The spot reserved.
    pub spot: SpotId,
}

/// Why no reservation was made.
#[derive(Debug)]
pub(crate) enum NotBooked {
    /// No driver could book (all busy at the cap, or signing up failed).
    NoDriver,
    /// The platform said no (`no-spot-available`, `invalid-times`, ...).
    Refused(String),
    /// The API failed.
    Failed(String),
}

#[derive(Debug)]
struct Driver {
    email: String,
    password: String,
    token: String,
    vehicle_id: String,
    plate: String,
    vehicle: VehicleType,
    busy: bool,
}

/// The drivers of one run and their API.
#[derive(Debug)]
pub(crate) struct Office {
    api: HttpEndpoint,
    config: BookingConfig,
    lot: LotId,
    run: String,
    drivers: Mutex<Vec<Option<Driver>>>,
    /// Reservations whose car has not come to the gate yet, with their driver.
    pending: Mutex<HashMap<String, usize>>,
    rng: Mutex<StdRng>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// RFC 3339 in whole seconds, as the API takes it.
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Office {
    pub(crate) fn new(
        api: HttpEndpoint,
        config: BookingConfig,
        lot: LotId,
        run: String,
        seed: u64,
    ) -> Self {
        Self {
            api,
            config,
            lot,
            run,
            drivers: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    pub(crate) fn config(&self) -> &BookingConfig {
        &self.config
    }

    /// Driver accounts signed up so far.
    pub(crate) fn drivers(&self) -> u64 {
        lock(&self.drivers).iter().flatten().count() as u64
    }

    /// One call, repeated on timeouts, connection errors, server errors and
    /// `request-in-flight` (same idempotency key, if any).
    async fn call(&self, call: Call<'_>) -> Result<Answer, String> {
        send_retrying(
            &self.api,
            call,
            self.config.request_timeout,
            self.config.attempts,
        )
        .await
    }

    /// Reserves for a driver of `vehicle` from `starts_at` to `ends_at` (real times). An idle
    /// driver with such a vehicle books, or a new one is signed up with the plate from
    /// `fresh_plate`.
    pub(crate) async fn book(
        &self,
        vehicle: VehicleType,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        booking_no: u64,
        fresh_plate: impl FnMut() -> String,
    ) -> Result<Booked, NotBooked> {
        let driver = match self.take_idle(vehicle) {
            Some(driver) => driver,
            None => self.sign_up(vehicle, fresh_plate).await?,
        };
        let result = self.reserve(driver, starts_at, ends_at, booking_no).await;
        if result.is_err() {
            self.release(driver);
        }
        result
    }

    /// The reservation's car is at the gate: nothing to cancel at the end.
    pub(crate) fn arrived(&self, reservation: &str) {
        lock(&self.pending).remove(reservation);
    }

    /// At the end of a run: the drivers still to come cancel their reservations
    /// (`POST /api/v1/reservations/{id}/cancel`), so that their spots are not held for cars
    /// that will never come; at most `within`. Returns how many were cancelled.
    pub(crate) async fn cancel_pending(&self, within: Duration) -> u64 {
        let pending: Vec<(String, usize)> = lock(&self.pending).drain().collect();
        let mut cancelled = 0;
        let cancel_all = async {
            for (reservation, driver) in pending {
                let token = lock(&self.drivers)
                    .get(driver)
                    .and_then(Option::as_ref)
                    .map(|driver| driver.token.clone());
                let Some(token) = token else {
                    continue;
                };
                let path = format!("/api/v1/reservations/{reservation}/cancel");
                let body = json!({});
                let call = Call::post(&path, &body).token(&token);
                match send(&self.api, call, self.config.request_timeout).await {
                    Ok(answer) if answer.status == 200 => cancelled += 1,
                    Ok(answer) => {
                        tracing::debug!(%reservation, refused = %answer.problem(), "not cancelled")
                    }
                    Err(error) => tracing::debug!(%reservation, %error, "not cancelled"),
                }
            }
        };
        if tokio::time::timeout(within, cancel_all).await.is_err() {
            tracing::warn!("not every pending reservation could be cancelled in time");
        }
        cancelled
    }

    /// The driver's car has left: they may book again.
    pub(crate) fn release(&self, driver: usize) {
        if let Some(Some(driver)) = lock(&self.drivers).get_mut(driver) {
            driver.busy = false;
        }
    }

    fn take_idle(&self, vehicle: VehicleType) -> Option<usize> {
        let mut drivers = lock(&self.drivers);
        let (index, driver) = drivers
            .iter_mut()
            .enumerate()
            .filter_map(|(index, slot)| slot.as_mut().map(|driver| (index, driver)))
            .find(|(_, driver)| !driver.busy && driver.vehicle == vehicle)?;
        driver.busy = true;
        Some(index)
    }

    /// Signs up a driver (account, login, vehicle) and returns it busy.
    async fn sign_up(
        &self,
        vehicle: VehicleType,
        mut fresh_plate: impl FnMut() -> String,
    ) -> Result<usize, NotBooked> {
        // Take a slot first, so that concurrent sign-ups respect the cap.
        let index = {
            let mut drivers = lock(&self.drivers);
            if drivers.len() >= self.config.max_drivers {
                return Err(NotBooked::NoDriver);
            }
            drivers.push(None);
            drivers.len() - 1
        };
        let email = format!("driver-{}-{}@sim.example.com", self.run, index + 1);
        let password = self.password(&email);
        let signed = async {
            let credentials = json!({"email": email, "password": password});
            let register = json!({
                "email": email,
                "password": password,
                "display_name": format!("Simulated driver {}", index + 1),
            });
            let answer = self
                .call(Call::post("/api/v1/auth/register", &register))
                .await?;
            if answer.status != 202 {
                return Err(format!("register: {}", answer.problem()));
            }
            let token = self.login(&credentials).await?;
            let (class, ev, permit) = profile(vehicle);
            let mut last = String::new();
            // A plate another account already registered is refused; one more try.
            for _ in 0..2 {
                let plate = fresh_plate();
                let body = json!({
                    "plate": plate,
                    "class": class,
                    "ev": ev,
                    "accessible_permit": permit,
                    "label": "simulated",
                });
                let answer = self
                    .call(Call::post("/api/v1/me/vehicles", &body).token(&token))
                    .await?;
                match answer.body.get("id").and_then(Value::as_str) {
                    Some(id) if answer.status == 201 => {
                        return Ok(Driver {
                            email: email.clone(),
                            password: password.clone(),
                            token,
                            vehicle_id: id.to_owned(),
                            plate,
                            vehicle,
                            busy: true,
                        });
                    }
                    _ => last = format!("add vehicle: {}", answer.problem()),
                }
            }
            Err(last)
        };
        match signed.await {
            Ok(driver) => {
                tracing::debug!(email = %driver.email, plate = %driver.plate, %vehicle, "driver signed up");
                if let Some(slot) = lock(&self.drivers).get_mut(index) {
                    *slot = Some(driver);
                }
                Ok(index)
            }
            Err(error) => {
                // The slot stays empty (and counts towards the cap): a sign-up that failed
                // once is likely to fail again.
                tracing::warn!(%error, "a simulated driver could not sign up");
                Err(NotBooked::NoDriver)
            }
        }
    }

    async fn login(&self, credentials: &Value) -> Result<String, String> {
        let answer = self
            .call(Call::post("/api/v1/auth/login", credentials))
            .await?;
        match answer.body.get("token").and_then(Value::as_str) {
            Some(token) if answer.status == 200 => Ok(token.to_owned()),
            _ => Err(format!("login: {}", answer.problem())),
        }
    }

    /// A password the policy accepts: four groups of random letters.
    fn password(&self, email: &str) -> String {
        let email = Email::parse(email).ok();
        let mut rng = lock(&self.rng);
        loop {
            let password = (0..4)
                .map(|_| {
                    (0..5)
                        .map(|_| char::from(b'a' + rng.gen_range(0..26u8)))
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(" ");
            if check_password(&password, email.as_ref()).is_ok() {
                return password;
            }
        }
    }

    async fn reserve(
        &self,
        driver: usize,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        booking_no: u64,
    ) -> Result<Booked, NotBooked> {
        let Some((token, vehicle_id, plate, vehicle)) = ({
            let drivers = lock(&self.drivers);
            drivers.get(driver).and_then(Option::as_ref).map(|d| {
                (
                    d.token.clone(),
                    d.vehicle_id.clone(),
                    d.plate.clone(),
                    d.vehicle,
                )
            })
        }) else {
            return Err(NotBooked::NoDriver);
        };
        let key = format!("sim-{}-{booking_no}", self.run);
        let body = json!({
            "lot": self.lot,
            "vehicle_id": vehicle_id,
            "starts_at": rfc3339(starts_at),
            "ends_at": rfc3339(ends_at),
        });
        let mut token = token;
        for _ in 0..2 {
            let answer = self
                .call(
                    Call::post("/api/v1/reservations", &body)
                        .token(&token)
                        .idempotency_key(&key),
                )
                .await
                .map_err(NotBooked::Failed)?;
            match answer.status {
                201 => {
                    let field = |name: &str| answer.body.get(name).and_then(Value::as_str);
                    let spot = field("spot").and_then(|spot| SpotId::parse(spot).ok());
                    return match (field("id"), field("code"), spot) {
                        (Some(id), Some(code), Some(spot)) => {
                            lock(&self.pending).insert(id.to_owned(), driver);
                            Ok(Booked {
                                id: id.to_owned(),
                                driver,
                                plate,
                                vehicle,
                                code: code.to_owned(),
                                spot,
                            })
                        }
                        _ => Err(NotBooked::Failed(
                            "a reservation without id, code or spot".into(),
                        )),
                    };
                }
                // The session ended (idle timeout, revoked): log in again, same key.
                401 => token = self.relogin(driver).await.map_err(NotBooked::Failed)?,
                _ => return Err(NotBooked::Refused(answer.problem())),
            }
        }
        Err(NotBooked::Failed("the token was refused twice".into()))
    }

    /// A payment as the driver (`path` is `/api/v1/.../payments`), with `key`; logs in again
    /// once after a 401 (same key).
    pub(crate) async fn pay(
        &self,
        driver: usize,
        path: &str,
        body: &Value,
        key: &str,
    ) -> Result<Answer, String> {
        let mut token = lock(&self.drivers)
            .get(driver)
            .and_then(Option::as_ref)
            .map(|driver| driver.token.clone())
            .ok_or("no such driver")?;
        for round in 0..2 {
            let call = Call::post(path, body).token(&token).idempotency_key(key);
            let answer = self.call(call).await?;
            if answer.status == 401 && round == 0 {
                token = self.relogin(driver).await?;
                continue;
            }
            return Ok(answer);
        }
        Err("the token was refused twice".into())
    }

    async fn relogin(&self, driver: usize) -> Result<String, String> {
        let credentials = {
            let drivers = lock(&self.drivers);
            let driver = drivers
                .get(driver)
                .and_then(Option::as_ref)
                .ok_or("no such driver")?;
            json!({"email": driver.email, "password": driver.password})
        };
        let token = self.login(&credentials).await?;
        if let Some(Some(slot)) = lock(&self.drivers).get_mut(driver) {
            slot.token = token.clone();
        }
        Ok(token)
    }
}

/// The lot's spot kinds (`GET /api/v1/lots/{lot}/spots`, one attempt), so that drivers who
/// park elsewhere pick a bay their vehicle may use.
pub(crate) async fn spot_kinds(
    api: &HttpEndpoint,
    lot: &LotId,
    timeout: Duration,
) -> Result<HashMap<SpotId, SpotKind>, String> {
    let path = format!("/api/v1/lots/{lot}/spots");
    let answer = send(api, Call::get(&path), timeout)
        .await
        .map_err(|error| format!("GET {path}: {error}"))?;
    if answer.status != 200 {
        return Err(format!("GET {path}: {}", answer.problem()));
    }
    let spots = answer
        .body
        .get("spots")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("GET {path}: no spots in the answer"))?;
    Ok(spots
        .iter()
        .filter_map(|spot| {
            let id = SpotId::parse(spot.get("id")?.as_str()?).ok()?;
            let kind = spot.get("kind")?.as_str()?.parse().ok()?;
            Some((id, kind))
        })
        .collect())
}

/// The vehicle a driver registers for a vehicle type: class, EV, accessible permit.
fn profile(vehicle: VehicleType) -> (&'static str, bool, bool) {
    match vehicle {
        VehicleType::Motorcycle => ("motorcycle", false, false),
        VehicleType::Compact => ("compact", false, false),
        VehicleType::Car => ("car", false, false),
        VehicleType::Van => ("van", false, false),
        VehicleType::Ev => ("car", true, false),
        VehicleType::Accessible => ("car", false, true),
    }
}

/// Plates in use in a run, so that no two cars inside share one.
#[derive(Debug, Default)]
pub(crate) struct Plates {
    used: Mutex<HashSet<String>>,
}

impl Plates {
    /// A plate no car of the run uses, e.g. `B-PK 2026`; held until [`Plates::release`].
    pub(crate) fn fresh(&self, rng: &mut impl Rng) -> String {
        let mut used = lock(&self.used);
        let mut plate = random_plate(rng);
        for _ in 0..100 {
            if used.insert(plate_key(&plate)) {
                return plate;
            }
            plate = random_plate(rng);
        }
        plate
    }

    /// The car has left.
    pub(crate) fn release(&self, plate: &str) {
        lock(&self.used).remove(&plate_key(plate));
    }
}

fn plate_key(plate: &str) -> String {
    plate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// A plate in the German style: district (1-3 letters), letters (1-2), digits (1-4).
pub(crate) fn random_plate(rng: &mut impl Rng) -> String {
    // No I, O or Q: readers confuse them with 1 and 0.
    const LETTERS: &[u8] = b"ABCDEFGHJKLMNPRSTUVWXYZ";
    fn letters(rng: &mut impl Rng, count: usize) -> String {
        (0..count)
            .map(|_| char::from(LETTERS[rng.gen_range(0..LETTERS.len())]))
            .collect()
    }
    let district_len = 1 + usize::from(rng.gen_bool(0.6)) + usize::from(rng.gen_bool(0.3));
    let district = letters(rng, district_len);
    let middle_len = 1 + usize::from(rng.gen_bool(0.7));
    let middle = letters(rng, middle_len);
    let digits = rng.gen_range(1..10_000u32);
    format!("{district}-{middle} {digits}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use parkd_core::account::Plate;

    #[test]
    fn plates_are_valid_and_distinct_while_in_use() {
        let mut rng = StdRng::seed_from_u64(3);
        let plates = Plates::default();
        let mut seen = HashSet::new();
        for _ in 0..2_000 {
            let plate = plates.fresh(&mut rng);
            let parsed = Plate::parse(&plate).unwrap();
            assert!(parsed.key().len() >= 3, "{plate}");
            assert!(seen.insert(parsed.key()), "{plate} twice");
        }
        let plate = random_plate(&mut rng);
        plates.release(&plate);
    }

    #[test]
    fn passwords_pass_the_platform_policy() {
        let office = Office::new(
            HttpEndpoint::new("127.0.0.1", 9),
            BookingConfig::default(),
            LotId::parse("lot").unwrap(),
            "run".into(),
            1,
        );
        let email = "driver-run-1@sim.example.com";
        for _ in 0..50 {
            let password = office.password(email);
            assert!(check_password(&password, Email::parse(email).ok().as_ref()).is_ok());
        }
    }

    #[test]
    fn profiles_give_back_the_vehicle_type() {
        use parkd_core::account::{VehicleClass, VehicleProfile};
        for vehicle in VehicleType::ALL {
            let (class, ev, accessible_permit) = profile(vehicle);
            let class: VehicleClass = serde_json::from_value(json!(class)).unwrap();
            let profile = VehicleProfile {
                class,
                ev,
                accessible_permit,
            };
            assert!(profile.validate().is_ok());
            assert_eq!(profile.vehicle_type(), vehicle);
        }
    }

    #[test]
    fn invalid_configurations_are_refused() {
        assert!(BookingConfig::default().validate().is_ok());
        for bad in [
            BookingConfig {
                share: 1.5,
                ..BookingConfig::default()
            },
            BookingConfig {
                lead_s: (10.0, 5.0),
                ..BookingConfig::default()
            },
            BookingConfig {
                max_drivers: 0,
                ..BookingConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
