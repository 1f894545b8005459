//! The command side of the REST surface: requests are validated, turned into Avro
//! commands and published to the saga's command topics; the answer is 202 Accepted with
//! where to look. `Idempotency-Key` makes the ids deterministic (UUID v5 of the key), so
//! a repeated request publishes the same command — which the processors apply once —
//! and gets the same answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use erp_schemas::traceparent::TraceParent;
use erp_schemas::wire;

use crate::{AppState, CorrelationId, is_uuid, problem};

/// A command on its way to Kafka.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Order(wire::OrderCommand),
    Customer(wire::CustomerCommand),
    Inventory(wire::InventoryCommand),
    Shipping(wire::ShippingCommand),
}

/// Where commands go: Kafka in the running system. `send` blocks until the broker
/// acknowledged the record (acks=all), so a 202 never hides a lost command. `trace` is
/// the caller's W3C trace context: the command record carries it as its `traceparent`
/// header, so the saga's trace continues the caller's.
pub trait CommandBus: Send + Sync + 'static {
    fn send(&self, command: Command, trace: Option<TraceParent>) -> Result<(), String>;
}

/// The request's valid `traceparent` header, if any (an invalid one is ignored, as W3C
/// says: the saga then starts a trace of its own).
pub(crate) fn traceparent(headers: &HeaderMap) -> Option<TraceParent> {
    headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// A problem to answer with (small, unlike a whole `Response`).
pub struct Problem(StatusCode, String);

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        problem(self.0, self.1)
    }
}

/// JSON body extractor whose rejections are problem documents.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_problem(rejection)),
        }
    }
}

fn json_problem(rejection: JsonRejection) -> Response {
    let status = match &rejection {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
        JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::BAD_REQUEST,
    };
    problem(status, rejection.body_text())
}

pub(crate) const NAMESPACE: uuid::Uuid = uuid::Uuid::NAMESPACE_OID;

/// (aggregate id, command id): fresh, or derived from the Idempotency-Key.
fn ids(
    headers: &HeaderMap,
    what: &str,
    aggregate: Option<&str>,
) -> Result<(String, String), Problem> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.trim().is_empty() && k.len() <= 255 => Some(k.trim().to_string()),
            _ => {
                return Err(Problem(
                    StatusCode::BAD_REQUEST,
                    "Idempotency-Key must be 1-255 visible characters".into(),
                ));
            }
        },
    };
    Ok(match key {
        None => (
            aggregate.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string),
            uuid::Uuid::new_v4().to_string(),
        ),
        Some(k) => (
            aggregate.map_or_else(
                || uuid::Uuid::new_v5(&NAMESPACE, format!("{what}/{k}").as_bytes()).to_string(),
                str::to_string,
            ),
            uuid::Uuid::new_v5(
                &NAMESPACE,
                format!("{what}/{}/command/{k}", aggregate.unwrap_or("")).as_bytes(),
            )
            .to_string(),
        ),
    })
}

/// The state the command leads to, if it shows up within `secs` (200 responses only).
async fn wait_for_state(
    state: &AppState,
    wait: &Wait,
    secs: u64,
    headers: &HeaderMap,
) -> Option<Response> {
    let timeout = std::time::Duration::from_secs(secs);
    let r = match wait {
        Wait::Nothing => return None,
        Wait::Order {
            order_id,
            command_id,
        } => {
            let path = format!(
                "/api/v1/orders/{order_id}?wait_for={command_id}&timeout_ms={}",
                timeout.as_millis()
            );
            let r =
                crate::read_order(state, order_id, Some(command_id), timeout, &path, headers).await;
            if r.status() != StatusCode::OK {
                return None;
            }
            // Applied — or refused: a refusal is the answer, not the new state.
            let (parts, body) = r.into_parts();
            let bytes = axum::body::to_bytes(body, 16 << 20).await.ok()?;
            let order: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            let refusal = order["history"].as_array().and_then(|h| {
                h.iter().find(|e| {
                    e["cause"]["id"] == command_id.as_str() && e["event"] == "CommandRejected"
                })
            });
            if let Some(entry) = refusal {
                return Some(problem(
                    StatusCode::CONFLICT,
                    format!(
                        "command {command_id} was refused: {}",
                        entry["detail"].as_str().unwrap_or("no reason given")
                    ),
                ));
            }
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
        Wait::Customer(id) => {
            crate::read_until_found(
                state,
                crate::stores::CUSTOMERS,
                id,
                &format!("/api/v1/customers/{id}"),
                timeout,
                headers,
            )
            .await
        }
    };
    (r.status() == StatusCode::OK).then_some(r)
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a `Prefer: wait=N` request waits for once its command is published.
enum Wait {
    /// The order's history names the command.
    Order {
        order_id: String,
        command_id: String,
    },
    /// The customer exists.
    Customer(String),
    /// Nothing observable: the preference is not applied.
    Nothing,
}

/// `Prefer: wait=N` (RFC 7240): seconds the client is willing to wait for the new
/// state, capped at [`MAX_WAIT_MS`](crate::MAX_WAIT_MS).
fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next()
        .map(|n| n.min(crate::MAX_WAIT_MS / 1000))
}

/// Publishes off the async workers and answers 202 with the ids and a Location — or,
/// when the client prefers to wait and the new state shows up in time, 200 with it.
async fn publish(
    state: &AppState,
    command: Command,
    location: String,
    body: serde_json::Value,
    correlation: &CorrelationId,
    headers: &HeaderMap,
    wait: Wait,
) -> Response {
    let Some(bus) = state.commands.clone() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "this instance does not accept commands".into(),
        );
    };
    let bus: Arc<dyn CommandBus> = bus;
    let trace = traceparent(headers);
    match tokio::task::spawn_blocking(move || bus.send(command, trace)).await {
        Ok(Ok(())) => {
            if let Some(secs) = prefer_wait(headers)
                && let Some(mut r) = wait_for_state(state, &wait, secs, headers).await
            {
                let h = r.headers_mut();
                // Ids and SKUs are validated ASCII; never panic on a header anyway.
                if let Ok(v) = HeaderValue::from_str(&location) {
                    h.insert(header::LOCATION, v);
                }
                h.insert(
                    header::HeaderName::from_static("preference-applied"),
                    HeaderValue::from_str(&format!("wait={secs}")).expect("ascii"),
                );
                return r;
            }
            (
                StatusCode::ACCEPTED,
                [
                    (header::LOCATION, location),
                    (
                        header::HeaderName::from_static("x-correlation-id"),
                        correlation.0.clone(),
                    ),
                ],
                Json(body),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "command not published");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the command could not be published, retry: {e}"),
            )
        }
        Err(e) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("publishing interrupted: {e}"),
        ),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    #[schema(pattern = "^[A-Z0-9][A-Z0-9-]{2,31}$")]
    pub sku: String,
    pub product_name: Option<String>,
    #[schema(minimum = 1)]
    pub quantity: i32,
    /// A decimal in the order's currency, e.g. "12.50".
    #[schema(pattern = "^[0-9]{1,13}(\\.[0-9]{1,10})?$")]
    pub unit_price: String,
    #[schema(pattern = "^[0-9]{1,13}(\\.[0-9]{1,10})?$")]
    pub unit_weight_kg: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    #[schema(format = Uuid)]
    pub customer_id: String,
    #[schema(pattern = "^(USD|EUR|CNY)$")]
    pub currency: String,
    pub lines: Vec<LineRequest>,
    pub shipping_address: AddressRequest,
    pub payment_method: Option<String>,
    pub shipping_method: Option<String>,
    pub manual_confirmation: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrderRequest {
    pub lines: Vec<LineRequest>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomerRequest {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: AddressRequest,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    #[schema(minimum = 1)]
    pub quantity: i32,
    pub warehouse: Option<String>,
}

/// Shape checks the API can make without the domain (the processors validate again and
/// answer business errors with rejection events).
fn check_lines(lines: &[LineRequest]) -> Result<Vec<wire::OrderLine>, String> {
    if lines.is_empty() {
        return Err("an order needs at least one line".into());
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if l.quantity <= 0 {
                return Err(format!("line {i}: quantity must be greater than zero"));
            }
            if !crate::is_sku(&l.sku) {
                return Err(format!(
                    "line {i}: SKU {:?} is not 3-32 of A-Z, 0-9 and -",
                    l.sku
                ));
            }
            if !is_decimal(&l.unit_price) {
                return Err(format!(
                    "line {i}: unit_price {:?} is not a non-negative decimal",
                    l.unit_price
                ));
            }
            if let Some(w) = &l.unit_weight_kg
                && !is_decimal(w)
            {
                return Err(format!(
                    "line {i}: unit_weight_kg {w:?} is not a non-negative decimal"
                ));
            }
            Ok(wire::OrderLine {
                sku: l.sku.clone(),
                product_name: l.product_name.clone().unwrap_or_else(|| l.sku.clone()),
                quantity: l.quantity,
                unit_price: l.unit_price.clone(),
                unit_weight_kg: l.unit_weight_kg.clone(),
            })
        })
        .collect()
}

fn is_decimal(s: &str) -> bool {
    let s = s.trim();
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next().unwrap_or("0");
    !int.is_empty()
        && int.len() <= 13
        && int.chars().all(|c| c.is_ascii_digit())
        && !frac.is_empty()
        && frac.len() <= 10
        && frac.chars().all(|c| c.is_ascii_digit())
}

fn address(a: &AddressRequest) -> wire::Address {
    wire::Address {
        street: a.street.clone(),
        city: a.city.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

fn unprocessable(reason: String) -> Response {
    problem(StatusCode::UNPROCESSABLE_ENTITY, reason)
}

fn uuid_path(id: &str, what: &str) -> Result<String, Problem> {
    if is_uuid(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(Problem(
            StatusCode::BAD_REQUEST,
            format!("{what} id {id:?} is not a UUID"),
        ))
    }
}

/// `If-Match: "<version>"` (or a bare number) → the expected version.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, Problem> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|s| s.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| {
                Problem(
                    StatusCode::BAD_REQUEST,
                    "If-Match must carry the order version, e.g. \"3\"".into(),
                )
            }),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    summary = "Place an order (PlaceOrder command)",
    request_body = PlaceOrderRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer 200 with the new state if it shows up within N seconds (max 30)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 200, description = "Prefer: wait=N and the order was placed in time", body = crate::openapi::Aggregate),
        (status = 409, description = "Prefer: wait=N and the order processor refused the command (reason in detail)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn place_order(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PlaceOrderRequest>,
) -> Response {
    if !is_uuid(&req.customer_id) {
        return unprocessable(format!("customer_id {:?} is not a UUID", req.customer_id));
    }
    if !["USD", "EUR", "CNY"].contains(&req.currency.as_str()) {
        return unprocessable(format!(
            "unsupported currency {:?} (supported: USD, EUR, CNY)",
            req.currency
        ));
    }
    let lines = match check_lines(&req.lines) {
        Ok(l) => l,
        Err(e) => return unprocessable(e),
    };
    let (order_id, command_id) = match ids(&headers, "order", None) {
        Ok(ids) => ids,
        Err(r) => return r.into_response(),
    };
    let mut cmd = wire::OrderCommand::empty(command_id.clone(), order_id.clone(), now_ms());
    cmd.correlation_id = Some(correlation.0.clone());
    cmd.place_order = Some(wire::PlaceOrder {
        customer_id: req.customer_id.to_ascii_lowercase(),
        currency: req.currency,
        lines,
        shipping_address: address(&req.shipping_address),
        payment_method: req.payment_method,
        shipping_method: req.shipping_method,
        manual_confirmation: req.manual_confirmation,
    });
    let body = json!({"order_id": order_id, "command_id": command_id, "status": "ACCEPTED"});
    let wait = Wait::Order {
        order_id: order_id.clone(),
        command_id,
    };
    publish(
        &state,
        Command::Order(cmd),
        format!("/api/v1/orders/{order_id}"),
        body,
        &correlation,
        &headers,
        wait,
    )
    .await
}

async fn order_command(
    state: &AppState,
    correlation: &CorrelationId,
    headers: &HeaderMap,
    id: &str,
    what: &str,
    set: impl FnOnce(&mut wire::OrderCommand),
) -> Response {
    let order_id = match uuid_path(id, "order") {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let expected = match if_match(headers) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (_, command_id) = match ids(headers, what, Some(&order_id)) {
        Ok(ids) => ids,
        Err(r) => return r.into_response(),
    };
    let mut cmd = wire::OrderCommand::empty(command_id.clone(), order_id.clone(), now_ms());
    cmd.correlation_id = Some(correlation.0.clone());
    cmd.expected_version = expected;
    set(&mut cmd);
    let body = json!({"order_id": order_id, "command_id": command_id, "status": "ACCEPTED"});
    let wait = Wait::Order {
        order_id: order_id.clone(),
        command_id,
    };
    publish(
        state,
        Command::Order(cmd),
        format!("/api/v1/orders/{order_id}"),
        body,
        correlation,
        headers,
        wait,
    )
    .await
}

#[utoipa::path(
    put,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    summary = "Replace the lines of a pending order (UpdateOrder)",
    request_body = UpdateOrderRequest,
    params(
        ("id" = uuid::Uuid, Path, description = "Order id (UUID)"),
        ("If-Match" = Option<String>, Header, description = "Expected order version (the ETag); a mismatch is rejected by the order processor"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer 200 with the new state if it shows up within N seconds (max 30)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 200, description = "Prefer: wait=N and the command was applied in time", body = crate::openapi::Aggregate),
        (status = 409, description = "Prefer: wait=N and the order processor refused the command (reason in detail)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn update_order(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateOrderRequest>,
) -> Response {
    let lines = match check_lines(&req.lines) {
        Ok(l) => l,
        Err(e) => return unprocessable(e),
    };
    order_command(&state, &correlation, &headers, &id, "update", |c| {
        c.update_order = Some(wire::UpdateOrder { lines })
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    summary = "Cancel an order (CancelOrder; compensations follow)",
    request_body = Option<CancelOrderRequest>,
    params(
        ("id" = uuid::Uuid, Path, description = "Order id (UUID)"),
        ("If-Match" = Option<String>, Header, description = "Expected order version (the ETag); a mismatch is rejected by the order processor"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer 200 with the new state if it shows up within N seconds (max 30)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 200, description = "Prefer: wait=N and the command was applied in time", body = crate::openapi::Aggregate),
        (status = 409, description = "Prefer: wait=N and the order processor refused the command (reason in detail)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn cancel_order(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    // The body is optional: `{"reason": "…"}` or nothing.
    let request: CancelOrderRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelOrderRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return unprocessable(format!("invalid cancel request: {e}")),
        }
    };
    let reason = request
        .reason
        .unwrap_or_else(|| "cancelled via the API".into());
    order_command(&state, &correlation, &headers, &id, "cancel", |c| {
        c.cancel_order = Some(wire::CancelOrder { reason })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/confirm",
    tag = "orders",
    summary = "Confirm an order placed with manual_confirmation",
    params(
        ("id" = uuid::Uuid, Path, description = "Order id (UUID)"),
        ("If-Match" = Option<String>, Header, description = "Expected order version (the ETag); a mismatch is rejected by the order processor"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer 200 with the new state if it shows up within N seconds (max 30)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 200, description = "Prefer: wait=N and the command was applied in time", body = crate::openapi::Aggregate),
        (status = 409, description = "Prefer: wait=N and the order processor refused the command (reason in detail)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn confirm_order(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    order_command(&state, &correlation, &headers, &id, "confirm", |c| {
        c.confirm_order = Some(wire::ConfirmOrder { note: None })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/customers",
    tag = "customers",
    summary = "Register a customer",
    request_body = RegisterCustomerRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer 200 with the new state if it shows up within N seconds (max 30)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 200, description = "Prefer: wait=N and the customer exists in time", body = crate::openapi::Aggregate),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn register_customer(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterCustomerRequest>,
) -> Response {
    if req.name.trim().is_empty() {
        return unprocessable("name must not be empty".into());
    }
    let (customer_id, command_id) = match ids(&headers, "customer", None) {
        Ok(ids) => ids,
        Err(r) => return r.into_response(),
    };
    let mut cmd = wire::CustomerCommand::empty(command_id.clone(), customer_id.clone(), now_ms());
    cmd.correlation_id = Some(correlation.0.clone());
    cmd.register_customer = Some(wire::RegisterCustomer {
        name: req.name,
        email: req.email,
        phone: req.phone,
        address: address(&req.address),
    });
    let body = json!({"customer_id": customer_id, "command_id": command_id, "status": "ACCEPTED"});
    publish(
        &state,
        Command::Customer(cmd),
        format!("/api/v1/customers/{customer_id}"),
        body,
        &correlation,
        &headers,
        Wait::Customer(customer_id.clone()),
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/inventory/{sku}/restock",
    tag = "inventory",
    summary = "Restock a SKU",
    request_body = RestockRequest,
    params(
        ("sku" = String, Path, pattern = "^[A-Z0-9][A-Z0-9-]{2,31}$", description = "SKU: 3-32 of A-Z, 0-9 and -"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn restock(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(sku): Path<String>,
    ApiJson(req): ApiJson<RestockRequest>,
) -> Response {
    if !crate::is_sku(&sku) {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("SKU {sku:?} is not 3-32 of A-Z, 0-9 and -"),
        );
    }
    if req.quantity <= 0 {
        return unprocessable("quantity must be greater than zero".into());
    }
    let (_, command_id) = match ids(&headers, "restock", Some(&sku)) {
        Ok(ids) => ids,
        Err(r) => return r.into_response(),
    };
    let mut cmd = wire::InventoryCommand::empty(command_id.clone(), sku.clone(), now_ms());
    cmd.correlation_id = Some(correlation.0.clone());
    cmd.restock = Some(wire::Restock {
        quantity: req.quantity,
        warehouse: req.warehouse,
    });
    let body = json!({"sku": sku, "command_id": command_id, "status": "ACCEPTED"});
    publish(
        &state,
        Command::Inventory(cmd),
        format!("/api/v1/inventory/{sku}"),
        body,
        &correlation,
        &headers,
        Wait::Nothing,
    )
    .await
}

async fn shipment_command(
    state: &AppState,
    correlation: &CorrelationId,
    headers: &HeaderMap,
    id: &str,
    what: &str,
    set: impl FnOnce(&mut wire::ShippingCommand),
) -> Response {
    let order_id = match uuid_path(id, "order") {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let (_, command_id) = match ids(headers, what, Some(&order_id)) {
        Ok(ids) => ids,
        Err(r) => return r.into_response(),
    };
    let mut cmd = wire::ShippingCommand::empty(command_id.clone(), order_id.clone(), now_ms());
    cmd.correlation_id = Some(correlation.0.clone());
    set(&mut cmd);
    let body = json!({"order_id": order_id, "command_id": command_id, "status": "ACCEPTED"});
    publish(
        state,
        Command::Shipping(cmd),
        format!("/api/v1/shipments/{order_id}"),
        body,
        correlation,
        headers,
        Wait::Nothing,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/shipments/{order_id}/dispatch",
    tag = "shipments",
    summary = "The carrier picked the order's parcel up",
    params(
        ("order_id" = uuid::Uuid, Path, description = "Order id (UUID)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn dispatch_shipment(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shipment_command(&state, &correlation, &headers, &id, "dispatch", |c| {
        c.dispatch_shipment = Some(wire::DispatchShipment { note: None })
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/shipments/{order_id}/deliver",
    tag = "shipments",
    summary = "The carrier delivered the order's parcel",
    params(
        ("order_id" = uuid::Uuid, Path, description = "Order id (UUID)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same key, same ids: a retry publishes the same command (applied once)"),
        ("X-Correlation-ID" = Option<String>, Header, description = "Carried into the Kafka headers; generated when absent")
    ),
    responses(
        (status = 202, description = "Published; Location says where to look", body = crate::openapi::Accepted),
        (status = 400, description = "Malformed id, query or header", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid bearer token (when auth is on)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 403, description = "The token lacks the erp:write scope", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "Well-formed but invalid command", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit exceeded (Retry-After)", body = crate::openapi::ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "Owner unavailable (rebalancing), wait bound passed, or broker unreachable; Retry-After", body = crate::openapi::ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn deliver_shipment(
    State(state): State<Arc<AppState>>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shipment_command(&state, &correlation, &headers, &id, "deliver", |c| {
        c.deliver_shipment = Some(wire::DeliverShipment { note: None })
    })
    .await
}
