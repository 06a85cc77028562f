//! The OpenAPI 3.1 description of the HTTP API, generated from the handlers' annotations and
//! served at `GET /api/v1/openapi.json`.
//!
//! Every handler carries a `#[utoipa::path]`; [`ApiDoc`] lists them all. The test
//! `tests/openapi.rs` reads the routers' source and fails when a route is missing here, so a new
//! route cannot ship undocumented. Errors are RFC 9457 problems ([`Problem`],
//! `application/problem+json`); every operation under `/api/v1` also documents the generic 500.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::problem::Problem;
use crate::{auth, gates, ledger, live, payments, reservations, tariffs, web, webhooks};

/// The document: every route of [`crate::router`].
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "parkd",
        description = "Live parking occupancy, accounts and reservations. \
                       Guides: docs/ in the repository (docs/live.md for the WebSocket feed, \
                       docs/accounts.md for accounts and sessions, docs/reservations.md for \
                       reservations, docs/payments.md for the ledger export). Errors are \
                       RFC 9457 problem details (application/problem+json)."
    ),
    servers((url = "/", description = "This server")),
    paths(
        crate::healthz,
        crate::readyz,
        crate::metrics,
        openapi_json,
        live::list_lots,
        live::get_lot,
        live::availability,
        live::spots,
        live::live,
        auth::register,
        auth::login,
        auth::logout,
        auth::me,
        auth::change_password,
        auth::sessions,
        auth::revoke_session,
        auth::list_vehicles,
        auth::add_vehicle,
        auth::delete_vehicle,
        auth::admin_users,
        auth::admin_disable,
        auth::admin_enable,
        reservations::create,
        reservations::list,
        reservations::get_one,
        reservations::modify,
        reservations::cancel,
        gates::list_gates,
        gates::open_gate,
        gates::get_emergency,
        gates::start_emergency,
        gates::end_emergency,
        gates::operator_actions,
        gates::sessions,
        gates::check_in,
        gates::check_out,
        tariffs::get_tariff,
        tariffs::put_tariff,
        tariffs::quote,
        payments::reservation_quote,
        payments::pay_reservation,
        payments::session_bill,
        payments::pay_session,
        payments::receipt,
        payments::confirm,
        webhooks::stripe_webhook,
        ledger::export_csv,
        ledger::revenue,
        web::index,
        web::file,
    ),
    components(schemas(Problem)),
    modifiers(&Security, &InternalErrors),
    tags(
        (name = "health", description = "Liveness, readiness and metrics"),
        (name = "live", description = "Lots, availability, spots and the live WebSocket feed"),
        (name = "auth", description = "Accounts, sessions and vehicles"),
        (name = "admin", description = "Account administration (admin role)"),
        (name = "reservations", description = "Reservations"),
        (name = "gates", description = "Gates, emergencies and parking sessions (operator role)"),
        (name = "tariffs", description = "Tariffs and price quotes"),
        (name = "payments", description = "Paying reservations in advance and stays at exit; receipts (docs/payments.md)"),
        (name = "ledger", description = "The append-only money ledger: CSV export of a period and revenue per currency (operator role)"),
        (name = "web", description = "The drivers' live map (not part of the API)"),
    )
)]
pub struct ApiDoc;

/// Adds the `bearer` security scheme: the opaque session token from `POST /api/v1/auth/login`.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "The opaque session token returned by POST /api/v1/auth/login \
             (Authorization: Bearer <token>)"
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// Adds the generic 500 problem to every operation under `/api/v1`.
struct InternalErrors;

impl Modify for InternalErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/api/v1/") || path == OPENAPI_PATH {
                continue;
            }
            let operations: [&mut Option<Operation>; 5] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let response = ResponseBuilder::new()
                    .description("Internal error (details are logged, not sent)")
                    .content(
                        PROBLEM_JSON,
                        ContentBuilder::new()
                            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                "Problem",
                            ))))
                            .build(),
                    )
                    .build();
                operation
                    .responses
                    .responses
                    .entry("500".into())
                    .or_insert(RefOr::T(response));
            }
        }
    }
}

/// The content type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|error| format!(r#"{{"error":"{error}"}}"#))
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}
