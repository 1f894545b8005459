//! Interactive queries over the processors' state stores, in the spirit of Kafka
//! Streams' IQ: each instance answers from the committed state of the stores it hosts.
//!
//! `app(state)` builds the router; errors are RFC 7807 problem documents, never a 5xx
//! for bad input.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/orders/{id}", get(get_order))
        .route("/api/v1/inventory/{sku}", get(get_product))
        .route("/api/v1/customers/{id}", get(get_customer))
        .route("/api/v1/payments/{order_id}", get(get_payment))
        .route("/api/v1/shipments/{order_id}", get(get_shipment))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(state)
}

/// An RFC 7807 problem response.
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

fn is_uuid(s: &str) -> bool {
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

    fn state() -> AppState {
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
}
