//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and
//! the request types (served at `/openapi.json`). A test checks that every documented
//! operation is routed and every route is documented.

use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// An RFC 9457 problem document (`application/problem+json`): every error answer.
#[derive(Serialize, ToSchema)]
pub struct ProblemDetails {
    /// Always `about:blank`: the status says what kind of problem it is.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong, for a human.
    pub detail: String,
}

/// 202 Accepted: the command is on its topic (acks=all); look at `Location`.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    pub sku: Option<String>,
    /// The command's id: `?wait_for=` on the order lookup waits for it.
    pub command_id: String,
    /// `ACCEPTED`.
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct OrderSummary {
    pub id: String,
    pub customer_id: String,
    pub status: String,
    /// The order total (amount and currency), null before pricing.
    pub total: Value,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One page of orders, newest first, over every instance.
#[derive(Serialize, ToSchema)]
pub struct OrderPage {
    /// Orders matching the filters.
    pub total: u64,
    pub offset: u64,
    pub limit: u64,
    pub orders: Vec<OrderSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct LowStockProduct {
    pub sku: String,
    pub name: String,
    pub available: u64,
    pub low_stock_threshold: u64,
    pub reorder_point: Value,
    pub reorder_quantity: Value,
    pub version: i64,
}

#[derive(Serialize, ToSchema)]
pub struct LowStockList {
    pub products: Vec<LowStockProduct>,
}

/// The order's saga, step by step.
#[derive(Serialize, ToSchema)]
pub struct Timeline {
    pub order_id: String,
    pub status: String,
    pub version: i64,
    /// Every command, reply and compensation: time, event, version, the input record
    /// (id, topic, partition, offset) and the commands it sent.
    pub entries: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `UP` or `DOWN`.
    pub status: String,
    /// Readiness per component (ready only).
    pub components: Option<Value>,
}

/// An aggregate as its processor stores it (order, product, customer, payment,
/// shipment); the fields are the domain's, see the README.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Aggregate(Value);

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "Only when the service is configured with a JWT key: reads need a \
                         valid token, commands the `erp:write` scope.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ERP order-to-shipment saga",
        description = "Interactive queries over the processors' state stores (forwarded to \
                       the instance owning the key) and commands published to Kafka.",
        version = env!("CARGO_PKG_VERSION"),
    ),
    paths(
        crate::list_orders,
        crate::commands::place_order,
        crate::get_order,
        crate::commands::update_order,
        crate::commands::cancel_order,
        crate::commands::confirm_order,
        crate::get_timeline,
        crate::low_stock,
        crate::get_product,
        crate::commands::restock,
        crate::commands::register_customer,
        crate::get_customer,
        crate::get_payment,
        crate::get_shipment,
        crate::commands::dispatch_shipment,
        crate::commands::deliver_shipment,
        crate::live,
        crate::ready,
        crate::metrics,
        document,
    ),
    modifiers(&BearerAuth),
    security((), ("bearer" = [])),
)]
pub struct ApiDoc;

impl ApiDoc {
    /// The document as served.
    pub fn openapi_document() -> utoipa::openapi::OpenApi {
        ApiDoc::openapi()
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3 document", body = Object))
)]
pub(crate) async fn document() -> Response {
    Json(ApiDoc::openapi()).into_response()
}
