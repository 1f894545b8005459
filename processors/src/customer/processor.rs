//! Adapter: customer commands in (keyed by customer id), customer events out, and the
//! customer table: after every change the customer's latest row goes to the compacted
//! `customers` topic, which every order processor reads as a global store.
//!
//! Loyalty reads the order context's events: a stateless repartition topology turns each
//! `OrderCompleted` (keyed by order id) into a RecordCompletedOrder command keyed by
//! customer id on `erp-customer-completed-orders-repartition` — Kafka Streams'
//! `selectKey` + repartition — which the customer processor reads next to its commands.

use std::str::FromStr;
use std::sync::Arc;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::command::CustomerCommand;
use super::decider::{Customer, decide, evolve};
use super::event::CustomerEvent;
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{InputRecord, ProcessError, Processor, ProcessorContext, Topology};
use crate::order::processor::wire_address;
use crate::values::{
    Address, Currency, CustomerId, Email, Money, OrderId, PhoneNumber, ValueError, derived_id,
};

pub const CUSTOMERS_STORE: &str = "customers";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("customer"),
        source_topics: vec![
            topics.customer_commands(),
            topics.customer_completed_orders(),
        ],
        sink_topics: vec![topics.customer_events(), topics.customers()],
        stores: vec![CUSTOMERS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(CustomerProcessor {
                serde: serde.clone(),
                topics: t.clone(),
            })
        }),
    }
}

/// The repartition step of the loyalty rule (stateless): order events in, completed
/// orders out, keyed by customer id.
pub fn loyalty_topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("customer-loyalty"),
        source_topics: vec![topics.order_events()],
        sink_topics: vec![topics.customer_completed_orders()],
        stores: vec![],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(CompletedOrders {
                serde: serde.clone(),
                topics: t.clone(),
            })
        }),
    }
}

struct CompletedOrders {
    serde: Arc<AvroSerde>,
    topics: Topics,
}

impl Processor for CompletedOrders {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let event: wire::OrderEvent = adapter::decode(&self.serde, SchemaKind::OrderEvent, record)?;
        let Some(done) = &event.order_completed else {
            return Ok(());
        };
        let (Some(customer_id), Some(currency)) = (&done.customer_id, &done.currency) else {
            return Err(ProcessError::Poison {
                class: "invalid_event",
                reason: format!("OrderCompleted {} names no customer", event.event_id),
            });
        };
        // Derived from the event id: a re-read event makes the same command, which the
        // customer processor applies once.
        let mut cmd = wire::CustomerCommand::empty(
            derived_id(&event.event_id, "record-completed-order", 0).to_string(),
            customer_id.clone(),
            event.occurred_at,
        );
        cmd.correlation_id = event.correlation_id.clone();
        cmd.record_completed_order = Some(wire::RecordCompletedOrder {
            order_id: event.order_id.clone(),
            total: done.total.clone(),
            currency: currency.clone(),
        });
        let topic = self.topics.customer_completed_orders();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::CustomerCommand, &cmd)?;
        let correlation = cmd.correlation_id.clone().unwrap_or_default();
        ctx.forward(adapter::output(
            topic,
            customer_id,
            value,
            event.occurred_at,
            adapter::headers(&correlation, &event.event_id),
        ));
        Ok(())
    }
}

pub struct CustomerProcessor {
    serde: Arc<AvroSerde>,
    topics: Topics,
}

fn address(a: &wire::Address) -> Result<Address, ValueError> {
    Address::new(&a.street, &a.city, &a.postal_code, &a.country)
}

fn to_domain(cmd: &wire::CustomerCommand) -> Result<CustomerCommand, ValueError> {
    adapter::exactly_one_payload(&[
        cmd.register_customer.is_some(),
        cmd.update_customer.is_some(),
        cmd.record_completed_order.is_some(),
    ])
    .map_err(ValueError::Invalid)?;
    if let Some(r) = &cmd.register_customer {
        return Ok(CustomerCommand::Register {
            name: r.name.clone(),
            email: Email::parse(&r.email)?,
            phone: r.phone.as_deref().map(PhoneNumber::parse).transpose()?,
            address: address(&r.address)?,
        });
    }
    if let Some(u) = &cmd.update_customer {
        return Ok(CustomerCommand::Update {
            email: u.email.as_deref().map(Email::parse).transpose()?,
            phone: u.phone.as_deref().map(PhoneNumber::parse).transpose()?,
            addresses: u
                .addresses
                .as_ref()
                .map(|a| a.iter().map(address).collect::<Result<Vec<_>, _>>())
                .transpose()?,
        });
    }
    let r = cmd
        .record_completed_order
        .as_ref()
        .expect("one payload is set");
    Ok(CustomerCommand::RecordCompletedOrder {
        order_id: OrderId::parse(&r.order_id)?,
        total: Money::parse(&r.total, Currency::from_str(&r.currency)?)?,
    })
}

impl Processor for CustomerProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let cmd: wire::CustomerCommand =
            adapter::decode(&self.serde, SchemaKind::CustomerCommand, record)?;
        if adapter::seen_before(ctx, &cmd.command_id, cmd.issued_at)? {
            return Ok(());
        }
        let id = match CustomerId::parse(&cmd.customer_id) {
            Ok(id) => id,
            Err(e) => return self.reject(ctx, &cmd, 0, e.to_string()),
        };
        let key = id.to_string();
        let mut state: Option<Customer> = adapter::load(ctx, CUSTOMERS_STORE, &key)?;
        let version = state.as_ref().map_or(0, |c| c.version);
        if let Some(expected) = cmd.expected_version
            && expected != version
        {
            let reason = format!("expected version {expected}, customer is at version {version}");
            return self.reject(ctx, &cmd, version, reason);
        }
        let command = match to_domain(&cmd) {
            Ok(c) => c,
            Err(e) => return self.reject(ctx, &cmd, version, e.to_string()),
        };
        // Completed orders count only when the order context reported them: a client
        // must not buy itself a better tier through the public command topic.
        let from_orders = record.topic == self.topics.customer_completed_orders();
        if matches!(command, CustomerCommand::RecordCompletedOrder { .. }) != from_orders {
            let reason = if from_orders {
                "only completed orders are accepted on the completed-orders topic"
            } else {
                "completed orders are reported by the order context, not by clients"
            };
            return self.reject(ctx, &cmd, version, reason.into());
        }
        let events = match decide(state.as_ref(), &command) {
            Ok(events) => events,
            Err(e) => return self.reject(ctx, &cmd, version, e.to_string()),
        };
        if events.is_empty() {
            return Ok(());
        }
        for (i, event) in events.iter().enumerate() {
            state = evolve(state, event);
            let c = state.as_ref().expect("an event leaves a customer");
            let mut out = self.envelope(&cmd, &key, c.version, i);
            set_payload(&mut out, event);
            let topic = self.topics.customer_events();
            let value = adapter::encode(&self.serde, &topic, SchemaKind::CustomerEvent, &out)?;
            self.forward(ctx, &cmd, topic, &key, value);
        }
        let customer = state.expect("events were applied");
        let row = wire::CustomerRow {
            customer_id: key.clone(),
            name: customer.name.clone(),
            email: customer.email.as_str().to_string(),
            tier: customer.tier.name().to_string(),
            version: customer.version,
        };
        let topic = self.topics.customers();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::Customer, &row)?;
        self.forward(ctx, &cmd, topic, &key, value);
        adapter::save(ctx, CUSTOMERS_STORE, &key, &customer)
    }
}

fn set_payload(out: &mut wire::CustomerEvent, event: &CustomerEvent) {
    match event {
        CustomerEvent::Registered {
            name,
            email,
            phone,
            address,
        } => {
            out.customer_registered = Some(wire::CustomerRegistered {
                name: name.clone(),
                email: email.as_str().to_string(),
                phone: phone.as_ref().map(|p| p.as_str().to_string()),
                address: wire_address(address),
            })
        }
        CustomerEvent::Updated {
            email,
            phone,
            addresses,
        } => {
            out.customer_updated = Some(wire::CustomerUpdated {
                email: email.as_ref().map(|e| e.as_str().to_string()),
                phone: phone.as_ref().map(|p| p.as_str().to_string()),
                addresses: addresses
                    .as_ref()
                    .map(|a| a.iter().map(wire_address).collect()),
            })
        }
        CustomerEvent::SpendRecorded { order_id, total } => {
            out.customer_spend_recorded = Some(wire::CustomerSpendRecorded {
                order_id: order_id.to_string(),
                total: total.to_wire(),
                currency: total.currency().to_string(),
            })
        }
        CustomerEvent::TierPromoted { from, to } => {
            out.customer_tier_promoted = Some(wire::CustomerTierPromoted {
                from_tier: from.name().to_string(),
                to_tier: to.name().to_string(),
            })
        }
    }
}

impl CustomerProcessor {
    fn envelope(
        &self,
        cmd: &wire::CustomerCommand,
        key: &str,
        version: i64,
        index: usize,
    ) -> wire::CustomerEvent {
        let mut out = wire::CustomerEvent::empty(
            derived_id(&cmd.command_id, "customer-event", index).to_string(),
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
        cmd: &wire::CustomerCommand,
        topic: String,
        key: &str,
        value: Vec<u8>,
    ) {
        let correlation = cmd
            .correlation_id
            .clone()
            .unwrap_or_else(|| cmd.command_id.clone());
        ctx.forward(adapter::output(
            topic,
            key,
            value,
            cmd.issued_at,
            adapter::headers(&correlation, &cmd.command_id),
        ));
    }

    fn reject(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: &wire::CustomerCommand,
        version: i64,
        reason: String,
    ) -> Result<(), ProcessError> {
        tracing::info!(customer_id = %cmd.customer_id, command = %cmd.command_id, %reason, "customer command rejected");
        let key = cmd.customer_id.clone();
        let mut out = self.envelope(cmd, &key, version, 0);
        out.event_id = derived_id(&cmd.command_id, "rejection", 0).to_string();
        out.command_rejected = Some(wire::CommandRejected {
            command_id: cmd.command_id.clone(),
            reason,
        });
        let topic = self.topics.customer_events();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::CustomerEvent, &out)?;
        self.forward(ctx, cmd, topic, &key, value);
        Ok(())
    }
}
