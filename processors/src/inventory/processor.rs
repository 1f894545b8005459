//! Adapter: inventory commands in; inventory events out (keyed by SKU), plus the replies
//! the order saga waits for (keyed by order id). A wall-clock punctuation expires holds
//! that outlived their TTL by writing ExpireReservation commands to the processor's own
//! input topic, so the decision is in the log and a replay makes the same one.
//!
//! A hold's age is wall-clock time since the punctuation first saw it, not since its
//! record timestamp: record time comes from the client (a skewed or replayed timestamp
//! must not expire a fresh hold at once). The sightings live in memory; a restart starts
//! them over, which can only lengthen a hold. A hold thus expires between one and about
//! one and a half TTLs after it was taken.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::command::InventoryCommand;
use super::decider::{DEFAULT_WAREHOUSE, Product, decide, evolve};
use super::event::InventoryEvent;
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{
    InputRecord, ProcessError, Processor, ProcessorContext, PunctuationType, Topology,
};
use crate::order::pricing::DEFAULT_UNIT_WEIGHT_KG;
use crate::values::{OrderId, Quantity, Sku, ValueError, derived_id};

pub const PRODUCTS_STORE: &str = "products";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>, reservation_ttl: Duration) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("inventory"),
        source_topics: vec![topics.inventory_commands()],
        sink_topics: vec![
            topics.inventory_events(),
            topics.order_replies(),
            topics.inventory_commands(),
        ],
        stores: vec![PRODUCTS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(InventoryProcessor {
                serde: serde.clone(),
                topics: t.clone(),
                reservation_ttl,
                watched: HashMap::new(),
            })
        }),
    }
}

pub struct InventoryProcessor {
    serde: Arc<AvroSerde>,
    topics: Topics,
    reservation_ttl: Duration,
    /// Every hold (SKU, order, hold id) seen by the last punctuation.
    watched: HashMap<(String, String, String), Watch>,
}

/// What the expiry punctuation knows of one hold.
#[derive(Debug, Clone, Copy)]
struct Watch {
    /// Wall-clock time the hold was first seen.
    first_seen: i64,
    /// Its ExpireReservation is written (committed, or in the open transaction) but not
    /// yet processed. Without this every punctuation wrote the command again while the
    /// processor lagged behind its own input: found by the 100,000-order chaos run, where
    /// repeated expiries grew the backlog they were waiting behind (56,433 "reservation
    /// expired" in one instance). Forgotten on abort and on restart.
    expiry_sent: bool,
}

impl Processor for InventoryProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let cmd: wire::InventoryCommand =
            adapter::decode(&self.serde, SchemaKind::InventoryCommand, record)?;
        if adapter::seen_before(ctx, &cmd.command_id, cmd.issued_at)? {
            tracing::debug!(command_id = %cmd.command_id, "duplicate command ignored");
            return Ok(());
        }
        let correlation = cmd
            .correlation_id
            .clone()
            .unwrap_or_else(|| cmd.command_id.clone());
        let sku = match Sku::parse(&cmd.sku) {
            Ok(s) => s,
            Err(e) => return self.reject(ctx, &cmd, &correlation, 0, e.to_string()),
        };
        let state: Option<Product> = adapter::load(ctx, PRODUCTS_STORE, sku.as_str())?;
        let version = state.as_ref().map_or(0, |p| p.version);
        let command = match to_domain(&cmd) {
            Ok(c) => c,
            Err(reason) => {
                // A saga request must always be answered, or its order waits forever.
                if let Some(answer) = refusal(&cmd, state.as_ref(), &reason) {
                    return self.emit(ctx, &sku, state, &[answer], &cmd, &correlation);
                }
                return self.reject(ctx, &cmd, &correlation, version, reason);
            }
        };
        match decide(&sku, state.as_ref(), &command, cmd.issued_at) {
            Ok(events) => self.emit(ctx, &sku, state, &events, &cmd, &correlation),
            Err(rejection) => self.reject(ctx, &cmd, &correlation, version, rejection.to_string()),
        }
    }

    fn punctuations(&self) -> Vec<(PunctuationType, Duration)> {
        // Often enough that a hold outlives its TTL by at most a quarter of it.
        let every =
            (self.reservation_ttl / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        vec![(PunctuationType::WallClockTime, every)]
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        _kind: PunctuationType,
        now: i64,
    ) -> Result<(), ProcessError> {
        let ttl = self.reservation_ttl.as_millis() as i64;
        let backend = ctx.store(PRODUCTS_STORE).backend();
        let mut still_held = HashMap::new();
        for entry in backend.entries()? {
            // Read through the store so writes of the open transaction are seen.
            let key = String::from_utf8_lossy(&entry.0).to_string();
            let Some(product) = adapter::load::<Product>(ctx, PRODUCTS_STORE, &key)? else {
                continue;
            };
            for (order_id, hold) in &product.holds {
                let id = (key.clone(), order_id.clone(), hold.id());
                let watch = self.watched.get(&id).copied().unwrap_or(Watch {
                    first_seen: now,
                    expiry_sent: false,
                });
                let seen = watch.first_seen;
                if now - seen < ttl || watch.expiry_sent {
                    still_held.insert(id, watch);
                    continue;
                }
                // The id names the hold, so repeated punctuations dedupe in processed-ids.
                let cause = format!("{key}/{order_id}/{}", hold.id());
                let mut cmd = wire::InventoryCommand::empty(
                    derived_id(&cause, "expire-reservation", 0).to_string(),
                    key.clone(),
                    now,
                );
                cmd.expire_reservation = Some(wire::ExpireReservation {
                    order_id: order_id.clone(),
                    hold: Some(hold.id()),
                });
                let topic = self.topics.inventory_commands();
                let value =
                    adapter::encode(&self.serde, &topic, SchemaKind::InventoryCommand, &cmd)?;
                tracing::info!(sku = %key, %order_id, held_ms = now - seen, "reservation expired");
                ctx.forward(adapter::output(topic, &key, value, now, Vec::new()));
                still_held.insert(
                    id,
                    Watch {
                        first_seen: seen,
                        expiry_sent: true,
                    },
                );
            }
        }
        self.watched = still_held;
        Ok(())
    }

    fn aborted(&mut self) {
        for watch in self.watched.values_mut() {
            watch.expiry_sent = false;
        }
    }
}

/// The business answer to a saga request that is itself invalid.
fn refusal(
    cmd: &wire::InventoryCommand,
    state: Option<&Product>,
    reason: &str,
) -> Option<InventoryEvent> {
    if let Some(r) = &cmd.reserve_stock {
        let order_id = OrderId::parse(&r.order_id).ok()?;
        return Some(InventoryEvent::Rejected {
            order_id,
            line_no: r.line_no.max(0) as u32,
            quantity: r.quantity.max(0) as u32,
            available: state.map_or(0, Product::available),
            reason: reason.to_string(),
        });
    }
    if let Some(r) = &cmd.commit_reservation {
        let order_id = OrderId::parse(&r.order_id).ok()?;
        return Some(InventoryEvent::CommitRejected {
            order_id,
            reason: reason.to_string(),
        });
    }
    None
}

impl InventoryProcessor {
    fn emit(
        &self,
        ctx: &mut ProcessorContext<'_>,
        sku: &Sku,
        mut state: Option<Product>,
        events: &[InventoryEvent],
        cmd: &wire::InventoryCommand,
        correlation: &str,
    ) -> Result<(), ProcessError> {
        // Holds of a channel (the gRPC service) are not the saga's: no order replies.
        let channel_request = cmd
            .reserve_stock
            .as_ref()
            .is_some_and(|r| r.channel.is_some());
        for (i, event) in events.iter().enumerate() {
            let reply_to = event.reply_to().filter(|order_id| {
                !channel_request
                    && state
                        .as_ref()
                        .and_then(|p| p.holds.get(&order_id.to_string()))
                        .is_none_or(|h| h.channel.is_none())
            });
            state = evolve(sku, state, event);
            let version = state.as_ref().map_or(0, |p| p.version);
            let event_id = derived_id(&cmd.command_id, "inventory-event", i).to_string();
            let mut out = to_wire(event_id, sku, version, cmd.issued_at, event);
            out.correlation_id = Some(correlation.to_string());
            out.causation_id = Some(cmd.command_id.clone());
            let headers = adapter::headers(correlation, &cmd.command_id);
            let topic = self.topics.inventory_events();
            let value = adapter::encode(&self.serde, &topic, SchemaKind::InventoryEvent, &out)?;
            ctx.forward(adapter::output(
                topic,
                sku.as_str(),
                value,
                cmd.issued_at,
                headers.clone(),
            ));
            if let Some(order_id) = reply_to {
                let topic = self.topics.order_replies();
                let value = adapter::encode(&self.serde, &topic, SchemaKind::InventoryEvent, &out)?;
                ctx.forward(adapter::output(
                    topic,
                    &order_id.to_string(),
                    value,
                    cmd.issued_at,
                    headers,
                ));
            }
        }
        if let Some(product) = state {
            adapter::save(ctx, PRODUCTS_STORE, sku.as_str(), &product)?;
        }
        Ok(())
    }

    fn reject(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: &wire::InventoryCommand,
        correlation: &str,
        version: i64,
        reason: String,
    ) -> Result<(), ProcessError> {
        tracing::info!(sku = %cmd.sku, command = %cmd.command_id, %reason, "command rejected");
        let mut out = wire::InventoryEvent::empty(
            derived_id(&cmd.command_id, "rejection", 0).to_string(),
            cmd.sku.clone(),
            version,
            cmd.issued_at,
        );
        out.correlation_id = Some(correlation.to_string());
        out.causation_id = Some(cmd.command_id.clone());
        out.command_rejected = Some(wire::CommandRejected {
            command_id: cmd.command_id.clone(),
            reason,
        });
        let topic = self.topics.inventory_events();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::InventoryEvent, &out)?;
        ctx.forward(adapter::output(
            topic,
            &cmd.sku,
            value,
            cmd.issued_at,
            adapter::headers(correlation, &cmd.command_id),
        ));
        Ok(())
    }
}

fn non_negative(field: &'static str, n: i32) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{field} must not be negative, got {n}"))
}

fn warehouse(w: &Option<String>) -> String {
    w.clone().unwrap_or_else(|| DEFAULT_WAREHOUSE.to_string())
}

fn to_domain(cmd: &wire::InventoryCommand) -> Result<InventoryCommand, String> {
    let err = |e: ValueError| e.to_string();
    let order = |id: &str| OrderId::parse(id).map_err(err);
    adapter::exactly_one_payload(&[
        cmd.register_product.is_some(),
        cmd.restock.is_some(),
        cmd.reserve_stock.is_some(),
        cmd.release_stock.is_some(),
        cmd.adjust_stock.is_some(),
        cmd.commit_reservation.is_some(),
        cmd.return_stock.is_some(),
        cmd.expire_reservation.is_some(),
    ])?;
    if let Some(r) = &cmd.register_product {
        if r.name.trim().is_empty() {
            return Err("product name must not be empty".into());
        }
        let unit_weight_kg = match &r.unit_weight_kg {
            None => DEFAULT_UNIT_WEIGHT_KG,
            Some(s) => Decimal::from_str(s)
                .ok()
                .filter(|d| !d.is_sign_negative())
                .ok_or_else(|| format!("unit weight {s:?} is not a non-negative decimal"))?,
        };
        return Ok(InventoryCommand::RegisterProduct {
            name: r.name.clone(),
            warehouse: warehouse(&r.warehouse),
            initial_stock: non_negative("initial stock", r.initial_stock)?,
            low_stock_threshold: non_negative("low stock threshold", r.low_stock_threshold)?,
            reorder_point: non_negative("reorder point", r.reorder_point.unwrap_or(0))?,
            reorder_quantity: non_negative("reorder quantity", r.reorder_quantity.unwrap_or(0))?,
            unit_weight_kg,
        });
    }
    if let Some(r) = &cmd.restock {
        return Ok(InventoryCommand::Restock {
            warehouse: warehouse(&r.warehouse),
            quantity: Quantity::new(i64::from(r.quantity)).map_err(err)?,
        });
    }
    if let Some(r) = &cmd.reserve_stock {
        return Ok(InventoryCommand::ReserveStock {
            order_id: order(&r.order_id)?,
            line_no: non_negative("line number", r.line_no)?,
            quantity: Quantity::new(i64::from(r.quantity)).map_err(err)?,
            channel: r.channel.clone(),
        });
    }
    if let Some(r) = &cmd.release_stock {
        return Ok(InventoryCommand::ReleaseStock {
            order_id: order(&r.order_id)?,
            reason: r.reason.clone(),
            channel: r.channel.clone(),
        });
    }
    if let Some(r) = &cmd.adjust_stock {
        return Ok(InventoryCommand::AdjustStock {
            warehouse: r.warehouse.clone(),
            counted: non_negative("counted quantity", r.counted)?,
            reason: r.reason.clone(),
        });
    }
    if let Some(r) = &cmd.commit_reservation {
        return Ok(InventoryCommand::CommitReservation {
            order_id: order(&r.order_id)?,
        });
    }
    if let Some(r) = &cmd.return_stock {
        return Ok(InventoryCommand::ReturnStock {
            order_id: order(&r.order_id)?,
            quantity: Quantity::new(i64::from(r.quantity)).map_err(err)?,
            reason: r.reason.clone(),
        });
    }
    let r = cmd.expire_reservation.as_ref().expect("one payload is set");
    Ok(InventoryCommand::ExpireReservation {
        order_id: order(&r.order_id)?,
        hold: r.hold.clone(),
    })
}

fn to_wire(
    event_id: String,
    sku: &Sku,
    version: i64,
    at: i64,
    event: &InventoryEvent,
) -> wire::InventoryEvent {
    use InventoryEvent as E;
    let mut w = wire::InventoryEvent::empty(event_id, sku.to_string(), version, at);
    let n = |x: u32| x as i32;
    match event {
        E::Registered {
            name,
            warehouse,
            on_hand,
            low_stock_threshold,
            reorder_point,
            reorder_quantity,
            unit_weight_kg,
        } => {
            w.product_registered = Some(wire::ProductRegistered {
                name: name.clone(),
                on_hand: n(*on_hand),
                low_stock_threshold: n(*low_stock_threshold),
                unit_weight_kg: unit_weight_kg.normalize().to_string(),
                warehouse: Some(warehouse.clone()),
                reorder_point: Some(n(*reorder_point)),
                reorder_quantity: Some(n(*reorder_quantity)),
            })
        }
        E::Restocked {
            warehouse,
            quantity,
            on_hand,
            available,
        } => {
            w.stock_restocked = Some(wire::StockRestocked {
                quantity: n(*quantity),
                on_hand: n(*on_hand),
                available: n(*available),
                warehouse: Some(warehouse.clone()),
            })
        }
        E::Adjusted {
            warehouse,
            from,
            to,
            reason,
            available,
        } => {
            w.stock_adjusted = Some(wire::StockAdjusted {
                warehouse: warehouse.clone(),
                from_quantity: n(*from),
                to_quantity: n(*to),
                reason: reason.clone(),
                available: n(*available),
            })
        }
        E::Reserved {
            order_id,
            line_no,
            quantity,
            allocation,
            available,
            ..
        } => {
            w.stock_reserved = Some(wire::StockReserved {
                order_id: order_id.to_string(),
                line_no: n(*line_no),
                quantity: n(*quantity),
                available: n(*available),
                allocation: Some(
                    allocation
                        .iter()
                        .map(|(w, q)| wire::WarehouseQuantity {
                            warehouse: w.clone(),
                            quantity: n(*q),
                        })
                        .collect(),
                ),
            })
        }
        E::Rejected {
            order_id,
            line_no,
            quantity,
            available,
            reason,
        } => {
            w.stock_rejected = Some(wire::StockRejected {
                order_id: order_id.to_string(),
                line_no: n(*line_no),
                quantity: n(*quantity),
                available: n(*available),
                reason: reason.clone(),
            })
        }
        E::Released {
            order_id,
            quantity,
            available,
            reason,
        } => {
            w.stock_released = Some(wire::StockReleased {
                order_id: order_id.to_string(),
                quantity: n(*quantity),
                available: n(*available),
                reason: Some(reason.clone()),
            })
        }
        E::Expired {
            order_id,
            quantity,
            available,
        } => {
            w.reservation_expired = Some(wire::ReservationExpired {
                order_id: order_id.to_string(),
                quantity: n(*quantity),
                available: n(*available),
            })
        }
        E::Committed {
            order_id,
            quantity,
            on_hand,
            available,
        } => {
            w.stock_committed = Some(wire::StockCommitted {
                order_id: order_id.to_string(),
                quantity: n(*quantity),
                on_hand: n(*on_hand),
                available: n(*available),
            })
        }
        E::CommitRejected { order_id, reason } => {
            w.stock_commit_rejected = Some(wire::StockCommitRejected {
                order_id: order_id.to_string(),
                reason: reason.clone(),
            })
        }
        E::Returned {
            order_id,
            warehouse,
            quantity,
            on_hand,
            available,
        } => {
            w.stock_returned = Some(wire::StockReturned {
                order_id: order_id.to_string(),
                warehouse: warehouse.clone(),
                quantity: n(*quantity),
                on_hand: n(*on_hand),
                available: n(*available),
            })
        }
        E::LowStock {
            available,
            threshold,
        } => {
            w.low_stock_warning = Some(wire::LowStockWarning {
                available: n(*available),
                threshold: n(*threshold),
            })
        }
        E::ReorderSuggested {
            available,
            reorder_point,
            quantity,
        } => {
            w.reorder_suggested = Some(wire::ReorderSuggested {
                available: n(*available),
                reorder_point: n(*reorder_point),
                quantity: n(*quantity),
            })
        }
    }
    w
}
