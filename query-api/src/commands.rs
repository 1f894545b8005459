//! The command side of the REST surface: requests are validated, turned into Avro
//! commands and published to the saga's command topics; the answer is 202 Accepted with
//! where to look. `Idempotency-Key` makes the ids deterministic (UUID v5 of the key), so
//! a repeated request publishes the same command — which the processors apply once —
//! and gets the same answer.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

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
/// acknowledged the record (acks=all), so a 202 never hides a lost command.
pub trait CommandBus: Send + Sync + 'static {
    fn send(&self, command: Command) -> Result<(), String>;
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

const NAMESPACE: uuid::Uuid = uuid::Uuid::NAMESPACE_OID;

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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Publishes off the async workers and answers 202 with the ids and a Location.
async fn publish(
    state: &AppState,
    command: Command,
    location: String,
    body: serde_json::Value,
    correlation: &CorrelationId,
) -> Response {
    let Some(bus) = state.commands.clone() else {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "this instance does not accept commands".into(),
        );
    };
    let bus: Arc<dyn CommandBus> = bus;
    match tokio::task::spawn_blocking(move || bus.send(command)).await {
        Ok(Ok(())) => (
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
            .into_response(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    pub sku: String,
    pub product_name: Option<String>,
    pub quantity: i32,
    pub unit_price: String,
    pub unit_weight_kg: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressRequest {
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderRequest {
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<LineRequest>,
    pub shipping_address: AddressRequest,
    pub payment_method: Option<String>,
    pub shipping_method: Option<String>,
    pub manual_confirmation: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrderRequest {
    pub lines: Vec<LineRequest>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrderRequest {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomerRequest {
    pub name: String,
    pub email: String,
    pub phone: Option<String>,
    pub address: AddressRequest,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
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
            if l.sku.trim().is_empty() || l.sku.len() > 32 {
                return Err(format!("line {i}: SKU must be 1-32 characters"));
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

pub async fn place_order(
    State(state): State<AppState>,
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
    publish(
        &state,
        Command::Order(cmd),
        format!("/api/v1/orders/{order_id}"),
        body,
        &correlation,
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
    publish(
        state,
        Command::Order(cmd),
        format!("/api/v1/orders/{order_id}"),
        body,
        correlation,
    )
    .await
}

pub async fn update_order(
    State(state): State<AppState>,
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

pub async fn cancel_order(
    State(state): State<AppState>,
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

pub async fn confirm_order(
    State(state): State<AppState>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    order_command(&state, &correlation, &headers, &id, "confirm", |c| {
        c.confirm_order = Some(wire::ConfirmOrder { note: None })
    })
    .await
}

pub async fn register_customer(
    State(state): State<AppState>,
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
    )
    .await
}

pub async fn restock(
    State(state): State<AppState>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(sku): Path<String>,
    ApiJson(req): ApiJson<RestockRequest>,
) -> Response {
    if sku.is_empty() || sku.len() > 32 {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("SKU {sku:?} is not 1-32 characters"),
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
    )
    .await
}

pub async fn dispatch_shipment(
    State(state): State<AppState>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shipment_command(&state, &correlation, &headers, &id, "dispatch", |c| {
        c.dispatch_shipment = Some(wire::DispatchShipment { note: None })
    })
    .await
}

pub async fn deliver_shipment(
    State(state): State<AppState>,
    correlation: CorrelationId,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    shipment_command(&state, &correlation, &headers, &id, "deliver", |c| {
        c.deliver_shipment = Some(wire::DeliverShipment { note: None })
    })
    .await
}
