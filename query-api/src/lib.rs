//! Interactive queries over the processors' state stores, in the spirit of Kafka
//! Streams' IQ: each instance answers from the committed state of the stores it hosts.
//!
//! `app(state)` builds the router; errors are RFC 9457 problem documents, never a 5xx
//! for bad input. Commands (POST/PUT/DELETE) are published to Kafka by a [`CommandBus`]
//! and answered 202 Accepted. Every response carries `X-Correlation-ID` (the caller's,
//! or a new one), which also travels with the command into Kafka.

pub mod bench;
mod commands;
pub mod gateway;
pub mod grpc;
mod openapi;

pub use commands::{Command, CommandBus};
pub use gateway::Gateway;
pub use openapi::ApiDoc;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
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
    /// Which instance hosts a key; `None`: answer from local stores only.
    pub locator: Option<Arc<dyn KeyLocator>>,
    /// Auth, rate limiting and CORS (all off by default).
    pub gateway: Gateway,
}

/// Where a key's state is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Local,
    /// Another instance's query API (base URL).
    Remote(String),
    /// Nobody right now (rebalance or restore in progress).
    Unknown,
}

/// Finds the instance that hosts a store key (blocking; called off the async workers).
pub trait KeyLocator: Send + Sync + 'static {
    fn locate(&self, store: &str, key: &str) -> Owner;

    /// The key's partition when this instance hosts it — cheap and non-blocking, the
    /// fast path of every lookup. `None`: elsewhere, or unknown (then `locate`).
    fn local_partition(&self, _store: &str, _key: &str) -> Option<i32> {
        None
    }

    /// The other instances hosting partitions of `store` (base URLs), for lists that
    /// fan out and merge.
    fn peers(&self, _store: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// How long a lookup waits for a key's owner during a rebalance before answering 503.
pub const OWNER_WAIT: Duration = Duration::from_secs(10);
const FORWARDED: &str = "x-erp-forwarded";

/// For a key hosted elsewhere: the owner's answer, relayed. `None`: answer locally.
/// While nobody owns the key (rebalance, restore) it waits, bounded by [`OWNER_WAIT`],
/// then answers 503 with Retry-After rather than a wrong 404.
async fn route(
    state: &AppState,
    store: &'static str,
    key: &str,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Option<Response> {
    let locator = state.locator.clone()?;
    if locator.local_partition(store, key).is_some() {
        return None;
    }
    // One hop only: a forwarded request is not forwarded again; it waits here until the
    // key is local (this instance owns it but may still be restoring).
    let forwarded = headers.contains_key(FORWARDED);
    let deadline = tokio::time::Instant::now() + OWNER_WAIT;
    loop {
        let (l, k) = (locator.clone(), key.to_string());
        let owner = tokio::task::spawn_blocking(move || l.locate(store, &k))
            .await
            .unwrap_or(Owner::Unknown);
        match owner {
            Owner::Local => return None,
            Owner::Remote(_) if forwarded => {}
            Owner::Remote(base) => match forward(&format!("{base}{path}"), headers).await {
                Ok(response) => return Some(response),
                Err(e) => tracing::debug!(%base, error = %e, "owner unreachable; retrying"),
            },
            Owner::Unknown => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no instance hosts {store} key {key} right now (rebalancing); retry"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Some(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or(uri.path(), |p| p.as_str())
}

/// The client for instance-to-instance requests (a forwarded read-your-writes wait may
/// take up to [`MAX_WAIT_MS`]).
fn client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(MAX_WAIT_MS + 5_000))
            .build()
            .expect("http client")
    })
}

async fn forward(url: &str, headers: &axum::http::HeaderMap) -> Result<Response, reqwest::Error> {
    let mut req = client().get(url).header(FORWARDED, "1");
    // The owner checks the same token; the correlation id follows the request.
    for name in [CORRELATION, "authorization"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v);
        }
    }
    let resp = req.send().await?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    // The owner's answer as it gave it: type, ETag (for If-Match), Retry-After.
    let relayed: Vec<(header::HeaderName, HeaderValue)> =
        [header::ETAG, header::RETRY_AFTER, header::WWW_AUTHENTICATE]
            .into_iter()
            .filter_map(|name| {
                let v = resp.headers().get(name.as_str())?;
                Some((name, HeaderValue::from_bytes(v.as_bytes()).ok()?))
            })
            .collect();
    let body = resp.bytes().await?;
    let mut out = (status, body).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    for (name, value) in relayed {
        out.headers_mut().insert(name, value);
    }
    Ok(out)
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
    let gateway = state.gateway.clone();
    let router = Router::new()
        .route(
            "/api/v1/orders",
            get(list_orders).post(commands::place_order),
        )
        .route("/api/v1/orders/{id}/timeline", get(get_timeline))
        .route("/api/v1/inventory", get(low_stock))
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
        .route("/openapi.json", get(openapi::document))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint".into(),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Outermost last: CORS (preflights answer before auth) → correlation id → auth →
    // rate limit (per verified subject) → handlers. Rules that are off add no layer.
    let router = match gateway.limiter.clone() {
        Some(limiter) => router.layer(axum::middleware::from_fn_with_state(
            limiter,
            gateway::limit_rate,
        )),
        None => router,
    };
    let router = match gateway.auth.clone() {
        Some(auth) => router.layer(axum::middleware::from_fn_with_state(
            auth,
            gateway::authenticate,
        )),
        None => router,
    };
    let router = router
        .layer(axum::middleware::from_fn(correlate))
        .with_state(Arc::new(state));
    match gateway::cors(&gateway.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Serves `router` on `listener` (peer addresses visible to the rate limiter) until
/// `shutdown` resolves, then finishes in-flight requests. Defined here, not in the
/// binary, so the server loop is compiled with this crate's optimisation level.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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

/// Reads `key` from this instance's stores. A point read is served on the calling
/// worker: RocksDB answers it from the block cache or one SSD read, far cheaper than a
/// hand-off to the blocking pool (bench/query_api.sh).
async fn lookup(
    state: &AppState,
    store: &'static str,
    key: String,
) -> Result<Option<Value>, Response> {
    let partition = state
        .locator
        .as_ref()
        .and_then(|l| l.local_partition(store, &key));
    let found = match partition {
        Some(p) => state.stores.get_in(store, p, key.as_bytes()),
        None => state.stores.get(store, key.as_bytes()),
    }
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

/// The inventory context's SKU rule: 3-32 of `A-Z`, `0-9` and `-`, not starting with `-`.
pub(crate) fn is_sku(s: &str) -> bool {
    (3..=32).contains(&s.len())
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-')
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OrderQuery {
    /// Read-your-writes: wait until this command (or event) id was applied to the order.
    #[param(min_length = 1, max_length = 128)]
    wait_for: Option<String>,
    /// How long to wait in ms, at most 30000 (default 5000).
    #[param(maximum = 30000)]
    timeout_ms: Option<u64>,
}

fn applied(order: &Value, id: &str) -> bool {
    order["history"]
        .as_array()
        .is_some_and(|h| h.iter().any(|e| e["cause"]["id"] == id))
}

#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    summary = "An order (read-your-writes with wait_for)",
    params(
        ("id" = uuid::Uuid, Path, description = "Order id (UUID)"),
        OrderQuery
    ),
    responses(
        (status = 200, description = "The order; ETag is its version", body = crate::openapi::Aggregate),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn get_order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<OrderQuery>, QueryRejection>,
    // By reference: the hot lookup copies no headers (only a forward needs them).
    request: Request,
) -> Response {
    let (uri, headers) = (request.uri(), request.headers());
    if !is_uuid(&id) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("order id {id:?} is not a UUID"),
        );
    }
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if query
        .wait_for
        .as_ref()
        .is_some_and(|w| w.is_empty() || w.len() > 128)
    {
        return problem(
            StatusCode::BAD_REQUEST,
            "wait_for must be a command or event id (1-128 characters)".into(),
        );
    }
    if query.timeout_ms.is_some_and(|t| t > MAX_WAIT_MS) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("timeout_ms must be at most {MAX_WAIT_MS}"),
        );
    }
    let timeout = Duration::from_millis(query.timeout_ms.unwrap_or(5_000));
    read_order(
        &state,
        &id.to_ascii_lowercase(),
        query.wait_for.as_deref(),
        timeout,
        path_of(uri),
        headers,
    )
    .await
}

/// Longest read-your-writes wait a client may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;

/// The order, from its owner; with `wait_for`, once that command or event was applied
/// (bounded by `timeout`: 404 if the order never appeared, 503 if it did but the command
/// was not applied yet).
pub(crate) async fn read_order(
    state: &AppState,
    key: &str,
    wait_for: Option<&str>,
    timeout: Duration,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Response {
    let local = state
        .locator
        .as_ref()
        .and_then(|l| l.local_partition(stores::ORDERS, key));
    if local.is_none()
        && let Some(r) = route(state, stores::ORDERS, key, path, headers).await
    {
        return r;
    }
    if wait_for.is_none() {
        // The common lookup: the stored JSON as is, no parse and re-serialise.
        let found = match local {
            Some(p) => state.stores.get_in(stores::ORDERS, p, key.as_bytes()),
            None => state.stores.get(stores::ORDERS, key.as_bytes()),
        }
        .map_err(|e| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store {} unavailable: {e}", stores::ORDERS),
            )
        });
        return match found {
            Ok(Some(bytes)) => raw_with_etag(bytes),
            Ok(None) => problem(StatusCode::NOT_FOUND, format!("order {key} not found")),
            Err(r) => r,
        };
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let found = match lookup(state, stores::ORDERS, key.to_string()).await {
            Ok(found) => found,
            Err(r) => return r,
        };
        let done = match (&found, wait_for) {
            (_, None) => true,
            (Some(order), Some(wanted)) => applied(order, wanted),
            (None, Some(_)) => false,
        };
        let expired = tokio::time::Instant::now() >= deadline;
        match found {
            Some(order) if done => return with_etag(order),
            None if done || expired => {
                return problem(StatusCode::NOT_FOUND, format!("order {key} not found"));
            }
            Some(_) if expired => {
                let mut r = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "command {} was not applied to order {key} within {timeout:?}",
                        wait_for.unwrap_or_default()
                    ),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return r;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stored order JSON with its version as the ETag (only `version` is parsed).
fn raw_with_etag(bytes: Vec<u8>) -> Response {
    #[derive(Deserialize)]
    struct Versioned {
        version: Option<i64>,
    }
    // The order processor writes `version` first: read it off the prefix; anything
    // else (older layouts) is parsed.
    let prefix = bytes
        .strip_prefix(br#"{"version":"#)
        .map(|rest| {
            rest.iter()
                .take_while(|b| b.is_ascii_digit())
                .fold(0i64, |v, d| {
                    v.saturating_mul(10).saturating_add(i64::from(d - b'0'))
                })
        })
        .filter(|_| bytes.get(11).is_some_and(u8::is_ascii_digit));
    let version = prefix.or_else(|| {
        serde_json::from_slice::<Versioned>(&bytes)
            .ok()
            .and_then(|v| v.version)
    });
    let mut r = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response();
    if let Some(etag) = version.and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok()) {
        r.headers_mut().insert(header::ETAG, etag);
    }
    r
}

/// The order with its version as the ETag, for `If-Match` on PUT and DELETE.
fn with_etag(order: Value) -> Response {
    let etag = order["version"]
        .as_i64()
        .and_then(|v| HeaderValue::from_str(&format!("\"{v}\"")).ok());
    let mut r = Json(order).into_response();
    if let Some(etag) = etag {
        r.headers_mut().insert(header::ETAG, etag);
    }
    r
}

/// The order's saga, step by step: every command, reply and compensation with its time,
/// the input record (topic, partition, offset) and the commands it sent.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/timeline",
    tag = "orders",
    summary = "The order's saga timeline",
    params(
        ("id" = uuid::Uuid, Path, description = "Order id (UUID)")
    ),
    responses(
        (status = 200, description = "Every step", body = crate::openapi::Timeline),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn get_timeline(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    if !is_uuid(&id) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("order id {id:?} is not a UUID"),
        );
    }
    if let Some(r) = route(
        &state,
        stores::ORDERS,
        &id.to_ascii_lowercase(),
        path_of(&uri),
        &headers,
    )
    .await
    {
        return r;
    }
    match lookup(&state, stores::ORDERS, id.to_ascii_lowercase()).await {
        Ok(Some(order)) => Json(json!({
            "order_id": order["id"],
            "status": order["status"],
            "version": order["version"],
            "entries": order["history"],
        }))
        .into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("order {id} not found")),
        Err(r) => r,
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct OrderListQuery {
    customer_id: Option<String>,
    status: Option<String>,
    /// Created at or after (epoch ms).
    created_from: Option<i64>,
    /// Created before (epoch ms).
    created_to: Option<i64>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// Orders to skip (ordered by creation time, then id), at most 9900.
    #[param(maximum = 9900)]
    offset: Option<usize>,
}

/// Largest page a peer is asked for when a list fans out (offset + limit of the
/// caller's page).
const MAX_FAN_OUT_PAGE: usize = 10_000;

/// Orders of every instance, filtered and paged (newest first): this instance's stores
/// plus each peer's, merged.
#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    summary = "Orders over every instance, filtered and paged",
    params(
        OrderListQuery
    ),
    responses(
        (status = 200, description = "A page of orders", body = crate::openapi::OrderPage),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn list_orders(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
    query: Result<Query<OrderListQuery>, QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return problem(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let forwarded = headers.contains_key(FORWARDED);
    let limit = q.limit.unwrap_or(20);
    let max = if forwarded { MAX_FAN_OUT_PAGE } else { 100 };
    if !(1..=max).contains(&limit) {
        return problem(StatusCode::BAD_REQUEST, format!("limit must be 1-{max}"));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_FAN_OUT_PAGE - 100 {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("offset must be at most {}", MAX_FAN_OUT_PAGE - 100),
        );
    }
    let status = q.status.as_ref().map(|s| s.to_ascii_uppercase());
    let entries = match scan(&state, stores::ORDERS).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let mut orders: Vec<Value> = entries
        .into_iter()
        .filter(|o| {
            q.customer_id
                .as_ref()
                .is_none_or(|c| o["customer_id"].as_str() == Some(c.to_ascii_lowercase().as_str()))
                && status.as_ref().is_none_or(|s| {
                    o["status"].as_str().map(str::to_ascii_uppercase).as_ref() == Some(s)
                })
                && q.created_from
                    .is_none_or(|f| o["created_at"].as_i64().is_some_and(|t| t >= f))
                && q.created_to
                    .is_none_or(|t| o["created_at"].as_i64().is_some_and(|c| c < t))
        })
        .map(|o| {
            json!({
                "id": o["id"], "customer_id": o["customer_id"], "status": o["status"],
                "total": o["pricing"]["total"], "version": o["version"],
                "created_at": o["created_at"], "updated_at": o["updated_at"],
            })
        })
        .collect();
    let mut total = orders.len();
    if !forwarded {
        let mut peer_query = q.clone();
        peer_query.offset = Some(0);
        peer_query.limit = Some(offset + limit);
        match fan_out(
            &state,
            stores::ORDERS,
            "/api/v1/orders",
            &peer_query,
            &headers,
        )
        .await
        {
            Ok(pages) => {
                for page in pages {
                    total += page["total"].as_u64().unwrap_or(0) as usize;
                    orders.extend(page["orders"].as_array().cloned().unwrap_or_default());
                }
            }
            Err(r) => return r,
        }
    }
    // A partition moving between instances can be listed by both: keep the newest.
    orders.sort_by(|a, b| {
        (a["id"].as_str(), b["version"].as_i64()).cmp(&(b["id"].as_str(), a["version"].as_i64()))
    });
    let before = orders.len();
    orders.dedup_by(|a, b| a["id"] == b["id"]);
    total = total.saturating_sub(before - orders.len());
    orders.sort_by(|a, b| {
        (b["created_at"].as_i64(), b["id"].as_str())
            .cmp(&(a["created_at"].as_i64(), a["id"].as_str()))
    });
    let page: Vec<Value> = orders.into_iter().skip(offset).take(limit).collect();
    Json(json!({"total": total, "offset": offset, "limit": limit, "orders": page})).into_response()
}

/// Asks every peer hosting `store` for `path?query` (one hop) and returns their JSON
/// answers; any peer failing makes the list fail with 503 + Retry-After rather than be
/// silently incomplete.
async fn fan_out(
    state: &AppState,
    store: &'static str,
    path: &str,
    query: &(impl serde::Serialize + Sync),
    headers: &axum::http::HeaderMap,
) -> Result<Vec<Value>, Response> {
    let Some(locator) = state.locator.clone() else {
        return Ok(Vec::new());
    };
    let peers = tokio::task::spawn_blocking(move || locator.peers(store))
        .await
        .map_err(|e| e.to_string())
        .and_then(|p| p);
    let peers = match peers {
        Ok(p) => p,
        Err(e) => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot tell which instances to ask ({e}); the list would be incomplete"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(r);
        }
    };
    let mut pages = Vec::with_capacity(peers.len());
    for base in peers {
        let mut req = client()
            .get(format!("{base}{path}"))
            .query(query)
            .header(FORWARDED, "1");
        for name in [CORRELATION, "authorization"] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v);
            }
        }
        let answer = match req.send().await {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(page) => pages.push(page),
            Err(e) => {
                let mut r = problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("instance {base} did not answer ({e}); the list would be incomplete"),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(r);
            }
        }
    }
    Ok(pages)
}

/// Products below their low-stock threshold, over every instance.
#[utoipa::path(
    get,
    path = "/api/v1/inventory",
    tag = "inventory",
    summary = "Products below their low-stock threshold, over every instance",
    responses(
        (status = 200, description = "Low-stock products", body = crate::openapi::LowStockList),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn low_stock(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let entries = match scan(&state, stores::PRODUCTS).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    let mut low: Vec<Value> = entries
        .into_iter()
        .filter_map(|p| {
            let (on_hand, reserved) =
                p["warehouses"]
                    .as_object()?
                    .values()
                    .fold((0, 0), |(o, r), w| {
                        (
                            o + w["on_hand"].as_u64().unwrap_or(0),
                            r + w["reserved"].as_u64().unwrap_or(0),
                        )
                    });
            let available = on_hand.saturating_sub(reserved);
            let threshold = p["low_stock_threshold"].as_u64()?;
            (available < threshold).then(|| {
                json!({"sku": p["sku"], "name": p["name"], "available": available,
                       "low_stock_threshold": threshold, "reorder_point": p["reorder_point"],
                       "reorder_quantity": p["reorder_quantity"], "version": p["version"]})
            })
        })
        .collect();
    if !headers.contains_key(FORWARDED) {
        let no_query: [(&str, &str); 0] = [];
        match fan_out(
            &state,
            stores::PRODUCTS,
            "/api/v1/inventory",
            &no_query,
            &headers,
        )
        .await
        {
            Ok(pages) => {
                for page in pages {
                    low.extend(page["products"].as_array().cloned().unwrap_or_default());
                }
            }
            Err(r) => return r,
        }
    }
    low.sort_by(|a, b| {
        (a["sku"].as_str(), b["version"].as_i64()).cmp(&(b["sku"].as_str(), a["version"].as_i64()))
    });
    low.dedup_by(|a, b| a["sku"] == b["sku"]);
    Json(json!({"products": low})).into_response()
}

/// Every committed value of a store on this instance, as JSON.
async fn scan(state: &AppState, store: &'static str) -> Result<Vec<Value>, Response> {
    let stores = state.stores.clone();
    let entries = tokio::task::spawn_blocking(move || stores.entries(store))
        .await
        .map_err(|e| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("scan interrupted: {e}"),
            )
        })?
        .map_err(|e| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("store {store} unavailable: {e}"),
            )
        })?;
    Ok(entries
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect())
}

#[utoipa::path(
    get,
    path = "/api/v1/inventory/{sku}",
    tag = "inventory",
    summary = "Stock of one SKU, per warehouse and in total",
    params(
        ("sku" = String, Path, pattern = "^[A-Z0-9][A-Z0-9-]{2,31}$", description = "SKU: 3-32 of A-Z, 0-9 and -")
    ),
    responses(
        (status = 200, description = "The product", body = crate::openapi::Aggregate),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn get_product(
    State(state): State<Arc<AppState>>,
    Path(sku): Path<String>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    if !is_sku(&sku) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("SKU {sku:?} is not 3-32 of A-Z, 0-9 and -"),
        );
    }
    if let Some(r) = route(&state, stores::PRODUCTS, &sku, path_of(&uri), &headers).await {
        return r;
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

/// A lookup by UUID key: 400 for a malformed id, forwarded to the key's owner, else
/// read here.
async fn by_uuid(
    state: &AppState,
    store: &'static str,
    what: &str,
    id: &str,
    uri: &Uri,
    headers: &axum::http::HeaderMap,
) -> Response {
    if !is_uuid(id) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("{what} id {id:?} is not a UUID"),
        );
    }
    if let Some(r) = route(
        state,
        store,
        &id.to_ascii_lowercase(),
        path_of(uri),
        headers,
    )
    .await
    {
        return r;
    }
    match lookup(state, store, id.to_ascii_lowercase()).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => problem(StatusCode::NOT_FOUND, format!("{what} {id} not found")),
        Err(r) => r,
    }
}

/// A key's value from its owner once it exists (200), or the last answer (404, 503)
/// when `timeout` passed.
pub(crate) async fn read_until_found(
    state: &AppState,
    store: &'static str,
    key: &str,
    path: &str,
    timeout: Duration,
    headers: &axum::http::HeaderMap,
) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let r = match route(state, store, key, path, headers).await {
            Some(r) => r,
            None => match lookup(state, store, key.to_string()).await {
                Ok(Some(v)) => Json(v).into_response(),
                Ok(None) => problem(StatusCode::NOT_FOUND, format!("{key} not found")),
                Err(r) => r,
            },
        };
        if r.status() == StatusCode::OK || tokio::time::Instant::now() >= deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/customers/{id}",
    tag = "customers",
    summary = "A customer (tier, lifetime spend) and whether order pricing sees it yet",
    params(
        ("id" = uuid::Uuid, Path, description = "Customer id (UUID)")
    ),
    responses(
        (status = 200, description = "The customer", body = crate::openapi::Aggregate),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn get_customer(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let response = by_uuid(&state, stores::CUSTOMERS, "customer", &id, &uri, &headers).await;
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

#[utoipa::path(
    get,
    path = "/api/v1/payments/{order_id}",
    tag = "payments",
    summary = "An order's payment",
    params(
        ("order_id" = uuid::Uuid, Path, description = "Order id (UUID)")
    ),
    responses(
        (status = 200, description = "The payment", body = crate::openapi::Aggregate),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn get_payment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    by_uuid(
        &state,
        stores::PAYMENTS,
        "payment of order",
        &id,
        &uri,
        &headers,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/api/v1/shipments/{order_id}",
    tag = "shipments",
    summary = "An order's shipment",
    params(
        ("order_id" = uuid::Uuid, Path, description = "Order id (UUID)")
    ),
    responses(
        (status = 200, description = "The shipment", body = crate::openapi::Aggregate),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn get_shipment(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    uri: Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    by_uuid(
        &state,
        stores::SHIPMENTS,
        "shipment of order",
        &id,
        &uri,
        &headers,
    )
    .await
}

#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process answers", body = crate::openapi::Health)
    )
)]
async fn live() -> Response {
    Json(json!({"status": "UP"})).into_response()
}

#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    summary = "Readiness: every store restored and every task running",
    responses(
        (status = 200, description = "Ready", body = crate::openapi::Health),
        (status = 503, description = "Not ready yet (restoring, rebalancing)", body = crate::openapi::Health)
    )
)]
async fn ready(State(state): State<Arc<AppState>>) -> Response {
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Text exposition format", body = String, content_type = "text/plain")
    )
)]
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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
    use erp_schemas::traceparent::TraceParent;
    use erp_state_stores::{MemoryBackend, StoreBackend};
    use tower::ServiceExt;

    const ORDER: &str = "6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11";
    const CUSTOMER: &str = "0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33";

    /// Records what the handlers publish (Kafka itself is exercised by the real-socket
    /// tests in `tests/`).
    #[derive(Default)]
    struct RecordingBus {
        sent: std::sync::Mutex<Vec<Command>>,
        traces: std::sync::Mutex<Vec<Option<TraceParent>>>,
        fail: bool,
    }

    impl CommandBus for RecordingBus {
        fn send(&self, command: Command, trace: Option<TraceParent>) -> Result<(), String> {
            if self.fail {
                return Err("broker unreachable".into());
            }
            self.sent.lock().unwrap().push(command);
            self.traces.lock().unwrap().push(trace);
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
            locator: None,
            gateway: Gateway::default(),
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
    async fn the_callers_trace_context_goes_with_the_command_and_a_bad_one_is_dropped() {
        let bus = Arc::new(RecordingBus::default());
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for traceparent in [caller, "00-not-a-trace-01"] {
            let (status, _, _) = send(
                app(state_with(bus.clone())),
                "POST",
                "/api/v1/orders",
                &[JSON_CT, ("traceparent", traceparent)],
                &order_body(1),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        let traces = bus.traces.lock().unwrap();
        assert_eq!(
            traces
                .iter()
                .map(|t| t.map(|t| t.header()))
                .collect::<Vec<_>>(),
            [Some(caller.to_string()), None]
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

    fn state_with_orders(orders: &[Value]) -> AppState {
        let s = state();
        let backend = Arc::new(MemoryBackend::new(stores::ORDERS));
        let writes: Vec<_> = orders
            .iter()
            .map(|o| {
                (
                    o["id"].as_str().unwrap().as_bytes().to_vec(),
                    Some(o.to_string().into_bytes()),
                )
            })
            .collect();
        backend.write_batch(&writes, Some(1)).unwrap();
        s.stores.register(stores::ORDERS, 0, backend);
        let products = Arc::new(MemoryBackend::new(stores::PRODUCTS));
        products
            .write_batch(
                &[
                    (b"SKU-LOW".to_vec(), Some(json!({"sku": "SKU-LOW", "name": "low", "low_stock_threshold": 5, "warehouses": {"main": {"on_hand": 6, "reserved": 3}}}).to_string().into_bytes())),
                    (b"SKU-OK".to_vec(), Some(json!({"sku": "SKU-OK", "name": "ok", "low_stock_threshold": 5, "warehouses": {"main": {"on_hand": 60, "reserved": 3}}}).to_string().into_bytes())),
                ],
                Some(1),
            )
            .unwrap();
        s.stores.register(stores::PRODUCTS, 0, products);
        s
    }

    fn order_json(id: &str, customer: &str, status: &str, created_at: i64) -> Value {
        json!({
            "id": id, "customer_id": customer, "status": status, "version": 3,
            "created_at": created_at, "updated_at": created_at,
            "pricing": {"total": {"amount": "10.00", "currency": "USD"}},
            "history": [
                {"at": created_at, "event": "OrderCreated", "version": 1, "event_id": "e1",
                 "cause": {"id": "cmd-1", "topic": "order-commands", "partition": 2, "offset": 7},
                 "sent": ["inventory: ReserveStock 1 x SKU-1 (line 0)"], "detail": null}
            ],
        })
    }

    const O1: &str = "00000000-0000-4000-8000-000000000001";
    const O2: &str = "00000000-0000-4000-8000-000000000002";
    const O3: &str = "00000000-0000-4000-8000-000000000003";

    #[tokio::test]
    async fn orders_are_listed_filtered_and_paged_newest_first() {
        let s = state_with_orders(&[
            order_json(O1, CUSTOMER, "Completed", 100),
            order_json(O2, CUSTOMER, "Cancelled", 200),
            order_json(O3, ORDER, "Completed", 300),
        ]);
        let (status, _, body) = send(
            app(s.clone()),
            "GET",
            &format!("/api/v1/orders?customer_id={CUSTOMER}"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["total"], 2);
        assert_eq!(body["orders"][0]["id"], O2, "newest first");
        let (_, _, body) = send(
            app(s.clone()),
            "GET",
            "/api/v1/orders?status=completed&limit=1",
            &[],
            "",
        )
        .await;
        assert_eq!(
            (body["total"].as_u64(), body["orders"][0]["id"].as_str()),
            (Some(2), Some(O3))
        );
        let (_, _, body) = send(
            app(s.clone()),
            "GET",
            "/api/v1/orders?status=COMPLETED&limit=1&offset=1",
            &[],
            "",
        )
        .await;
        assert_eq!(body["orders"][0]["id"], O1);
        let (_, _, body) = send(
            app(s.clone()),
            "GET",
            "/api/v1/orders?created_from=150&created_to=300",
            &[],
            "",
        )
        .await;
        assert_eq!(body["total"], 1);
        for bad in [
            "/api/v1/orders?limit=0",
            "/api/v1/orders?limit=abc",
            "/api/v1/orders?nope=1",
        ] {
            let (status, h, _) = send(app(s.clone()), "GET", bad, &[], "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(h["content-type"], "application/problem+json");
        }
    }

    #[tokio::test]
    async fn the_timeline_shows_causes_and_commands_sent() {
        let s = state_with_orders(&[order_json(O1, CUSTOMER, "Pending", 100)]);
        let (status, _, body) = send(
            app(s.clone()),
            "GET",
            &format!("/api/v1/orders/{O1}/timeline"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let entry = &body["entries"][0];
        assert_eq!(entry["event"], "OrderCreated");
        assert_eq!(
            (
                entry["cause"]["topic"].as_str(),
                entry["cause"]["offset"].as_i64()
            ),
            (Some("order-commands"), Some(7))
        );
        assert_eq!(
            entry["sent"][0],
            "inventory: ReserveStock 1 x SKU-1 (line 0)"
        );
        let (status, _, _) = send(
            app(s),
            "GET",
            &format!("/api/v1/orders/{O2}/timeline"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn read_your_writes_waits_for_the_command_then_gives_up_with_503() {
        let s = state_with_orders(&[order_json(O1, CUSTOMER, "Pending", 100)]);
        let (status, _, body) = send(
            app(s.clone()),
            "GET",
            &format!("/api/v1/orders/{O1}?wait_for=cmd-1"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK, "already applied");
        assert_eq!(body["id"], O1);
        let started = std::time::Instant::now();
        let (status, h, _) = send(
            app(s),
            "GET",
            &format!("/api/v1/orders/{O1}?wait_for=cmd-2&timeout_ms=150"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h["retry-after"], "1");
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn the_low_stock_list_names_products_below_their_threshold() {
        let s = state_with_orders(&[]);
        let (status, _, body) = send(app(s), "GET", "/api/v1/inventory", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["products"].as_array().unwrap().len(), 1);
        assert_eq!(
            (
                body["products"][0]["sku"].as_str(),
                body["products"][0]["available"].as_u64()
            ),
            (Some("SKU-LOW"), Some(3))
        );
    }

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn token(scope: &str, exp_in_s: i64, secret: &[u8]) -> String {
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
            + exp_in_s;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "clerk-1", "scope": scope, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn secured() -> AppState {
        let mut s = state();
        s.gateway.auth = Some(Arc::new(
            gateway::JwtAuth::hs256(SECRET).unwrap().expect(None, None),
        ));
        s
    }

    #[tokio::test]
    async fn with_auth_on_tokens_are_required_checked_and_scoped() {
        let get = format!("/api/v1/orders/{ORDER}");
        let bearer = |t: &str| format!("Bearer {t}");
        let (status, h, body) = send(app(secured()), "GET", &get, &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            h[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        assert_eq!(body["status"], 401);
        let expired = bearer(&token("erp:read", -3600, SECRET));
        let forged = bearer(&token(
            "erp:write",
            3600,
            b"another-secret-of-32-bytes-length",
        ));
        for bad in [
            expired.as_str(),
            forged.as_str(),
            "Bearer not.a.jwt",
            "Basic abc",
        ] {
            let (status, _, body) =
                send(app(secured()), "GET", &get, &[("authorization", bad)], "").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
        }
        let reader = bearer(&token("erp:read", 3600, SECRET));
        let (status, _, _) = send(
            app(secured()),
            "GET",
            &get,
            &[("authorization", &reader)],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let cancel = format!("/api/v1/orders/{ORDER}");
        let (status, _, body) = send(
            app(secured()),
            "DELETE",
            &cancel,
            &[("authorization", &reader)],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let writer = bearer(&token("erp:read erp:write", 3600, SECRET));
        let (status, _, _) = send(
            app(secured()),
            "DELETE",
            &cancel,
            &[("authorization", &writer)],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        // Probes, metrics and the API description stay open.
        for open in ["/health/live", "/metrics", "/openapi.json"] {
            let (status, _, _) = send(app(secured()), "GET", open, &[], "").await;
            assert_eq!(status, StatusCode::OK, "{open}");
        }
    }

    #[tokio::test]
    async fn a_client_over_its_rate_gets_429_with_retry_after() {
        let mut s = state();
        s.gateway.limiter = gateway::RateLimiter::per_minute(2).map(Arc::new);
        let uri = format!("/api/v1/orders/{ORDER}");
        for left in ["1", "0"] {
            let (status, h, _) = send(app(s.clone()), "GET", &uri, &[], "").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(h["x-ratelimit-remaining-minute"], left);
        }
        let (status, h, body) = send(app(s.clone()), "GET", &uri, &[], "").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(h[header::RETRY_AFTER], "30");
        assert_eq!(body["status"], 429);
        // Probes are never limited.
        let (status, _, _) = send(app(s), "GET", "/health/live", &[], "").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn cors_answers_preflights_for_configured_origins_only() {
        let mut s = state();
        s.gateway.cors_origins = vec!["https://app.example.com".into()];
        let preflight = |origin: &'static str| {
            Request::builder()
                .method("OPTIONS")
                .uri("/api/v1/orders")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type,idempotency-key",
                )
                .body(Body::empty())
                .unwrap()
        };
        let ok = app(s.clone())
            .oneshot(preflight("https://app.example.com"))
            .await
            .unwrap();
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert_eq!(ok.headers()["access-control-max-age"], "3600");
        assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
        let other = app(s)
            .oneshot(preflight("https://evil.example"))
            .await
            .unwrap();
        assert!(!other.headers().contains_key("access-control-allow-origin"));
    }

    /// Applies each PlaceOrder to the orders store, as the order processor would.
    struct ApplyingBus(Arc<MemoryBackend>);

    impl CommandBus for ApplyingBus {
        fn send(&self, command: Command, _: Option<TraceParent>) -> Result<(), String> {
            if let Command::Order(c) = command
                && (c.place_order.is_some() || c.confirm_order.is_some())
            {
                // A confirm is refused (as the processor records a refusal).
                let entry = match c.confirm_order {
                    None => json!({"cause": {"id": c.command_id}, "event": "OrderCreated"}),
                    Some(_) => json!({"cause": {"id": c.command_id}, "event": "CommandRejected",
                                      "detail": "order is not waiting for a confirmation"}),
                };
                let order = json!({"id": c.order_id, "status": "Pending", "version": 1,
                    "history": [entry]});
                self.0
                    .write_batch(
                        &[(
                            c.order_id.into_bytes(),
                            Some(order.to_string().into_bytes()),
                        )],
                        Some(1),
                    )
                    .unwrap();
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn prefer_wait_answers_with_the_new_state_or_falls_back_to_202() {
        let stores = StoreRegistry::new();
        let orders = Arc::new(MemoryBackend::new(stores::ORDERS));
        stores.register(stores::ORDERS, 0, orders.clone());
        let s = AppState {
            stores,
            readiness: Readiness::new(),
            metrics: Arc::new(prometheus::Registry::new()),
            commands: Some(Arc::new(ApplyingBus(orders))),
            locator: None,
            gateway: Gateway::default(),
        };
        let body = format!(
            r#"{{"customer_id":"{CUSTOMER}","currency":"USD","lines":[{{"sku":"SKU-1","quantity":1,"unit_price":"10.00"}}],
               "shipping_address":{{"street":"1 Main St","city":"Springfield","postal_code":"12345","country":"US"}}}}"#
        );
        let json_ct = ("content-type", "application/json");
        let (status, h, order) = send(
            app(s.clone()),
            "POST",
            "/api/v1/orders",
            &[json_ct, ("prefer", "wait=2")],
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{order}");
        assert_eq!(h["preference-applied"], "wait=2");
        assert_eq!(h[header::ETAG], "\"1\"");
        assert_eq!(
            h[header::LOCATION].to_str().unwrap(),
            format!("/api/v1/orders/{}", order["id"].as_str().unwrap())
        );
        // A command whose effect never shows (no order to cancel here): 202 after the wait.
        let started = std::time::Instant::now();
        let (status, h, _) = send(
            app(s.clone()),
            "DELETE",
            &format!("/api/v1/orders/{ORDER}"),
            &[("prefer", "wait=1")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(!h.contains_key("preference-applied"));
        assert!(started.elapsed() >= Duration::from_secs(1));
        // A refused command is a 409 with the reason, not the unchanged order.
        let (status, _, problem) = send(
            app(s),
            "POST",
            &format!("/api/v1/orders/{}/confirm", order["id"].as_str().unwrap()),
            &[("prefer", "wait=2")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("not waiting for a confirmation")
        );
    }

    #[tokio::test]
    async fn waiting_for_an_order_that_never_appears_is_a_404_not_a_5xx() {
        let (status, _, body) = send(
            app(state()),
            "GET",
            &format!("/api/v1/orders/{O3}?wait_for=cmd-1&timeout_ms=100"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, _, _) = send(
            app(state()),
            "GET",
            &format!("/api/v1/orders/{O3}?timeout_ms=30001"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let doc = serde_json::to_value(ApiDoc::openapi_document()).unwrap();
        let (status, _, served) = send(app(state()), "GET", "/openapi.json", &[], "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(served, doc);
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let concrete = path
                .replace("{id}", ORDER)
                .replace("{order_id}", ORDER)
                .replace("{sku}", "SKU-1");
            for method in item.as_object().unwrap().keys() {
                if !["get", "post", "put", "delete"].contains(&method.as_str()) {
                    continue;
                }
                operations += 1;
                let (status, _, body) = send(
                    app(state()),
                    &method.to_uppercase(),
                    &concrete,
                    &[("content-type", "application/json")],
                    "{}",
                )
                .await;
                assert!(
                    status != StatusCode::METHOD_NOT_ALLOWED
                        && body["detail"] != "no such endpoint",
                    "{method} {path} is documented but not routed: {status} {body}"
                );
            }
        }
        assert_eq!(operations, 20, "documented operations");
    }
}
