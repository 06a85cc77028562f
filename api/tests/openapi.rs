//! The OpenAPI document at `/api/v1/openapi.json`: it is OpenAPI 3.1, it documents every route
//! the routers register (read from their source, so a new route without docs fails here), and
//! every API operation documents its errors as `application/problem+json` problems.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use serde_json::Value;

/// The sources whose `.route(...)` calls make up the router.
const SOURCES: &[(&str, &str)] = &[
    ("lib.rs", include_str!("../src/lib.rs")),
    ("live.rs", include_str!("../src/live.rs")),
    ("auth.rs", include_str!("../src/auth.rs")),
    ("reservations.rs", include_str!("../src/reservations.rs")),
    ("gates.rs", include_str!("../src/gates.rs")),
    ("tariffs.rs", include_str!("../src/tariffs.rs")),
    ("payments.rs", include_str!("../src/payments.rs")),
    ("webhooks.rs", include_str!("../src/webhooks.rs")),
    ("reconcile.rs", include_str!("../src/reconcile.rs")),
    ("ledger.rs", include_str!("../src/ledger.rs")),
    ("web.rs", include_str!("../src/web.rs")),
];

/// Routes without problem responses: probes, the document itself and the map's files.
const NOT_API: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/openapi.json",
    "/",
    "/static/{file}",
];

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

/// (method, path) of every `.route(path, method(handler).method(handler)...)` in `source`.
fn routes_in(name: &str, source: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        let call = &rest[at + ".route(".len()..];
        // The call's arguments: up to the matching parenthesis.
        let mut depth = 1usize;
        let mut end = 0;
        for (i, c) in call.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let args = &call[..end];
        let (path, handlers) = args
            .split_once(',')
            .unwrap_or_else(|| panic!("{name}: unreadable route {args:?}"));
        let path = path.trim();
        let path = match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some(literal) => literal.to_owned(),
            None if path == "openapi::OPENAPI_PATH" => parkd_api::openapi::OPENAPI_PATH.to_owned(),
            None => panic!("{name}: route path {path:?} is neither a literal nor known"),
        };
        let mut methods = 0;
        for token in handlers.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '(')) {
            for method in METHODS {
                if token.starts_with(&format!("{method}(")) {
                    found.push((method.to_string(), path.clone()));
                    methods += 1;
                }
            }
        }
        assert!(methods > 0, "{name}: no method found for {path}");
        rest = &call[end..];
    }
    found
}

fn router_routes() -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (name, source) in SOURCES {
        for route in routes_in(name, source) {
            assert!(
                all.insert(route.clone()),
                "{name}: {route:?} registered twice"
            );
        }
    }
    all
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(*method).is_some() {
                all.insert((method.to_string(), path.clone()));
            }
        }
    }
    all
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref"
                    && let Some(target) = value.as_str()
                {
                    out.push(target.to_owned());
                }
                refs(value, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_complete() {
    let server = common::sqlite().await;
    let reply = server.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers.contains("content-type: application/json"),
        "{}",
        reply.headers
    );
    let doc = reply.body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "parkd");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"][0]["url"], "/");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");

    // Every route is documented, and nothing else is.
    let routes = router_routes();
    assert!(routes.len() >= 29, "the route parser found only {routes:?}");
    let docs = documented(&doc);
    let missing: Vec<_> = routes.difference(&docs).collect();
    let stale: Vec<_> = docs.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes without OpenAPI docs: {missing:?}"
    );
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");

    // Every API operation documents a 4xx problem+json referencing the Problem schema.
    for (method, path) in &routes {
        let operation = &doc["paths"][path][method];
        let responses = operation["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        if NOT_API.contains(&path.as_str()) {
            continue;
        }
        let problems = responses
            .iter()
            .filter(|(status, _)| status.starts_with('4'))
            .filter(|(_, response)| {
                response["content"]["application/problem+json"]["schema"]["$ref"]
                    == "#/components/schemas/Problem"
            })
            .count();
        assert!(
            problems > 0,
            "{method} {path}: no 4xx application/problem+json response"
        );
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/problem+json"].is_object(),
                    "{method} {path} {status}: an error that is not problem+json"
                );
            }
        }
        // An operation that answers 401 for a missing token is a bearer one.
        let login = path == "/api/v1/auth/login";
        if responses.contains_key("401") && !login {
            assert_eq!(
                operation["security"][0]["bearer"],
                serde_json::json!([]),
                "{method} {path}: 401 without the bearer scheme"
            );
        }
    }

    // Every reference resolves.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for target in all {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected $ref {target}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {target}"
        );
    }

    // The documented Problem is the RFC 9457 shape this API sends.
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail"] {
        assert!(problem[field].is_object(), "Problem lacks {field}");
    }
}

#[tokio::test]
async fn the_create_documents_its_idempotency_key() {
    let server = common::sqlite().await;
    let doc = server
        .call("GET", "/api/v1/openapi.json", None, None)
        .await
        .body;
    let create = &doc["paths"]["/api/v1/reservations"]["post"];
    let params = create["parameters"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
        "{params:?}"
    );
    let live = &doc["paths"]["/api/v1/live"]["get"];
    assert!(live["responses"]["101"].is_object());
    assert!(
        live["responses"]["101"]["description"]
            .as_str()
            .unwrap()
            .contains("docs/live.md")
    );
}
