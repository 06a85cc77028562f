//! The money ledger for operators: the CSV export of a period and its revenue per currency.
//!
//! Both read the append-only ledger (`PaymentStore::ledger_between`) page by page in append
//! order, [`PAGE`] entries at a time, each page after the last `seq` of the one before: the
//! export streams each page out as it arrives, so an export of years of entries never sits in
//! memory, and the revenue adds the pages up as they come. The operator's guide is
//! `docs/payments.md` ("Ledger export and revenue").
//!
//! The CSV is RFC 4180 (a header row, CRLF line ends, fields quoted when they hold `,`, `"`,
//! CR or LF, quotes doubled). A text field that a spreadsheet would take for a formula (it
//! starts with `=`, `+`, `-`, `@`, tab or CR) gets a leading `'`; the numeric columns (`seq`,
//! `amount_minor`, `amount`) never do, so a refund's `-12.50` stays a number.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Months, SecondsFormat, Utc};
use futures_util::StreamExt as _;
use parkd_core::account::Role;
use parkd_core::ids::LotId;
use parkd_core::tariff::Currency;
use parkd_store::{LedgerEntry, LedgerKind, Store, StoreError};
use serde::Serialize;

use crate::ApiState;
use crate::auth::Caller;
use crate::live::{bad_parameter, lot_of};
use crate::problem::Problem;

/// Ledger entries read from the store at a time, by the export and by the revenue.
pub const PAGE: u32 = 1_000;

/// The longest period one request may cover, in months (6 years: the 5 years the books are
/// kept, and some room on either side).
pub const MAX_PERIOD_MONTHS: u32 = 72;

/// The CSV columns, in order.
pub const COLUMNS: [&str; 13] = [
    "seq",
    "at",
    "lot",
    "kind",
    "amount_minor",
    "amount",
    "currency",
    "payment_id",
    "refund_id",
    "reservation_id",
    "session_id",
    "user_id",
    "memo",
];

/// The query parameters both routes take.
const PARAMS: [&str; 3] = ["from", "to", "lot"];

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/ledger.csv", get(export_csv))
        .route("/api/v1/revenue", get(revenue))
}

/// A checked request: the half-open period `[from, to)` and the lot, if one.
#[derive(Debug, Clone)]
struct Period {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    lot: Option<LotId>,
}

/// The query string as name → value: every name at most once, none but `from`, `to`, `lot`.
fn query_map(raw: Option<&str>) -> Result<BTreeMap<String, String>, Problem> {
    let mut map = BTreeMap::new();
    for (name, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let name: String = name.chars().take(64).collect();
        if !PARAMS.contains(&name.as_str()) {
            return Err(bad_parameter(format!(
                "unknown query parameter {name:?} (allowed: {})",
                PARAMS.join(", ")
            )));
        }
        if map.insert(name.clone(), value.into_owned()).is_some() {
            return Err(bad_parameter(format!("{name} is given more than once")));
        }
    }
    Ok(map)
}

/// A required RFC 3339 time.
fn time(query: &BTreeMap<String, String>, name: &str) -> Result<DateTime<Utc>, Problem> {
    let value = query
        .get(name)
        .ok_or_else(|| bad_parameter(format!("{name} is required (RFC 3339)")))?;
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            // A `+` in a query string decodes to a space: the usual cause of a refused offset.
            let hint = if value.contains(' ') {
                " (write the + of an offset as %2B)"
            } else {
                ""
            };
            bad_parameter(format!(
                "{name} must be an RFC 3339 time, e.g. 2027-01-01T00:00:00Z{hint}"
            ))
        })
}

/// `from`, `to` and the lot, checked: `from < to`, at most [`MAX_PERIOD_MONTHS`] apart, and a
/// lot that is live or has ledger history (a lot may be deleted, its money history may not).
async fn period(state: &ApiState, raw: Option<&str>) -> Result<Period, Problem> {
    let query = query_map(raw)?;
    let (from, to) = (time(&query, "from")?, time(&query, "to")?);
    if to <= from {
        return Err(bad_parameter("to must be after from".into()));
    }
    if from
        .checked_add_months(Months::new(MAX_PERIOD_MONTHS))
        .is_some_and(|limit| to > limit)
    {
        return Err(bad_parameter(format!(
            "the period may be at most {} years: export a longer one in parts",
            MAX_PERIOD_MONTHS / 12
        )));
    }
    let lot = match query.get("lot") {
        None => None,
        Some(raw) => Some(known_lot(state, raw).await?),
    };
    Ok(Period { from, to, lot })
}

/// A lot of the live garage, or one that is gone but has entries in the ledger; else 404
/// `unknown-lot`.
async fn known_lot(state: &ApiState, raw: &str) -> Result<LotId, Problem> {
    let unknown = match lot_of(&state.live, raw) {
        Ok((lot, _)) => return Ok(lot),
        Err(problem) => problem,
    };
    let Ok(lot) = LotId::parse(raw) else {
        return Err(unknown);
    };
    // Any entry at all, since the epoch up to the end of year 9999 (the largest RFC 3339 year).
    let end = DateTime::from_timestamp(253_402_300_800, 0)
        .ok_or_else(|| Problem::internal("the end of year 9999 is out of range"))?;
    let history = state
        .accounts
        .store()
        .ledger_between(DateTime::UNIX_EPOCH, end, Some(&lot), None, 1)
        .await
        .map_err(Problem::internal)?;
    if history.is_empty() {
        Err(unknown)
    } else {
        Ok(lot)
    }
}

/// Digits after the decimal point of a currency (ISO 4217): two unless listed.
fn minor_digits(currency: &Currency) -> u32 {
    match currency.as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

/// `minor` as a decimal in `currency`'s major unit: `-1250` EUR is `-12.50`, `500` JPY `500`.
fn decimal(out: &mut String, minor: i64, currency: &Currency) {
    let digits = minor_digits(currency);
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    let scale = 10u64.pow(digits);
    if digits == 0 {
        let _ = write!(out, "{sign}{magnitude}");
    } else {
        let _ = write!(
            out,
            "{sign}{}.{:0width$}",
            magnitude / scale,
            magnitude % scale,
            width = digits as usize
        );
    }
}

/// Appends a text field: a leading `'` if a spreadsheet would read it as a formula, quoted
/// (quotes doubled) if it holds a separator, a quote or a line break.
fn text(out: &mut String, value: &str) {
    let formula = value.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = value.contains([',', '"', '\r', '\n']);
    if quoted {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in value.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quoted {
        out.push('"');
    }
}

/// Appends one CSV record (with its CRLF).
fn record(out: &mut String, entry: &LedgerEntry) {
    let _ = write!(
        out,
        "{},{},",
        entry.seq,
        entry.at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    );
    text(out, entry.lot.as_str());
    out.push(',');
    text(out, entry.kind.as_str());
    let _ = write!(out, ",{},", entry.amount_minor);
    decimal(out, entry.amount_minor, &entry.currency);
    out.push(',');
    text(out, entry.currency.as_str());
    for id in [
        &entry.payment_id,
        &entry.refund_id,
        &entry.reservation_id,
        &entry.session_id,
        &entry.user_id,
    ] {
        out.push(',');
        text(out, id.as_deref().unwrap_or_default());
    }
    out.push(',');
    text(out, &entry.memo);
    out.push_str("\r\n");
}

fn records(entries: &[LedgerEntry]) -> String {
    let mut out = String::with_capacity(entries.len() * 192);
    for entry in entries {
        record(&mut out, entry);
    }
    out
}

/// Where the export stands between two pages.
struct Cursor {
    store: Arc<dyn Store>,
    period: Period,
    /// The last `seq` sent.
    after: i64,
    /// Entries sent so far.
    sent: u64,
}

impl Cursor {
    /// The next page as CSV, and what follows it; `None` at the end. A failed read ends the
    /// stream with the error, so the client sees a broken transfer, not a short file.
    async fn next(self) -> Option<(Result<Bytes, StoreError>, Option<Cursor>)> {
        let page = self
            .store
            .ledger_between(
                self.period.from,
                self.period.to,
                self.period.lot.as_ref(),
                Some(self.after),
                PAGE,
            )
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                tracing::error!(%error, after = self.after, "ledger export failed mid-way");
                return Some((Err(error), None));
            }
        };
        let Some(last) = page.last() else {
            tracing::info!(sent = self.sent, "ledger export done");
            return None;
        };
        let sent = self.sent + page.len() as u64;
        let next = if page.len() < PAGE as usize {
            tracing::info!(sent, "ledger export done");
            None
        } else {
            Some(Cursor {
                after: last.seq,
                sent,
                ..self
            })
        };
        Some((Ok(Bytes::from(records(&page))), next))
    }
}

/// The filename's form of a time: `20270101T000000Z`.
fn compact(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A period's ledger entries as CSV (operator role).
///
/// Every ledger entry with `at` in `[from, to)`, of one lot or all, in append order.
/// Columns: seq, at (RFC 3339, UTC), lot, kind (`charge`, `refund`, `no_show_fee`,
/// `adjustment`), amount_minor (signed, minor units), amount (the same as a decimal in the
/// currency's major unit), currency, payment_id, refund_id, reservation_id, session_id,
/// user_id, memo. Text fields that start like a spreadsheet formula (`=`, `+`, `-`, `@`, tab,
/// CR) get a leading `'`. The body is streamed; a failure after the first page breaks the
/// transfer off.
#[utoipa::path(
    get,
    path = "/api/v1/ledger.csv",
    tag = "ledger",
    params(
        ("from" = String, Query, description = "Start of the period, included (RFC 3339)"),
        ("to" = String, Query, description = "End of the period, excluded (RFC 3339); at most 6 years after `from`"),
        ("lot" = Option<String>, Query, description = "Only this lot's entries (a live lot, or a removed one with ledger history)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entries as RFC 4180 CSV with a header row", body = String, content_type = "text/csv; charset=utf-8",
         headers(("Content-Disposition" = String, description = "attachment; filename=\"parkd-ledger-<from>-<to>.csv\""))),
        (status = 400, description = "A missing, malformed or unknown parameter, `to` not after `from`, or a period over 6 years (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn export_csv(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let period = period(&state, raw.as_deref()).await?;
    let store = state.accounts.store().clone();
    // The first page before the answer: a database that is down is a 500, not a broken file.
    let first = store
        .ledger_between(period.from, period.to, period.lot.as_ref(), None, PAGE)
        .await
        .map_err(Problem::internal)?;
    tracing::info!(
        user = %caller.user.id,
        from = %period.from,
        to = %period.to,
        lot = period.lot.as_ref().map(LotId::as_str),
        "ledger export"
    );
    let filename = format!(
        "attachment; filename=\"parkd-ledger-{}-{}.csv\"",
        compact(period.from),
        compact(period.to)
    );
    let disposition = HeaderValue::from_str(&filename).map_err(Problem::internal)?;
    let mut head = COLUMNS.join(",");
    head.push_str("\r\n");
    head.push_str(&records(&first));
    let cursor = match first.last() {
        Some(last) if first.len() == PAGE as usize => Some(Cursor {
            store,
            after: last.seq,
            sent: first.len() as u64,
            period,
        }),
        _ => {
            tracing::info!(sent = first.len(), "ledger export done");
            None
        }
    };
    let rest = futures_util::stream::unfold(cursor, |cursor| async move {
        match cursor {
            Some(cursor) => cursor.next().await,
            None => None,
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, StoreError>(Bytes::from(head)) })
        .chain(rest);
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A period's revenue.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Revenue {
    /// Start of the period, included.
    from: DateTime<Utc>,
    /// End of the period, excluded.
    to: DateTime<Utc>,
    /// The lot, or null for all lots.
    #[schema(value_type = Option<String>)]
    lot: Option<LotId>,
    /// One per currency with entries in the period, by currency code.
    currencies: Vec<CurrencyRevenue>,
}

/// One currency's revenue in a period, in minor units: `net_minor` is the sum of the four
/// kinds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CurrencyRevenue {
    /// The currency.
    currency: Currency,
    /// Every entry added up: charges and fees, less refunds, plus adjustments.
    net_minor: i64,
    /// Payments captured (positive or zero).
    charges_minor: i64,
    /// No-show fees captured (positive or zero).
    no_show_fees_minor: i64,
    /// Money given back (negative or zero).
    refunds_minor: i64,
    /// Staff corrections, either sign.
    adjustments_minor: i64,
    /// Ledger entries counted.
    entries: u64,
}

/// One currency's sums while the pages come in.
#[derive(Debug, Default)]
struct Totals {
    net: i64,
    charges: i64,
    no_show_fees: i64,
    refunds: i64,
    adjustments: i64,
    entries: u64,
}

impl Totals {
    fn add(&mut self, entry: &LedgerEntry) -> Result<(), Problem> {
        let overflow = || Problem::internal("revenue sum out of the i64 range");
        let column = match entry.kind {
            LedgerKind::Charge => &mut self.charges,
            LedgerKind::NoShowFee => &mut self.no_show_fees,
            LedgerKind::Refund => &mut self.refunds,
            LedgerKind::Adjustment => &mut self.adjustments,
        };
        *column = column
            .checked_add(entry.amount_minor)
            .ok_or_else(overflow)?;
        self.net = self
            .net
            .checked_add(entry.amount_minor)
            .ok_or_else(overflow)?;
        self.entries += 1;
        Ok(())
    }

    fn of(self, currency: Currency) -> CurrencyRevenue {
        CurrencyRevenue {
            currency,
            net_minor: self.net,
            charges_minor: self.charges,
            no_show_fees_minor: self.no_show_fees,
            refunds_minor: self.refunds,
            adjustments_minor: self.adjustments,
            entries: self.entries,
        }
    }
}

/// A period's revenue per currency (operator role).
///
/// The ledger's entries with `at` in `[from, to)`, of one lot or all, added up per currency:
/// net and by kind, with the number of entries.
#[utoipa::path(
    get,
    path = "/api/v1/revenue",
    tag = "ledger",
    params(
        ("from" = String, Query, description = "Start of the period, included (RFC 3339)"),
        ("to" = String, Query, description = "End of the period, excluded (RFC 3339); at most 6 years after `from`"),
        ("lot" = Option<String>, Query, description = "Only this lot's revenue (a live lot, or a removed one with ledger history)"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The revenue per currency", body = Revenue),
        (status = 400, description = "A missing, malformed or unknown parameter, `to` not after `from`, or a period over 6 years (`invalid-parameter`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing, malformed, unknown or ended session token (`missing-token`, `invalid-token`)", body = Problem, content_type = "application/problem+json", headers(("WWW-Authenticate" = String, description = "Bearer challenge"))),
        (status = 403, description = "Not an operator (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown lot (`unknown-lot`)", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn revenue(
    State(state): State<ApiState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, Problem> {
    caller.require(Role::Operator)?;
    let period = period(&state, raw.as_deref()).await?;
    let store = state.accounts.store();
    let mut totals: BTreeMap<Currency, Totals> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store
            .ledger_between(period.from, period.to, period.lot.as_ref(), after, PAGE)
            .await
            .map_err(Problem::internal)?;
        for entry in &page {
            totals
                .entry(entry.currency.clone())
                .or_default()
                .add(entry)?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some(last.seq),
            _ => break,
        }
    }
    let currencies = totals
        .into_iter()
        .map(|(currency, totals)| totals.of(currency))
        .collect();
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(Revenue {
            from: period.from,
            to: period.to,
            lot: period.lot,
            currencies,
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn amounts_in_the_major_unit() {
        let cases = [
            (-1250, "EUR", "-12.50"),
            (5, "EUR", "0.05"),
            (-5, "EUR", "-0.05"),
            (0, "EUR", "0.00"),
            (123_456, "USD", "1234.56"),
            (500, "JPY", "500"),
            (-500, "JPY", "-500"),
            (1_234, "KWD", "1.234"),
            (i64::MIN, "EUR", "-92233720368547758.08"),
        ];
        for (minor, code, expected) in cases {
            let mut out = String::new();
            decimal(
                &mut out,
                minor,
                &Currency::parse(code).unwrap_or_else(|e| panic!("{e}")),
            );
            assert_eq!(out, expected, "{minor} {code}");
        }
        let mut out = String::new();
        decimal(&mut out, 100, &eur());
        assert_eq!(out, "1.00");
    }

    #[test]
    fn text_fields_are_quoted_and_defused() {
        let cases = [
            ("plain", "plain"),
            ("", ""),
            ("a, b", "\"a, b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=1+2", "'=1+2"),
            ("+49 30", "'+49 30"),
            ("-cash", "'-cash"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            (
                "=HYPERLINK(\"x\",\"y\")",
                "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\"",
            ),
            ("a=b", "a=b"),
        ];
        for (value, expected) in cases {
            let mut out = String::new();
            text(&mut out, value);
            assert_eq!(out, expected, "{value:?}");
        }
    }

    #[test]
    fn query_parameters_are_known_and_single() {
        assert!(query_map(None).is_ok_and(|m| m.is_empty()));
        let map = query_map(Some("from=a&to=b&lot=c")).unwrap_or_default();
        assert_eq!(map.len(), 3);
        assert!(query_map(Some("from=a&from=b")).is_err());
        assert!(query_map(Some("format=xlsx")).is_err());
    }
}
