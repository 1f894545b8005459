//! Adapter: inventory commands in; inventory events out (keyed by SKU), plus the
//! reservation replies the order saga waits for (keyed by order id).

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::command::InventoryCommand;
use super::decider::{Product, decide, evolve};
use super::event::InventoryEvent;
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{InputRecord, ProcessError, Processor, ProcessorContext, Topology};
use crate::order::pricing::DEFAULT_UNIT_WEIGHT_KG;
use crate::values::{OrderId, Quantity, Sku, ValueError, derived_id};

pub const PRODUCTS_STORE: &str = "products";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("inventory"),
        source_topics: vec![topics.inventory_commands()],
        sink_topics: vec![topics.inventory_events(), topics.order_replies()],
        stores: vec![PRODUCTS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(InventoryProcessor {
                serde: serde.clone(),
                topics: t.clone(),
            })
        }),
    }
}

pub struct InventoryProcessor {
    serde: Arc<AvroSerde>,
    topics: Topics,
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
                // A reservation must always be answered, or its order waits forever.
                if let Some(r) = &cmd.reserve_stock
                    && let Ok(order_id) = OrderId::parse(&r.order_id)
                {
                    let refused = InventoryEvent::Rejected {
                        order_id,
                        line_no: r.line_no.max(0) as u32,
                        quantity: r.quantity.max(0) as u32,
                        available: state.as_ref().map_or(0, Product::available),
                        reason: reason.clone(),
                    };
                    return self.emit(ctx, &sku, state, &[refused], &cmd, &correlation);
                }
                return self.reject(ctx, &cmd, &correlation, version, reason);
            }
        };
        match decide(&sku, state.as_ref(), &command) {
            Ok(events) => self.emit(ctx, &sku, state, &events, &cmd, &correlation),
            Err(rejection) => self.reject(ctx, &cmd, &correlation, version, rejection.to_string()),
        }
    }
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
        for (i, event) in events.iter().enumerate() {
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
            if let InventoryEvent::Reserved { order_id, .. }
            | InventoryEvent::Rejected { order_id, .. } = event
            {
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

fn to_domain(cmd: &wire::InventoryCommand) -> Result<InventoryCommand, String> {
    let err = |e: ValueError| e.to_string();
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
            initial_stock: non_negative("initial stock", r.initial_stock)?,
            low_stock_threshold: non_negative("low stock threshold", r.low_stock_threshold)?,
            unit_weight_kg,
        });
    }
    if let Some(r) = &cmd.restock {
        return Ok(InventoryCommand::Restock {
            quantity: Quantity::new(i64::from(r.quantity)).map_err(err)?,
        });
    }
    if let Some(r) = &cmd.reserve_stock {
        return Ok(InventoryCommand::ReserveStock {
            order_id: OrderId::parse(&r.order_id).map_err(err)?,
            line_no: non_negative("line number", r.line_no)?,
            quantity: Quantity::new(i64::from(r.quantity)).map_err(err)?,
        });
    }
    if let Some(r) = &cmd.release_stock {
        return Ok(InventoryCommand::ReleaseStock {
            order_id: OrderId::parse(&r.order_id).map_err(err)?,
            reason: r.reason.clone(),
        });
    }
    Err("command has no payload".into())
}

fn to_wire(
    event_id: String,
    sku: &Sku,
    version: i64,
    at: i64,
    event: &InventoryEvent,
) -> wire::InventoryEvent {
    let mut w = wire::InventoryEvent::empty(event_id, sku.to_string(), version, at);
    let n = |x: u32| x as i32;
    match event {
        InventoryEvent::Registered {
            name,
            on_hand,
            low_stock_threshold,
            unit_weight_kg,
        } => {
            w.product_registered = Some(wire::ProductRegistered {
                name: name.clone(),
                on_hand: n(*on_hand),
                low_stock_threshold: n(*low_stock_threshold),
                unit_weight_kg: unit_weight_kg.normalize().to_string(),
            })
        }
        InventoryEvent::Restocked {
            quantity,
            on_hand,
            available,
        } => {
            w.stock_restocked = Some(wire::StockRestocked {
                quantity: n(*quantity),
                on_hand: n(*on_hand),
                available: n(*available),
            })
        }
        InventoryEvent::Reserved {
            order_id,
            line_no,
            quantity,
            available,
        } => {
            w.stock_reserved = Some(wire::StockReserved {
                order_id: order_id.to_string(),
                line_no: n(*line_no),
                quantity: n(*quantity),
                available: n(*available),
            })
        }
        InventoryEvent::Rejected {
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
        InventoryEvent::Released {
            order_id,
            quantity,
            available,
        } => {
            w.stock_released = Some(wire::StockReleased {
                order_id: order_id.to_string(),
                quantity: n(*quantity),
                available: n(*available),
            })
        }
        InventoryEvent::LowStock {
            available,
            threshold,
        } => {
            w.low_stock_warning = Some(wire::LowStockWarning {
                available: n(*available),
                threshold: n(*threshold),
            })
        }
    }
    w
}
