//! Adapter: shipping commands in (keyed by order id: one shipment per order); shipping
//! events out, which the order processor reads directly (co-partitioned by order id).
//! Dispatch and delivery come from outside (warehouse, carrier).

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::decider::{Rejection, Shipment, ShipmentCommand, ShipmentEvent, decide, evolve};
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{InputRecord, ProcessError, Processor, ProcessorContext, Topology};
use crate::order::processor::{method_name, parse_method};
use crate::values::{Address, Currency, OrderId, ValueError, derived_id};

pub const SHIPMENTS_STORE: &str = "shipments";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("shipping"),
        source_topics: vec![topics.shipping_commands()],
        sink_topics: vec![topics.shipping_events()],
        stores: vec![SHIPMENTS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(ShippingProcessor {
                serde: serde.clone(),
                topics: t.clone(),
            })
        }),
    }
}

pub struct ShippingProcessor {
    serde: Arc<AvroSerde>,
    topics: Topics,
}

fn to_domain(
    cmd: &wire::ShippingCommand,
    order_id: OrderId,
) -> Result<ShipmentCommand, ValueError> {
    adapter::exactly_one_payload(&[
        cmd.create_shipment.is_some(),
        cmd.dispatch_shipment.is_some(),
        cmd.deliver_shipment.is_some(),
        cmd.cancel_shipment.is_some(),
    ])
    .map_err(ValueError::Invalid)?;
    let at = cmd.issued_at;
    if let Some(c) = &cmd.create_shipment {
        let a = &c.address;
        return Ok(ShipmentCommand::Create {
            order_id,
            address: Address::new(&a.street, &a.city, &a.postal_code, &a.country)?,
            weight_kg: Decimal::from_str(&c.weight_kg)
                .map_err(|_| ValueError::NotADecimal(c.weight_kg.clone()))?,
            method: parse_method(Some(&c.method))?,
            currency: Currency::from_str(&c.currency)?,
            at,
        });
    }
    if cmd.dispatch_shipment.is_some() {
        return Ok(ShipmentCommand::Dispatch { at });
    }
    if cmd.deliver_shipment.is_some() {
        return Ok(ShipmentCommand::Deliver { at });
    }
    let c = cmd.cancel_shipment.as_ref().expect("one payload is set");
    Ok(ShipmentCommand::Cancel {
        reason: c.reason.clone(),
    })
}

impl Processor for ShippingProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let cmd: wire::ShippingCommand =
            adapter::decode(&self.serde, SchemaKind::ShippingCommand, record)?;
        if adapter::seen_before(ctx, &cmd.command_id, cmd.issued_at)? {
            return Ok(());
        }
        let order_id = match OrderId::parse(&cmd.order_id) {
            Ok(id) => id,
            Err(e) => return self.reject(ctx, &cmd, 0, e.to_string()),
        };
        let key = order_id.to_string();
        let mut state: Option<Shipment> = adapter::load(ctx, SHIPMENTS_STORE, &key)?;
        let version = state.as_ref().map_or(0, |s| s.version);
        let creating = cmd.create_shipment.is_some();
        let decision = to_domain(&cmd, order_id)
            .map_err(|e| Rejection::Invalid(e.to_string()))
            .and_then(|c| decide(&key, state.as_ref(), &c));
        let events = match decision {
            Ok(events) => events,
            // The saga waits for an answer to CreateShipment: a refusal is a business
            // outcome (ShipmentFailed), not just a rejection.
            Err(e) if creating && e != Rejection::AlreadyExists => {
                return self.publish(ctx, &cmd, &key, version, |out| {
                    out.shipment_failed = Some(wire::ShipmentFailed {
                        reason: e.to_string(),
                    })
                });
            }
            Err(e) => return self.reject(ctx, &cmd, version, e.to_string()),
        };
        for (i, event) in events.iter().enumerate() {
            state = evolve(state, event);
            let s = state.as_ref().expect("an event leaves a shipment");
            let tracking = s.tracking_number.clone();
            let mut out = self.envelope(&cmd, &key, s.version, i);
            match event {
                ShipmentEvent::Created {
                    method,
                    carrier,
                    tracking_number,
                    cost,
                    deliver_from,
                    deliver_by,
                    ..
                } => {
                    out.shipment_created = Some(wire::ShipmentCreated {
                        carrier: carrier.clone(),
                        tracking_number: tracking_number.clone(),
                        method: method_name(*method).to_string(),
                        cost: cost.to_wire(),
                        currency: cost.currency().to_string(),
                        deliver_from: *deliver_from,
                        deliver_by: *deliver_by,
                    })
                }
                ShipmentEvent::Dispatched { .. } => {
                    out.shipment_dispatched = Some(wire::ShipmentDispatched {
                        tracking_number: tracking,
                    })
                }
                ShipmentEvent::Delivered { .. } => {
                    out.shipment_delivered = Some(wire::ShipmentDelivered {
                        tracking_number: tracking,
                    })
                }
                ShipmentEvent::Cancelled { reason } => {
                    out.shipment_cancelled = Some(wire::ShipmentCancelled {
                        reason: reason.clone(),
                    })
                }
            }
            self.forward(ctx, &cmd, &key, &out)?;
        }
        if let Some(s) = state {
            adapter::save(ctx, SHIPMENTS_STORE, &key, &s)?;
        }
        Ok(())
    }
}

impl ShippingProcessor {
    fn envelope(
        &self,
        cmd: &wire::ShippingCommand,
        key: &str,
        version: i64,
        index: usize,
    ) -> wire::ShippingEvent {
        let mut out = wire::ShippingEvent::empty(
            derived_id(&cmd.command_id, "shipping-event", index).to_string(),
            key.to_string(),
            version,
            cmd.issued_at,
        );
        out.correlation_id = Some(
            cmd.correlation_id
                .clone()
                .unwrap_or_else(|| cmd.command_id.clone()),
        );
        out.causation_id = Some(cmd.command_id.clone());
        out
    }

    fn forward(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: &wire::ShippingCommand,
        key: &str,
        out: &wire::ShippingEvent,
    ) -> Result<(), ProcessError> {
        let topic = self.topics.shipping_events();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::ShippingEvent, out)?;
        let correlation = out.correlation_id.clone().unwrap_or_default();
        ctx.forward(adapter::output(
            topic,
            key,
            value,
            cmd.issued_at,
            adapter::headers(&correlation, &cmd.command_id),
        ));
        Ok(())
    }

    fn publish(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: &wire::ShippingCommand,
        key: &str,
        version: i64,
        set: impl FnOnce(&mut wire::ShippingEvent),
    ) -> Result<(), ProcessError> {
        let mut out = self.envelope(cmd, key, version, 0);
        set(&mut out);
        self.forward(ctx, cmd, key, &out)
    }

    fn reject(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: &wire::ShippingCommand,
        version: i64,
        reason: String,
    ) -> Result<(), ProcessError> {
        tracing::info!(order_id = %cmd.order_id, command = %cmd.command_id, %reason, "shipping command rejected");
        let key = cmd.order_id.clone();
        let mut out = self.envelope(cmd, &key, version, 0);
        out.event_id = derived_id(&cmd.command_id, "rejection", 0).to_string();
        out.command_rejected = Some(wire::CommandRejected {
            command_id: cmd.command_id.clone(),
            reason,
        });
        self.forward(ctx, cmd, &key, &out)
    }
}
