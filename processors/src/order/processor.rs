//! Adapter: order commands and saga replies in, order events and inventory commands out.

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::command::{OrderInput, OrderLineRequest, PlaceOrder};
use super::decider::{Order, decide, evolve};
use super::event::OrderEvent;
use super::pricing::DEFAULT_UNIT_WEIGHT_KG;
use super::saga::{SagaCommand, react};
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{InputRecord, ProcessError, Processor, ProcessorContext, Topology};
use crate::values::{
    Address, Currency, CustomerId, Money, OrderId, Quantity, Sku, ValueError, derived_id,
};

pub const ORDERS_STORE: &str = "orders";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("order"),
        source_topics: vec![topics.order_commands(), topics.order_replies()],
        sink_topics: vec![topics.order_events(), topics.inventory_commands()],
        stores: vec![ORDERS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(OrderProcessor {
                serde: serde.clone(),
                topics: t.clone(),
            })
        }),
    }
}

pub struct OrderProcessor {
    serde: Arc<AvroSerde>,
    topics: Topics,
}

/// Where an input came from, for ids and headers.
struct Cause {
    id: String,
    correlation_id: String,
    at: i64,
}

impl Processor for OrderProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        if record.topic == self.topics.order_commands() {
            let cmd: wire::OrderCommand =
                adapter::decode(&self.serde, SchemaKind::OrderCommand, record)?;
            self.on_command(ctx, cmd)
        } else {
            let reply: wire::InventoryEvent =
                adapter::decode(&self.serde, SchemaKind::InventoryEvent, record)?;
            self.on_reply(ctx, reply)
        }
    }
}

impl OrderProcessor {
    fn on_command(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: wire::OrderCommand,
    ) -> Result<(), ProcessError> {
        let cause = Cause {
            id: cmd.command_id.clone(),
            correlation_id: cmd
                .correlation_id
                .clone()
                .unwrap_or_else(|| cmd.command_id.clone()),
            at: cmd.issued_at,
        };
        if adapter::seen_before(ctx, &cmd.command_id, cmd.issued_at)? {
            tracing::debug!(command_id = %cmd.command_id, "duplicate command ignored");
            return Ok(());
        }
        let order_id = match OrderId::parse(&cmd.order_id) {
            Ok(id) => id,
            Err(e) => return self.reject(ctx, &cmd.order_id, 0, &cause, e.to_string()),
        };
        let key = order_id.to_string();
        let state: Option<Order> = adapter::load(ctx, ORDERS_STORE, &key)?;
        let version = state.as_ref().map_or(0, |o| o.version);
        if let Some(expected) = cmd.expected_version
            && expected != version
        {
            let reason = format!("expected version {expected}, order is at version {version}");
            return self.reject(ctx, &key, version, &cause, reason);
        }
        let input = match (cmd.place_order.as_ref().map(place_order), &cmd.cancel_order) {
            (Some(Ok(place)), None) => OrderInput::Place(place),
            (Some(Err(e)), None) => return self.reject(ctx, &key, version, &cause, e.to_string()),
            (None, Some(c)) => OrderInput::Cancel {
                reason: c.reason.clone(),
            },
            (None, None) => {
                return self.reject(ctx, &key, version, &cause, "command has no payload".into());
            }
            (Some(_), Some(_)) => {
                return self.reject(
                    ctx,
                    &key,
                    version,
                    &cause,
                    "command has more than one payload".into(),
                );
            }
        };
        self.apply(ctx, order_id, state, &input, &cause)
    }

    fn on_reply(
        &self,
        ctx: &mut ProcessorContext<'_>,
        reply: wire::InventoryEvent,
    ) -> Result<(), ProcessError> {
        let (order_id, input) = if let Some(r) = &reply.stock_reserved {
            (
                &r.order_id,
                OrderInput::StockReserved {
                    line_no: r.line_no as u32,
                },
            )
        } else if let Some(r) = &reply.stock_rejected {
            (
                &r.order_id,
                OrderInput::StockRejected {
                    line_no: r.line_no as u32,
                    reason: r.reason.clone(),
                },
            )
        } else {
            return Ok(()); // not a reply the order waits for
        };
        let order_id = OrderId::parse(order_id).map_err(|e| ProcessError::Poison {
            class: "invalid_reply",
            reason: e.to_string(),
        })?;
        if adapter::seen_before(ctx, &reply.event_id, reply.occurred_at)? {
            return Ok(());
        }
        let cause = Cause {
            id: reply.event_id.clone(),
            correlation_id: reply
                .correlation_id
                .clone()
                .unwrap_or_else(|| order_id.to_string()),
            at: reply.occurred_at,
        };
        let state: Option<Order> = adapter::load(ctx, ORDERS_STORE, &order_id.to_string())?;
        self.apply(ctx, order_id, state, &input, &cause)
    }

    fn apply(
        &self,
        ctx: &mut ProcessorContext<'_>,
        order_id: OrderId,
        mut state: Option<Order>,
        input: &OrderInput,
        cause: &Cause,
    ) -> Result<(), ProcessError> {
        let key = order_id.to_string();
        let events = match decide(order_id, state.as_ref(), input, cause.at) {
            Ok(events) => events,
            Err(rejection) => {
                let version = state.as_ref().map_or(0, |o| o.version);
                return self.reject(ctx, &key, version, cause, rejection.to_string());
            }
        };
        if events.is_empty() {
            return Ok(());
        }
        for (i, event) in events.iter().enumerate() {
            state = evolve(state, event);
            let order = state.as_ref().expect("an applied event leaves an order");
            let event_id = derived_id(&cause.id, "order-event", i).to_string();
            let mut out = to_wire(event_id.clone(), order, event);
            out.correlation_id = Some(cause.correlation_id.clone());
            out.causation_id = Some(cause.id.clone());
            let topic = self.topics.order_events();
            let value = adapter::encode(&self.serde, &topic, SchemaKind::OrderEvent, &out)?;
            ctx.forward(adapter::output(
                topic,
                &key,
                value,
                cause.at,
                adapter::headers(&cause.correlation_id, &cause.id),
            ));
            for (j, saga) in react(order, event).into_iter().enumerate() {
                let cmd_id = derived_id(&event_id, "saga-command", j).to_string();
                self.send_saga_command(ctx, order_id, saga, cmd_id, &event_id, cause)?;
            }
        }
        let order = state.expect("events were applied");
        adapter::save(ctx, ORDERS_STORE, &key, &order)
    }

    fn send_saga_command(
        &self,
        ctx: &mut ProcessorContext<'_>,
        order_id: OrderId,
        saga: SagaCommand,
        command_id: String,
        event_id: &str,
        cause: &Cause,
    ) -> Result<(), ProcessError> {
        let (sku, cmd) = match saga {
            SagaCommand::ReserveStock {
                sku,
                line_no,
                quantity,
            } => {
                let mut c = wire::InventoryCommand::empty(command_id, sku.to_string(), cause.at);
                c.reserve_stock = Some(wire::ReserveStock {
                    order_id: order_id.to_string(),
                    line_no: line_no as i32,
                    quantity: quantity as i32,
                });
                (sku, c)
            }
            SagaCommand::ReleaseStock { sku, reason } => {
                let mut c = wire::InventoryCommand::empty(command_id, sku.to_string(), cause.at);
                c.release_stock = Some(wire::ReleaseStock {
                    order_id: order_id.to_string(),
                    reason,
                });
                (sku, c)
            }
        };
        let mut cmd = cmd;
        cmd.correlation_id = Some(cause.correlation_id.clone());
        let topic = self.topics.inventory_commands();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::InventoryCommand, &cmd)?;
        ctx.forward(adapter::output(
            topic,
            sku.as_str(),
            value,
            cause.at,
            adapter::headers(&cause.correlation_id, event_id),
        ));
        Ok(())
    }

    /// A command that is not applied still gets an answer: a rejection event with the
    /// reason, on the order's event topic.
    fn reject(
        &self,
        ctx: &mut ProcessorContext<'_>,
        key: &str,
        version: i64,
        cause: &Cause,
        reason: String,
    ) -> Result<(), ProcessError> {
        tracing::info!(order_id = key, command = %cause.id, %reason, "command rejected");
        let mut out = wire::OrderEvent::empty(
            derived_id(&cause.id, "rejection", 0).to_string(),
            key.to_string(),
            version,
            cause.at,
        );
        out.correlation_id = Some(cause.correlation_id.clone());
        out.causation_id = Some(cause.id.clone());
        out.command_rejected = Some(wire::CommandRejected {
            command_id: cause.id.clone(),
            reason,
        });
        let topic = self.topics.order_events();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::OrderEvent, &out)?;
        ctx.forward(adapter::output(
            topic,
            key,
            value,
            cause.at,
            adapter::headers(&cause.correlation_id, &cause.id),
        ));
        Ok(())
    }
}

/// Validates the wire command into the domain's value objects.
fn place_order(w: &wire::PlaceOrder) -> Result<PlaceOrder, ValueError> {
    let currency = Currency::from_str(&w.currency)?;
    let lines = w
        .lines
        .iter()
        .map(|l| {
            let unit_weight_kg = match &l.unit_weight_kg {
                None => DEFAULT_UNIT_WEIGHT_KG,
                Some(s) => {
                    let d = Decimal::from_str(s).map_err(|_| ValueError::NotADecimal(s.clone()))?;
                    if d.is_sign_negative() {
                        return Err(ValueError::NegativeAmount(d));
                    }
                    d
                }
            };
            Ok(OrderLineRequest {
                sku: Sku::parse(&l.sku)?,
                product_name: l.product_name.clone(),
                quantity: Quantity::new(i64::from(l.quantity))?,
                unit_price: Money::parse(&l.unit_price, currency)?,
                unit_weight_kg,
            })
        })
        .collect::<Result<Vec<_>, ValueError>>()?;
    let a = &w.shipping_address;
    Ok(PlaceOrder {
        customer_id: CustomerId::parse(&w.customer_id)?,
        currency,
        lines,
        shipping_address: Address::new(&a.street, &a.city, &a.postal_code, &a.country)?,
    })
}

fn wire_line(l: &OrderLineRequest) -> wire::OrderLine {
    wire::OrderLine {
        sku: l.sku.to_string(),
        product_name: l.product_name.clone(),
        quantity: l.quantity.get() as i32,
        unit_price: l.unit_price.to_wire(),
        unit_weight_kg: Some(l.unit_weight_kg.normalize().to_string()),
    }
}

fn to_wire(event_id: String, order: &Order, event: &OrderEvent) -> wire::OrderEvent {
    let mut w = wire::OrderEvent::empty(event_id, order.id.to_string(), order.version, event.at());
    match event {
        OrderEvent::Created {
            customer_id,
            customer_tier,
            currency,
            lines,
            shipping_address,
            pricing,
            ..
        } => {
            w.order_created = Some(wire::OrderCreated {
                customer_id: customer_id.to_string(),
                customer_tier: customer_tier.clone(),
                currency: currency.to_string(),
                lines: lines.iter().map(wire_line).collect(),
                shipping_address: wire::Address {
                    street: shipping_address.street.clone(),
                    city: shipping_address.city.clone(),
                    postal_code: shipping_address.postal_code.clone(),
                    country: shipping_address.country.clone(),
                },
                subtotal: pricing.subtotal.to_wire(),
                discount: pricing.discount.to_wire(),
                tax: pricing.tax.to_wire(),
                shipping_cost: pricing.shipping.to_wire(),
                total: pricing.total.to_wire(),
            })
        }
        OrderEvent::LineReserved {
            line_no,
            sku,
            quantity,
            ..
        } => {
            w.order_line_reserved = Some(wire::OrderLineReserved {
                line_no: *line_no as i32,
                sku: sku.to_string(),
                quantity: *quantity as i32,
            })
        }
        OrderEvent::LineRejected {
            line_no,
            sku,
            reason,
            ..
        } => {
            w.order_line_rejected = Some(wire::OrderLineRejected {
                line_no: *line_no as i32,
                sku: sku.to_string(),
                reason: reason.clone(),
            })
        }
        OrderEvent::Confirmed { total, .. } => {
            w.order_confirmed = Some(wire::OrderConfirmed {
                total: total.to_wire(),
            })
        }
        OrderEvent::Cancelled {
            reason,
            released_skus,
            ..
        } => {
            w.order_cancelled = Some(wire::OrderCancelled {
                reason: reason.clone(),
                released_skus: released_skus.iter().map(ToString::to_string).collect(),
            })
        }
    }
    w
}
