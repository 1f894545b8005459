//! Interactive queries over the processors' state stores, in the spirit of Kafka
//! Streams' IQ: each instance answers from the committed state of the stores it hosts.
//!
//! `app(state)` builds the router; errors are RFC 9457 problem documents, never a 5xx
//! for bad input. Commands (POST/PUT/DELETE) are published to Kafka by a [`CommandBus`]
//! and answered 202 Accepted. Every response carries `X-Correlation-ID` (the caller's,
//! or a new one), which also travels with the command into Kafka.

mod commands;

pub use commands::{Command, CommandBus};

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use erp_state_stores::{Readiness, StoreRegistry};

/// Names of the stores this API reads; the processors use the same constants.
pub mod stores {
    pub const ORDERS: &str = "orders";
    pub const PRODUCTS: &str = "products";
    pub const CUSTOMERS: &str = "customers";
    /// The order processor's global copy of the customer table.
    pub const CUSTOMER_TABLE: &str = "customer-table";
    pub const PAYMENTS: &str = "payments";
    pub const SHIPMENTS: &str = "shipments";
}

#[derive(Clone)]
pub struct AppState {
    pub stores: StoreRegistry,
    pub readiness: Readiness,
    pub metrics: Arc<prometheus::Registry>,
    /// Where commands go; `None`: this instance only answers queries (503 on commands).
    pub commands: Option<Arc<dyn CommandBus>>,
}

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const CORRELATION: &str = "x-correlation-id";

/// The request's correlation id: the caller's `X-Correlation-ID` (1-128 visible ASCII
/// characters) or a new UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(pub String);

impl CorrelationId {
    fn of(headers: &axum::http::HeaderMap) -> Self {
        headers
            .get(CORRELATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
            .map_or_else(
                || Self(uuid::Uuid::new_v4().to_string()),
                |v| Self(v.to_string()),
            )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(|| CorrelationId::of(&parts.headers)))
    }
}

/// Accepts or makes the correlation id and echoes it on every response.
async fn correlate(mut req: Request, next: Next) -> Response {
    let id = CorrelationId::of(req.headers());
    req.extensions_mut().insert(id.clone());
    let mut response = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(CORRELATION, v);
    }
    response
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/orders", post(commands::place_order))
        .route(
            "/api/v1/orders/{id}",
            get(get_order)
                .put(commands::update_order)
                .delete(commands::cancel_order),
        )
        .route("/api/v1/orders/{id}/confirm", post(commands::confirm_order))
        .route("/api/v1/customers", post(commands::register_customer))
        .route("/api/v1/inventory/{sku}/restock", post(commands::restock))
        .route(
            "/api/v1/shipments/{order_id}/dispatch",
            post(commands::dispatch_shipment),
        )
        .route(
            "/api/v1/shipments/{order_id}/deliver",
            post(commands::deliver_shipment),
        )
        .route("/api/v1/inventory/{sku}", get(get_product))
        .route("/api/v1/customers/{id}", get(get_customer))
        .route("/api/v1/payments/{order_id}", get(get_payment))
        .route("/api/v1/shipments/{order_id}", get(get_shipment))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint".into(),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(correlate))
        .with_state(state)
}

/// An RFC 9457 problem response.
pub fn problem(status: StatusCode, detail: String) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

async fn lookup(
    state: &AppState,
    store: &'static str,
    key: String,
) -> Result<Option<Value>, Response> {
    let stores = state.stores.clone();
    let found = tokio::task::spawn_blocking(move || stores.get(store, key.as_bytes()))
        .await
        .map_err(|e| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("lookup interrupted: {e}"),
            )
        })?
        .map_err(|e| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store {store} unavailable: {e}"),
            )
        })?;
    match found {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("stored value unreadable: {e}"),
            )
        }),
    }
}

pub(crate) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

async fn get_order(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    if !is_uuid(&id) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("order id {id:?} is not a UUID"),
        );
    }
    match lookup(&state, stores::ORDERS, id.to_ascii_lowercase()).await {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("order {id} not found")),
        Err(r) => r,
    }
}

async fn get_product(State(state): State<AppState>, Path(sku): Path<String>) -> Response {
    if sku.is_empty() || sku.len() > 32 {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("SKU {sku:?} is not 1-32 characters"),
        );
    }
    match lookup(&state, stores::PRODUCTS, sku.clone()).await {
        Ok(Some(mut product)) => {
            // Totals over the warehouses, next to the per-warehouse figures.
            let (on_hand, reserved) = match product["warehouses"].as_object() {
                Some(ws) => ws.values().fold((0, 0), |(o, r), w| {
                    (
                        o + w["on_hand"].as_u64().unwrap_or(0),
                        r + w["reserved"].as_u64().unwrap_or(0),
                    )
                }),
                None => (
                    product["on_hand"].as_u64().unwrap_or(0),
                    product["reserved"].as_u64().unwrap_or(0),
                ),
            };
            product["on_hand"] = json!(on_hand);
            product["reserved"] = json!(reserved);
            product["available"] = json!(on_hand.saturating_sub(reserved));
            Json(product).into_response()
        }
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("product {sku} not found")),
        Err(r) => r,
    }
}

async fn by_uuid(state: &AppState, store: &'static str, what: &str, id: &str) -> Response {
    if !is_uuid(id) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("{what} id {id:?} is not a UUID"),
        );
    }
    match lookup(state, store, id.to_ascii_lowercase()).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("{what} {id} not found")),
        Err(r) => r,
    }
}

async fn get_customer(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let response = by_uuid(&state, stores::CUSTOMERS, "customer", &id).await;
    if response.status() == StatusCode::NOT_FOUND {
        // Hosted by another instance, but maybe already in this instance's customer
        // table (what order pricing reads).
        let stores = state.stores.clone();
        let key = id.to_ascii_lowercase();
        let in_table = tokio::task::spawn_blocking(move || {
            matches!(
                stores.get(stores::CUSTOMER_TABLE, key.as_bytes()),
                Ok(Some(_))
            )
        })
        .await
        .unwrap_or(false);
        if in_table {
            return Json(json!({
                "customer_id": id.to_ascii_lowercase(),
                "visible_to_orders": true,
                "hosted_here": false,
            }))
            .into_response();
        }
    }
    if response.status() != StatusCode::OK {
        return response;
    }
    let (_, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, 1 << 20).await {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let mut customer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // Whether this instance's order processor can price orders for the customer yet.
    let stores = state.stores.clone();
    let key = id.to_ascii_lowercase();
    // (null when no order processor runs in this process).
    let visible = tokio::task::spawn_blocking(move || {
        if stores.partitions(stores::CUSTOMER_TABLE).is_empty() {
            return Value::Null;
        }
        json!(matches!(
            stores.get(stores::CUSTOMER_TABLE, key.as_bytes()),
            Ok(Some(_))
        ))
    })
    .await
    .unwrap_or(Value::Null);
    customer["visible_to_orders"] = visible;
    Json(customer).into_response()
}

async fn get_payment(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    by_uuid(&state, stores::PAYMENTS, "payment of order", &id).await
}

async fn get_shipment(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    by_uuid(&state, stores::SHIPMENTS, "shipment of order", &id).await
}

async fn live() -> Response {
    Json(json!({"status": "UP"})).into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    let components = state.readiness.report();
    let body = json!({
        "status": if state.readiness.is_ready() { "UP" } else { "DOWN" },
        "components": components,
    });
    let status = if state.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode(&state.metrics.gather(), &mut buf) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metrics unavailable: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use erp_state_stores::{MemoryBackend, StoreBackend};
    use tower::ServiceExt;

    const ORDER: &str = "6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11";
    const CUSTOMER: &str = "0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33";

    /// Records what the handlers publish (Kafka itself is exercised by the real-socket
    /// tests in `tests/`).
    #[derive(Default)]
    struct RecordingBus {
        sent: std::sync::Mutex<Vec<Command>>,
        fail: bool,
    }

    impl CommandBus for RecordingBus {
        fn send(&self, command: Command) -> Result<(), String> {
            if self.fail {
                return Err("broker unreachable".into());
            }
            self.sent.lock().unwrap().push(command);
            Ok(())
        }
    }

    fn state() -> AppState {
        state_with(Arc::new(RecordingBus::default()))
    }

    fn state_with(bus: Arc<RecordingBus>) -> AppState {
        let stores = StoreRegistry::new();
        let orders = Arc::new(MemoryBackend::new(stores::ORDERS));
        orders
            .write_batch(
                &[(
                    ORDER.as_bytes().to_vec(),
                    Some(br#"{"id":"x","status":"Confirmed"}"#.to_vec()),
                )],
                Some(1),
            )
            .unwrap();
        let products = Arc::new(MemoryBackend::new(stores::PRODUCTS));
        products
            .write_batch(
                &[(
                    b"SKU-1".to_vec(),
                    Some(br#"{"on_hand":10,"reserved":3}"#.to_vec()),
                )],
                Some(1),
            )
            .unwrap();
        stores.register(stores::ORDERS, 0, orders);
        stores.register(stores::PRODUCTS, 0, products);
        AppState {
            stores,
            readiness: Readiness::new(),
            metrics: Arc::new(prometheus::Registry::new()),
            commands: Some(bus),
        }
    }

    async fn call(app: Router, uri: &str) -> (StatusCode, Option<String>, Value) {
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, ct, body)
    }

    #[tokio::test]
    async fn order_lookup_returns_the_stored_order() {
        let (status, _, body) = call(app(state()), &format!("/api/v1/orders/{ORDER}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"], "Confirmed");
    }

    #[tokio::test]
    async fn unknown_order_is_a_404_problem() {
        let (status, ct, body) = call(
            app(state()),
            "/api/v1/orders/00000000-0000-0000-0000-000000000000",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
        assert_eq!(body["status"], 404);
        assert!(body["detail"].as_str().unwrap().contains("not found"));
    }

    #[tokio::test]
    async fn malformed_order_id_is_a_400_problem() {
        let (status, _, body) = call(app(state()), "/api/v1/orders/not-a-uuid").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["detail"].as_str().unwrap().contains("not a UUID"));
    }

    #[tokio::test]
    async fn inventory_lookup_adds_available_stock() {
        let (status, _, body) = call(app(state()), "/api/v1/inventory/SKU-1").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["available"], 7);
        let (status, _, _) = call(app(state()), "/api/v1/inventory/NOPE").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn readiness_follows_the_components() {
        let s = state();
        let (status, _, _) = call(app(s.clone()), "/health/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        s.readiness.set("erp-order", true);
        let (status, _, body) = call(app(s.clone()), "/health/ready").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["components"]["erp-order"], true);
        let (status, _, body) = call(app(s), "/health/live").await;
        assert_eq!(
            (status, body["status"].as_str()),
            (StatusCode::OK, Some("UP"))
        );
    }

    #[tokio::test]
    async fn unknown_path_is_a_404_problem() {
        let (status, ct, _) = call(app(state()), "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
    }

    async fn send(
        app: Router,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = app
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn order_body(quantity: i32) -> String {
        json!({
            "customer_id": CUSTOMER,
            "currency": "USD",
            "lines": [{"sku": "SKU-1", "quantity": quantity, "unit_price": "9.99"}],
            "shipping_address": {"street": "1 Main", "city": "Town", "postal_code": "10001", "country": "US"},
        })
        .to_string()
    }

    const JSON_CT: (&str, &str) = ("content-type", "application/json");

    #[tokio::test]
    async fn placing_an_order_publishes_the_command_and_answers_202() {
        let bus = Arc::new(RecordingBus::default());
        let (status, headers, body) = send(
            app(state_with(bus.clone())),
            "POST",
            "/api/v1/orders",
            &[JSON_CT, ("x-correlation-id", "corr-42")],
            &order_body(2),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let order_id = body["order_id"].as_str().unwrap().to_string();
        assert_eq!(
            headers["location"],
            format!("/api/v1/orders/{order_id}").as_str()
        );
        assert_eq!(headers["x-correlation-id"], "corr-42");
        let sent = bus.sent.lock().unwrap();
        let Command::Order(cmd) = &sent[0] else {
            panic!("expected an order command, got {sent:?}");
        };
        assert_eq!(cmd.order_id, order_id);
        assert_eq!(cmd.command_id, body["command_id"]);
        assert_eq!(cmd.correlation_id.as_deref(), Some("corr-42"));
        let place = cmd.place_order.as_ref().unwrap();
        assert_eq!(
            (
                place.lines[0].quantity,
                place.lines[0].product_name.as_str()
            ),
            (2, "SKU-1")
        );
    }

    #[tokio::test]
    async fn an_idempotency_key_gives_the_same_ids_and_answer() {
        let bus = Arc::new(RecordingBus::default());
        let headers = [JSON_CT, ("idempotency-key", "client-key-1")];
        let (s1, _, b1) = send(
            app(state_with(bus.clone())),
            "POST",
            "/api/v1/orders",
            &headers,
            &order_body(1),
        )
        .await;
        let (s2, _, b2) = send(
            app(state_with(bus.clone())),
            "POST",
            "/api/v1/orders",
            &headers,
            &order_body(1),
        )
        .await;
        assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::ACCEPTED));
        assert_eq!(
            b1, b2,
            "same order id and command id: the processor applies it once"
        );
        let (_, _, b3) = send(
            app(state_with(bus)),
            "POST",
            "/api/v1/orders",
            &[JSON_CT],
            &order_body(1),
        )
        .await;
        assert_ne!(b1["order_id"], b3["order_id"]);
    }

    #[tokio::test]
    async fn bad_requests_are_problem_documents_never_5xx() {
        type Case<'a> = (
            &'a str,
            &'a str,
            Vec<(&'a str, &'a str)>,
            String,
            StatusCode,
        );
        let put_uri = format!("/api/v1/orders/{ORDER}");
        let cases: Vec<Case> = vec![
            (
                "POST",
                "/api/v1/orders",
                vec![JSON_CT],
                order_body(0),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/orders",
                vec![JSON_CT],
                "{not json".into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/orders",
                vec![JSON_CT],
                r#"{"surprise": 1}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "POST",
                "/api/v1/orders",
                vec![],
                order_body(1),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                "POST",
                "/api/v1/orders",
                vec![JSON_CT],
                "x".repeat(MAX_BODY_BYTES + 1),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                "PUT",
                &put_uri,
                vec![JSON_CT, ("if-match", "soon")],
                r#"{"lines": [{"sku": "A-1", "quantity": 1, "unit_price": "1"}]}"#.into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "DELETE",
                "/api/v1/orders/not-a-uuid",
                vec![],
                String::new(),
                StatusCode::BAD_REQUEST,
            ),
            (
                "POST",
                "/api/v1/inventory/SKU-1/restock",
                vec![JSON_CT],
                r#"{"quantity": -3}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            (
                "PATCH",
                "/api/v1/orders",
                vec![],
                String::new(),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                "POST",
                "/api/v1/orders",
                vec![JSON_CT, ("idempotency-key", "   ")],
                order_body(1),
                StatusCode::BAD_REQUEST,
            ),
        ];
        for (method, uri, headers, body, want) in cases {
            let (status, h, problem) = send(app(state()), method, uri, &headers, &body).await;
            assert_eq!(status, want, "{method} {uri}: {problem}");
            assert_eq!(
                h["content-type"], "application/problem+json",
                "{method} {uri}"
            );
            assert_eq!(problem["status"], want.as_u16(), "{method} {uri}");
            assert!(h.contains_key("x-correlation-id"));
        }
    }

    #[tokio::test]
    async fn order_commands_carry_the_expected_version_and_the_payload() {
        let bus = Arc::new(RecordingBus::default());
        let uri = format!("/api/v1/orders/{ORDER}");
        let lines = r#"{"lines": [{"sku": "A-1", "quantity": 3, "unit_price": "1.50"}]}"#;
        let (status, _, _) = send(
            app(state_with(bus.clone())),
            "PUT",
            &uri,
            &[JSON_CT, ("if-match", "\"3\"")],
            lines,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _, _) = send(app(state_with(bus.clone())), "DELETE", &uri, &[], "").await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (status, _, _) = send(
            app(state_with(bus.clone())),
            "POST",
            &format!("{uri}/confirm"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let sent = bus.sent.lock().unwrap();
        let orders: Vec<&erp_schemas::wire::OrderCommand> = sent
            .iter()
            .map(|c| match c {
                Command::Order(o) => o,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(orders[0].expected_version, Some(3));
        assert_eq!(
            orders[0].update_order.as_ref().unwrap().lines[0].quantity,
            3
        );
        assert_eq!(
            orders[1].cancel_order.as_ref().unwrap().reason,
            "cancelled via the API"
        );
        assert!(orders[2].confirm_order.is_some());
        assert!(orders.iter().all(|o| o.order_id == ORDER));
    }

    #[tokio::test]
    async fn without_a_working_bus_commands_are_503_problems() {
        let mut s = state();
        s.commands = None;
        let (status, _, _) =
            send(app(s), "POST", "/api/v1/orders", &[JSON_CT], &order_body(1)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let failing = Arc::new(RecordingBus {
            fail: true,
            ..RecordingBus::default()
        });
        let (status, _, problem) = send(
            app(state_with(failing)),
            "POST",
            "/api/v1/orders",
            &[JSON_CT],
            &order_body(1),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("broker unreachable")
        );
    }
}
