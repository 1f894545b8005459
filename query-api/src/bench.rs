//! The query API benchmark's baseline (bench/query_api.sh): the same route shape served
//! by a bare axum handler with a fixed body — no store, no routing, no middleware — so
//! the ratio shows what the real handler's work costs.

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::get;

pub fn baseline_app(body: Bytes) -> Router {
    Router::new().route(
        "/api/v1/orders/{id}",
        get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}
