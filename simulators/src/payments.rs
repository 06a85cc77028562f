//! Simulated drivers pay through parkd's REST API, for the gate simulator.
//!
//! - **In advance**: a share of the drivers who booked ([`PaymentConfig::advance_share`]) pay
//!   their reservation right after booking (`POST /api/v1/reservations/{id}/payments`) with
//!   their own account.
//! - **At the exit**: an exit gate that answers `deny` / `payment_required` names the parking
//!   session; the driver pays it (`POST /api/v1/sessions/{id}/payments`): a driver on a
//!   reservation in the app with their own account, a walk-in (who has no account) at the
//!   **pay station**, an operator account ([`PaymentConfig::pay_station`]). Then the car asks
//!   the gate again, with a new request id.
//!
//! Every payment carries an `Idempotency-Key` of its own and is repeated with the same key
//! after a timeout, a server error or `request-in-flight`, so it is never charged twice. A
//! share of the drivers ([`PaymentConfig::decline_share`]) first hand over a card the provider
//! declines (402 `payment-declined`) and then pay with another one, under a new key, as a
//! customer does. The cards are the built-in test provider's tokens; no card number is ever
//! sent.
//!
//! Payments are off unless the pay station's account is given: the standalone simulator
//! needs an operator account on the server; `parkd demo` creates one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::bookings::Office;
use crate::error::SimError;
use crate::http::{Answer, Call, HttpEndpoint, send_retrying};
use crate::mqtt::Login;

/// The test provider's token that pays (a Visa ending 4242).
pub const CARD_OK: &str = "tok_test_ok";
/// The test provider's token that is declined (`generic_decline`).
pub const CARD_DECLINED: &str = "tok_test_decline";

/// How drivers pay (with [`crate::gates::GateSimConfig::api`]).
#[derive(Debug, Clone)]
pub struct PaymentConfig {
    /// The pay station's operator account (e-mail, password): walk-ins pay their stay there.
    /// `None` (the default): nobody pays; on a lot with a tariff, cars that owe something at
    /// the exit are refused (`payment_required`) and their drivers press help.
    pub pay_station: Option<Login>,
    /// Share of drivers on a reservation who pay it in advance, right after booking, `0..=1`.
    /// Default 0.5; the others pay at the exit.
    pub advance_share: f64,
    /// Share of payments whose first card is declined; the driver then pays with another
    /// card under a new idempotency key. Default 0.1.
    pub decline_share: f64,
    /// The card (provider token) that pays. Default [`CARD_OK`].
    pub card: String,
    /// The card that is declined. Default [`CARD_DECLINED`].
    pub declined_card: String,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        Self {
            pay_station: None,
            advance_share: 0.5,
            decline_share: 0.1,
            card: CARD_OK.to_owned(),
            declined_card: CARD_DECLINED.to_owned(),
        }
    }
}

impl PaymentConfig {
    /// Whether drivers pay in this run (the pay station's account is given).
    pub fn enabled(&self) -> bool {
        self.pay_station.is_some()
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), SimError> {
        let share_ok = |share: f64| share.is_finite() && (0.0..=1.0).contains(&share);
        if !share_ok(self.advance_share) || !share_ok(self.decline_share) {
            return Err(SimError::config("payment shares must be within 0..=1"));
        }
        if self.card.trim().is_empty() || self.declined_card.trim().is_empty() {
            return Err(SimError::config("the payment cards must not be empty"));
        }
        if let Some(login) = &self.pay_station
            && (login.username.trim().is_empty() || login.password.is_empty())
        {
            return Err(SimError::config(
                "the pay station needs an e-mail and a password",
            ));
        }
        Ok(())
    }
}

/// What the drivers paid through the API.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PaymentReport {
    /// Reservations paid in advance, right after booking.
    pub paid_in_advance: u64,
    /// Stays paid when the exit gate asked for payment (in the app or at the pay station).
    pub paid_at_exit: u64,
    /// Of those, paid at the pay station (walk-ins).
    pub paid_at_pay_station: u64,
    /// Cards declined (the driver then tried another one).
    pub declined: u64,
    /// Payments that did not go through: refused, pending, the API unreachable, or no pay
    /// station for a walk-in. The car at the exit then left through the help button.
    pub failures: u64,
    /// Payments the platform answered `nothing-due` (paid meanwhile, or free).
    pub nothing_due: u64,
    /// Exits that opened on the request after a payment.
    pub exits_after_payment: u64,
    /// Amounts paid, in minor units, by currency.
    pub amount_minor: BTreeMap<String, i64>,
}

/// Who pays.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payer {
    /// A driver with an account (the office's index), in the app; falls back to the pay
    /// station if the stay is not theirs.
    Driver(usize),
    /// The pay station's operator account.
    Station,
}

/// How a payment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Paid: the amount, its currency, and whether the pay station paid.
    Paid {
        amount_minor: i64,
        currency: String,
        at_station: bool,
    },
    /// Nothing was due.
    NothingDue,
    /// Not paid.
    Failed(String),
}

/// One answer to a payment request.
#[derive(Debug)]
enum PayAnswer {
    Paid(Answer),
    NothingDue,
    Declined(String),
    Unauthorized,
    NotFound,
    Refused(String),
}

fn classify(answer: Answer) -> PayAnswer {
    match answer.status {
        201 => PayAnswer::Paid(answer),
        401 => PayAnswer::Unauthorized,
        402 => PayAnswer::Declined(answer.problem()),
        404 => PayAnswer::NotFound,
        409 if answer.problem() == "nothing-due" => PayAnswer::NothingDue,
        202 => PayAnswer::Refused("pending".into()),
        _ => PayAnswer::Refused(answer.problem()),
    }
}

/// The pay station's account, logged in when first needed and again after a 401.
#[derive(Debug)]
struct PayStation {
    login: Login,
    token: tokio::sync::Mutex<Option<String>>,
}

/// Pays for the drivers of one run.
#[derive(Debug)]
pub(crate) struct Cashier {
    api: HttpEndpoint,
    config: PaymentConfig,
    station: Option<PayStation>,
    run: String,
    timeout: Duration,
    attempts: u32,
    next: AtomicU64,
}

impl Cashier {
    /// `None` when payments are off.
    pub(crate) fn new(
        api: HttpEndpoint,
        config: PaymentConfig,
        run: String,
        timeout: Duration,
        attempts: u32,
    ) -> Option<Self> {
        let login = config.pay_station.clone()?;
        Some(Self {
            api,
            config,
            station: Some(PayStation {
                login,
                token: tokio::sync::Mutex::new(None),
            }),
            run,
            timeout,
            attempts,
            next: AtomicU64::new(0),
        })
    }

    pub(crate) fn config(&self) -> &PaymentConfig {
        &self.config
    }

    /// A fresh idempotency key: every payment attempt with a card has its own.
    fn key(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        format!("sim-{}-pay-{n}", self.run)
    }

    /// Pays what `path` (`/api/v1/.../payments`) asks for, as `payer`; with `decline_first`
    /// the first card is declined and the driver pays with the good one (a new key).
    /// Returns how it ended and how many cards were declined.
    pub(crate) async fn settle(
        &self,
        office: Option<&Office>,
        payer: Payer,
        path: &str,
        decline_first: bool,
    ) -> (Settled, u64) {
        let mut declined = 0;
        let cards = if decline_first {
            vec![
                self.config.declined_card.as_str(),
                self.config.card.as_str(),
            ]
        } else {
            vec![self.config.card.as_str()]
        };
        let mut last = String::from("no card tried");
        for card in cards {
            let key = self.key();
            let answer = match self.pay_as(office, payer, path, card, &key).await {
                Ok(answer) => answer,
                Err(error) => return (Settled::Failed(error), declined),
            };
            match answer {
                (PayAnswer::Paid(answer), at_station) => {
                    let amount_minor = answer
                        .body
                        .get("amount_minor")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    let currency = answer
                        .body
                        .get("currency")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_owned();
                    return (
                        Settled::Paid {
                            amount_minor,
                            currency,
                            at_station,
                        },
                        declined,
                    );
                }
                (PayAnswer::NothingDue, _) => return (Settled::NothingDue, declined),
                (PayAnswer::Declined(reason), _) => {
                    tracing::debug!(%path, %reason, "card declined; the driver tries another");
                    declined += 1;
                    last = format!("declined: {reason}");
                }
                (PayAnswer::Unauthorized, _) => {
                    return (Settled::Failed("not signed in".into()), declined);
                }
                (PayAnswer::NotFound, _) => {
                    return (Settled::Failed("no such stay".into()), declined);
                }
                (PayAnswer::Refused(problem), _) => {
                    return (Settled::Failed(problem), declined);
                }
            }
        }
        (Settled::Failed(last), declined)
    }

    /// One card, as `payer`: a driver whose stay is not theirs (404) goes to the pay station.
    async fn pay_as(
        &self,
        office: Option<&Office>,
        payer: Payer,
        path: &str,
        card: &str,
        key: &str,
    ) -> Result<(PayAnswer, bool), String> {
        let body = json!({ "payment_method": card });
        if let (Payer::Driver(driver), Some(office)) = (payer, office) {
            let answer = office.pay(driver, path, &body, key).await?;
            match classify(answer) {
                PayAnswer::NotFound if self.station.is_some() => {}
                answer => return Ok((answer, false)),
            }
        }
        self.station_pay(path, &body, key)
            .await
            .map(|answer| (answer, true))
    }

    async fn station_pay(&self, path: &str, body: &Value, key: &str) -> Result<PayAnswer, String> {
        let station = self.station.as_ref().ok_or("no pay station")?;
        for round in 0..2 {
            // The lock is held while logging in (one login at a time), not while paying.
            let current = {
                let mut token = station.token.lock().await;
                match token.as_ref() {
                    Some(current) if round == 0 => current.clone(),
                    _ => {
                        let fresh = self.station_login(&station.login).await?;
                        *token = Some(fresh.clone());
                        fresh
                    }
                }
            };
            let call = Call::post(path, body).token(&current).idempotency_key(key);
            let answer = send_retrying(&self.api, call, self.timeout, self.attempts).await?;
            match classify(answer) {
                PayAnswer::Unauthorized if round == 0 => {
                    let mut token = station.token.lock().await;
                    if token.as_deref() == Some(current.as_str()) {
                        *token = None;
                    }
                }
                answer => return Ok(answer),
            }
        }
        Ok(PayAnswer::Unauthorized)
    }

    async fn station_login(&self, login: &Login) -> Result<String, String> {
        let credentials = json!({"email": login.username, "password": login.password});
        let answer = send_retrying(
            &self.api,
            Call::post("/api/v1/auth/login", &credentials),
            self.timeout,
            self.attempts,
        )
        .await?;
        match answer.body.get("token").and_then(Value::as_str) {
            Some(token) if answer.status == 200 => Ok(token.to_owned()),
            _ => Err(format!("pay station login: {}", answer.problem())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payments_are_off_without_a_pay_station() {
        let config = PaymentConfig::default();
        assert!(!config.enabled());
        assert!(config.validate().is_ok());
        assert!(
            Cashier::new(
                HttpEndpoint::new("127.0.0.1", 9),
                config,
                "run".into(),
                Duration::from_secs(1),
                1
            )
            .is_none()
        );
        let on = PaymentConfig {
            pay_station: Some(Login::new("pay@example.com", "secret words here")),
            ..PaymentConfig::default()
        };
        assert!(on.enabled() && on.validate().is_ok());
        for bad in [
            PaymentConfig {
                advance_share: 1.5,
                ..on.clone()
            },
            PaymentConfig {
                decline_share: f64::NAN,
                ..on.clone()
            },
            PaymentConfig {
                pay_station: Some(Login::new("", "x")),
                ..on.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn answers_are_classified() {
        let answer = |status, kind: &str| Answer {
            status,
            body: json!({"type": format!("https://parkd.dev/problems/{kind}")}),
        };
        assert!(matches!(classify(answer(201, "x")), PayAnswer::Paid(_)));
        assert!(matches!(
            classify(answer(409, "nothing-due")),
            PayAnswer::NothingDue
        ));
        assert!(matches!(
            classify(answer(409, "amount-mismatch")),
            PayAnswer::Refused(_)
        ));
        assert!(matches!(
            classify(answer(402, "payment-declined")),
            PayAnswer::Declined(_)
        ));
        assert!(matches!(classify(answer(404, "x")), PayAnswer::NotFound));
        assert!(matches!(classify(answer(202, "x")), PayAnswer::Refused(_)));
    }
}
