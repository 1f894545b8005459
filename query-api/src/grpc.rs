//! The seed's synchronous inventory service over gRPC (`schemas/proto/inventory.proto`).
//!
//! `CheckStock` reads the products store (forwarded to the owning instance like the REST
//! lookups). `ReserveStock` / `ReleaseStock` publish inventory commands — ids derived
//! from the caller's idempotency key — and answer with what the inventory processor
//! decided, as seen on `inventory-events` (the event whose causation id is the command).
//! The holds carry the channel `grpc`, so the order saga never hears of them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tonic::{Request, Response, Status};

use erp_schemas::wire;

use crate::commands::{NAMESPACE, now_ms};
use crate::{AppState, Command, gateway, stores};

pub mod proto {
    tonic::include_proto!("erp.inventory.v1");
}

use proto::inventory_service_server::{InventoryService, InventoryServiceServer};
use proto::{
    CheckStockRequest, CheckStockResponse, Outcome, ReleaseStockRequest, ReserveStockRequest,
    StockLevel, StockOutcome,
};

/// The channel name gRPC holds carry.
pub const CHANNEL: &str = "grpc";

/// What the inventory processor decided for one command.
#[derive(Debug, Clone, PartialEq)]
pub enum StockAnswer {
    Reserved {
        quantity: u32,
        allocations: BTreeMap<String, u32>,
    },
    Rejected {
        reason: String,
    },
    Released {
        quantity: u32,
    },
}

/// Hands each answer to whoever waits for its command (by causation id). Fed by a
/// read_committed consumer of `inventory-events` in the running system.
#[derive(Default)]
pub struct Outcomes {
    inner: Mutex<OutcomesInner>,
}

#[derive(Default)]
struct OutcomesInner {
    /// Every caller waiting for a command (concurrent retries wait together).
    waiting: HashMap<String, Vec<tokio::sync::oneshot::Sender<StockAnswer>>>,
    /// Recent answers, so a retry (same key, already applied) is answered at once.
    recent: HashMap<String, StockAnswer>,
    order: VecDeque<String>,
}

const RECENT: usize = 100_000;

impl Outcomes {
    /// Registers interest in `command_id` — before the command is sent.
    pub fn expect(&self, command_id: &str) -> tokio::sync::oneshot::Receiver<StockAnswer> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut inner = self.inner.lock().expect("outcomes poisoned");
        match inner.recent.get(command_id) {
            Some(answer) => {
                let _ = tx.send(answer.clone());
            }
            None => inner
                .waiting
                .entry(command_id.to_string())
                .or_default()
                .push(tx),
        }
        rx
    }

    /// Drops the registrations of callers that gave up (their receivers are gone).
    pub fn forget(&self, command_id: &str) {
        let mut inner = self.inner.lock().expect("outcomes poisoned");
        if let Some(waiting) = inner.waiting.get_mut(command_id) {
            waiting.retain(|tx| !tx.is_closed());
            if waiting.is_empty() {
                inner.waiting.remove(command_id);
            }
        }
    }

    /// An answer read from the log.
    pub fn answered(&self, command_id: &str, answer: StockAnswer) {
        let mut inner = self.inner.lock().expect("outcomes poisoned");
        for tx in inner.waiting.remove(command_id).unwrap_or_default() {
            let _ = tx.send(answer.clone());
        }
        if inner
            .recent
            .insert(command_id.to_string(), answer)
            .is_none()
        {
            inner.order.push_back(command_id.to_string());
            if inner.order.len() > RECENT
                && let Some(old) = inner.order.pop_front()
            {
                inner.recent.remove(&old);
            }
        }
    }

    /// The answer an inventory event carries for its causing command, if any.
    pub fn of_event(event: &wire::InventoryEvent) -> Option<(String, StockAnswer)> {
        let cause = event.causation_id.clone()?;
        let answer = if let Some(r) = &event.stock_reserved {
            StockAnswer::Reserved {
                quantity: r.quantity.max(0) as u32,
                allocations: r
                    .allocation
                    .iter()
                    .flatten()
                    .map(|a| (a.warehouse.clone(), a.quantity.max(0) as u32))
                    .collect(),
            }
        } else if let Some(r) = &event.stock_rejected {
            StockAnswer::Rejected {
                reason: r.reason.clone(),
            }
        } else if let Some(r) = &event.stock_released {
            StockAnswer::Released {
                quantity: r.quantity.max(0) as u32,
            }
        } else if let Some(r) = &event.command_rejected {
            StockAnswer::Rejected {
                reason: r.reason.clone(),
            }
        } else {
            return None;
        };
        Some((cause, answer))
    }
}

pub struct InventoryGrpc {
    state: AppState,
    outcomes: Arc<Outcomes>,
}

impl InventoryGrpc {
    pub fn server(state: AppState, outcomes: Arc<Outcomes>) -> InventoryServiceServer<Self> {
        InventoryServiceServer::new(Self { state, outcomes })
    }

    /// The same bearer-token rules as the REST API; returns the headers a forwarded
    /// lookup needs (and the caller's `traceparent`) and the caller (token subject; empty
    /// without auth).
    fn authorize<T>(&self, req: &Request<T>, writes: bool) -> Result<(HeaderMap, String), Status> {
        let mut headers = HeaderMap::new();
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(t) = &token
            && let Ok(v) = t.parse()
        {
            headers.insert(axum::http::header::AUTHORIZATION, v);
        }
        // The caller's trace context: the command published for it continues it.
        if let Some(v) = req
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            && let Ok(v) = v.parse()
        {
            headers.insert("traceparent", v);
        }
        let Some(auth) = self.state.gateway.auth.as_ref() else {
            return Ok((headers, String::new()));
        };
        let token = token
            .as_deref()
            .and_then(|t| t.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        match auth.check(token, writes) {
            Ok(subject) => Ok((headers, subject.unwrap_or_default())),
            Err(gateway::Denied::Unauthenticated(e)) => Err(Status::unauthenticated(e)),
            Err(gateway::Denied::Forbidden(e)) => Err(Status::permission_denied(e)),
        }
    }

    /// A product from its owner (None: unknown SKU).
    async fn product(&self, sku: &str, headers: &HeaderMap) -> Result<Option<Value>, Status> {
        let path = format!("/api/v1/inventory/{sku}");
        let response = match crate::route(&self.state, stores::PRODUCTS, sku, &path, headers).await
        {
            Some(r) => r,
            None => {
                return match crate::lookup(&self.state, stores::PRODUCTS, sku.to_string()).await {
                    Ok(found) => Ok(found),
                    Err(_) => Err(Status::unavailable("products store unavailable")),
                };
            }
        };
        match response.status() {
            StatusCode::OK => {
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| Status::internal(e.to_string()))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(Status::unavailable(format!("owner instance answered {s}"))),
        }
    }

    /// Publishes and waits for the processor's answer.
    async fn send_and_wait(
        &self,
        command: wire::InventoryCommand,
        timeout_ms: u32,
        headers: &HeaderMap,
    ) -> Result<Option<StockAnswer>, Status> {
        let Some(bus) = self.state.commands.clone() else {
            return Err(Status::unavailable(
                "this instance does not accept commands",
            ));
        };
        let command_id = command.command_id.clone();
        let answer = self.outcomes.expect(&command_id);
        let trace = crate::commands::traceparent(headers);
        let sent =
            tokio::task::spawn_blocking(move || bus.send(Command::Inventory(command), trace))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        if let Err(e) = sent {
            self.outcomes.forget(&command_id);
            return Err(Status::unavailable(format!("command not published: {e}")));
        }
        let timeout = Duration::from_millis(match timeout_ms {
            0 => 5_000,
            t => u64::from(t).min(crate::MAX_WAIT_MS),
        });
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(a)) => Ok(Some(a)),
            _ => {
                self.outcomes.forget(&command_id);
                Ok(None)
            }
        }
    }
}

/// Serves the gRPC inventory service on `listener` until `shutdown` resolves (compiled
/// here, with this crate's optimisation level, like [`crate::serve`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: InventoryServiceServer<InventoryGrpc>,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown,
        )
        .await
}

fn check_sku(sku: &str) -> Result<(), Status> {
    if !crate::is_sku(sku) {
        return Err(Status::invalid_argument(format!(
            "SKU {sku:?} is not 3-32 of A-Z, 0-9 and -"
        )));
    }
    Ok(())
}

fn key_of(key: &str) -> Result<String, Status> {
    let key = key.trim();
    if key.is_empty() || key.len() > 255 {
        return Err(Status::invalid_argument(
            "idempotency_key must be 1-255 characters",
        ));
    }
    Ok(key.to_string())
}

fn derived(what: &str, key: &str) -> String {
    uuid::Uuid::new_v5(&NAMESPACE, format!("grpc/{what}/{key}").as_bytes()).to_string()
}

fn totals(product: &Value) -> (u32, u32) {
    product["warehouses"]
        .as_object()
        .map(|ws| {
            ws.values().fold((0, 0), |(o, r), w| {
                (
                    o + w["on_hand"].as_u64().unwrap_or(0) as u32,
                    r + w["reserved"].as_u64().unwrap_or(0) as u32,
                )
            })
        })
        .unwrap_or((0, 0))
}

/// Units a product holds for `reservation_id`.
fn held(product: &Value, reservation_id: &str) -> Option<u32> {
    let hold = product["holds"].get(reservation_id)?;
    Some(
        hold["lines"]
            .as_object()?
            .values()
            .flat_map(|a| a.as_object().into_iter().flat_map(|m| m.values()))
            .map(|q| q.as_u64().unwrap_or(0) as u32)
            .sum(),
    )
}

#[tonic::async_trait]
impl InventoryService for InventoryGrpc {
    async fn check_stock(
        &self,
        request: Request<CheckStockRequest>,
    ) -> Result<Response<CheckStockResponse>, Status> {
        let (headers, _) = self.authorize(&request, false)?;
        let skus = request.into_inner().skus;
        if skus.is_empty() || skus.len() > 100 {
            return Err(Status::invalid_argument("ask for 1-100 SKUs"));
        }
        let mut items = Vec::with_capacity(skus.len());
        for sku in skus {
            check_sku(&sku)?;
            let level = match self.product(&sku, &headers).await? {
                None => StockLevel {
                    sku,
                    ..Default::default()
                },
                Some(p) => {
                    let (on_hand, reserved) = totals(&p);
                    StockLevel {
                        sku,
                        found: true,
                        on_hand,
                        reserved,
                        available: on_hand.saturating_sub(reserved),
                        low_stock_threshold: p["low_stock_threshold"].as_u64().unwrap_or(0) as u32,
                    }
                }
            };
            items.push(level);
        }
        Ok(Response::new(CheckStockResponse { items }))
    }

    async fn reserve_stock(
        &self,
        request: Request<ReserveStockRequest>,
    ) -> Result<Response<StockOutcome>, Status> {
        let (headers, caller) = self.authorize(&request, true)?;
        let r = request.into_inner();
        check_sku(&r.sku)?;
        let key = key_of(&r.idempotency_key)?;
        if r.quantity == 0 || r.quantity > i32::MAX as u32 {
            return Err(Status::invalid_argument(
                "quantity must be greater than zero",
            ));
        }
        // A key names one request of one caller on one SKU (a retry repeats the
        // quantity; another quantity under the same key is another command).
        let scope = format!("{caller}/{}/{key}", r.sku);
        let reservation_id = derived("reservation", &scope);
        let command_id = derived("reserve", &format!("{scope}/{}", r.quantity));
        let mut cmd = wire::InventoryCommand::empty(command_id.clone(), r.sku.clone(), now_ms());
        cmd.reserve_stock = Some(wire::ReserveStock {
            order_id: reservation_id.clone(),
            line_no: 0,
            quantity: r.quantity as i32,
            channel: Some(CHANNEL.into()),
        });
        let mut outcome = StockOutcome {
            reservation_id: reservation_id.clone(),
            command_id,
            ..Default::default()
        };
        match self.send_and_wait(cmd, r.timeout_ms, &headers).await? {
            Some(StockAnswer::Reserved {
                quantity,
                allocations,
            }) => {
                outcome.set_outcome(Outcome::Reserved);
                outcome.quantity = quantity;
                outcome.allocations = allocations.into_iter().collect();
            }
            Some(StockAnswer::Rejected { reason }) => {
                outcome.set_outcome(Outcome::Rejected);
                outcome.reason = reason;
            }
            Some(StockAnswer::Released { .. }) => {
                return Err(Status::internal("a reservation was answered by a release"));
            }
            // Applied before (a retry whose answer this instance did not see), or slow.
            None => match self.product(&r.sku, &headers).await? {
                Some(p) if held(&p, &reservation_id).is_some() => {
                    outcome.set_outcome(Outcome::AlreadyApplied);
                    outcome.quantity = held(&p, &reservation_id).unwrap_or(0);
                }
                _ => {
                    return Err(Status::deadline_exceeded(format!(
                        "no answer for reservation {reservation_id} in time; retry with the same key"
                    )));
                }
            },
        }
        Ok(Response::new(outcome))
    }

    async fn release_stock(
        &self,
        request: Request<ReleaseStockRequest>,
    ) -> Result<Response<StockOutcome>, Status> {
        let (headers, caller) = self.authorize(&request, true)?;
        let r = request.into_inner();
        check_sku(&r.sku)?;
        let key = key_of(&r.idempotency_key)?;
        if uuid::Uuid::parse_str(&r.reservation_id).is_err() {
            return Err(Status::invalid_argument("reservation_id must be a UUID"));
        }
        let command_id = derived(
            "release",
            &format!("{caller}/{}/{}/{key}", r.sku, r.reservation_id),
        );
        let mut cmd = wire::InventoryCommand::empty(command_id.clone(), r.sku.clone(), now_ms());
        cmd.release_stock = Some(wire::ReleaseStock {
            order_id: r.reservation_id.clone(),
            reason: if r.reason.trim().is_empty() {
                "released via gRPC".into()
            } else {
                r.reason.clone()
            },
            // Only a gRPC hold is released here: inventory refuses a channel's release
            // of a saga hold (or of nothing) with a rejection.
            channel: Some(CHANNEL.into()),
        });
        let mut outcome = StockOutcome {
            reservation_id: r.reservation_id.clone(),
            command_id,
            ..Default::default()
        };
        match self.send_and_wait(cmd, r.timeout_ms, &headers).await? {
            Some(StockAnswer::Released { quantity }) => {
                outcome.set_outcome(Outcome::Released);
                outcome.quantity = quantity;
            }
            Some(StockAnswer::Rejected { reason }) => {
                outcome.set_outcome(Outcome::Rejected);
                outcome.reason = reason;
            }
            Some(StockAnswer::Reserved { .. }) => {
                return Err(Status::internal("a release was answered by a reservation"));
            }
            // No answer seen: a retry of a release applied before (duplicates are not
            // answered again) or a slow processor; the store tells which.
            None => match self.product(&r.sku, &headers).await? {
                Some(p) if held(&p, &r.reservation_id).is_some() => {
                    return Err(Status::deadline_exceeded(
                        "the hold is still there; retry with the same key",
                    ));
                }
                _ => {
                    outcome.set_outcome(Outcome::Released);
                    outcome.reason = "nothing was held".into();
                }
            },
        }
        Ok(Response::new(outcome))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_waiter_and_a_retry_is_answered_from_recent_ones() {
        let outcomes = Outcomes::default();
        let rx = outcomes.expect("c1");
        outcomes.answered("other", StockAnswer::Released { quantity: 1 });
        let answer = StockAnswer::Rejected {
            reason: "insufficient stock".into(),
        };
        outcomes.answered("c1", answer.clone());
        assert_eq!(rx.await.unwrap(), answer);
        // Same command again (a retry): answered at once from the recent answers.
        assert_eq!(outcomes.expect("c1").await.unwrap(), answer);
    }

    #[test]
    fn ids_derive_from_the_idempotency_key() {
        assert_eq!(derived("reserve", "k"), derived("reserve", "k"));
        assert_ne!(derived("reserve", "k"), derived("reservation", "k"));
        assert!(key_of("  ").is_err());
    }

    #[test]
    fn held_units_are_summed_over_lines_and_warehouses() {
        let p = serde_json::json!({"holds": {"r": {"lines": {"0": {"main": 2, "east": 3}}}}});
        assert_eq!(held(&p, "r"), Some(5));
        assert_eq!(held(&p, "x"), None);
    }
}
