//! Adapter: order commands and saga replies in; order events and the saga's commands to
//! inventory, payment and shipping out — all in one transaction per input.

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::command::{OrderInput, OrderLineRequest, PlaceOrder};
use super::decider::{HistoryCause, HistoryEntry, Order, decide, evolve};
use super::event::OrderEvent;
use super::pricing::{CustomerTier, DEFAULT_UNIT_WEIGHT_KG, Pricing};
use super::saga::{SagaCommand, react};
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{
    GlobalStoreSpec, InputRecord, ProcessError, Processor, ProcessorContext, Topology,
};
use crate::shipping::Method;
use crate::values::{
    Address, Currency, CustomerId, Money, OrderId, Quantity, Sku, ValueError, derived_id,
};

pub const ORDERS_STORE: &str = "orders";
/// Global store of the customer table: tier and existence for pricing.
pub const CUSTOMERS_GLOBAL: &str = "customer-table";
/// The gateway token used when a PlaceOrder names none.
pub const DEFAULT_PAYMENT_METHOD: &str = "tok_visa";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("order"),
        source_topics: vec![
            topics.order_commands(),
            topics.order_replies(),
            topics.payment_events(),
            topics.shipping_events(),
        ],
        sink_topics: vec![
            topics.order_events(),
            topics.inventory_commands(),
            topics.payment_commands(),
            topics.shipping_commands(),
        ],
        stores: vec![ORDERS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![GlobalStoreSpec {
            name: CUSTOMERS_GLOBAL.to_string(),
            topic: topics.customers(),
        }],
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
    /// The input record, for the order's timeline.
    source: HistoryCause,
}

fn invalid_reply(e: impl std::fmt::Display) -> ProcessError {
    ProcessError::Poison {
        class: "invalid_reply",
        reason: e.to_string(),
    }
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
            return self.on_command(ctx, cmd, record);
        }
        let reply = if record.topic == self.topics.order_replies() {
            let e: wire::InventoryEvent =
                adapter::decode(&self.serde, SchemaKind::InventoryEvent, record)?;
            inventory_reply(e)?
        } else if record.topic == self.topics.payment_events() {
            let e: wire::PaymentEvent =
                adapter::decode(&self.serde, SchemaKind::PaymentEvent, record)?;
            payment_reply(e)?
        } else {
            let e: wire::ShippingEvent =
                adapter::decode(&self.serde, SchemaKind::ShippingEvent, record)?;
            shipping_reply(e)?
        };
        match reply {
            Some(r) => self.on_reply(ctx, r, record),
            None => Ok(()), // an event the order does not wait for
        }
    }
}

/// A reply from another context, in the order's terms.
struct Reply {
    order_id: String,
    event_id: String,
    correlation_id: Option<String>,
    at: i64,
    input: OrderInput,
}

fn inventory_reply(e: wire::InventoryEvent) -> Result<Option<Reply>, ProcessError> {
    let sku = || Sku::parse(&e.sku).map_err(invalid_reply);
    let (order_id, input) = if let Some(r) = &e.stock_reserved {
        (
            &r.order_id,
            OrderInput::StockReserved {
                line_no: r.line_no.max(0) as u32,
            },
        )
    } else if let Some(r) = &e.stock_rejected {
        (
            &r.order_id,
            OrderInput::StockRejected {
                line_no: r.line_no.max(0) as u32,
                reason: r.reason.clone(),
            },
        )
    } else if let Some(r) = &e.reservation_expired {
        (&r.order_id, OrderInput::StockExpired { sku: sku()? })
    } else if let Some(r) = &e.stock_committed {
        (&r.order_id, OrderInput::StockCommitted { sku: sku()? })
    } else if let Some(r) = &e.stock_commit_rejected {
        (
            &r.order_id,
            OrderInput::StockCommitRejected {
                sku: sku()?,
                reason: r.reason.clone(),
            },
        )
    } else {
        return Ok(None);
    };
    Ok(Some(Reply {
        order_id: order_id.clone(),
        event_id: e.event_id.clone(),
        correlation_id: e.correlation_id.clone(),
        at: e.occurred_at,
        input,
    }))
}

fn payment_reply(e: wire::PaymentEvent) -> Result<Option<Reply>, ProcessError> {
    let input = if let Some(p) = &e.payment_authorized {
        OrderInput::PaymentAuthorized {
            authorization_code: p.authorization_code.clone(),
        }
    } else if let Some(p) = &e.payment_failed {
        OrderInput::PaymentFailed {
            reason: p.reason.clone(),
        }
    } else if let Some(p) = &e.payment_captured {
        let currency = Currency::from_str(&p.currency).map_err(invalid_reply)?;
        OrderInput::PaymentCaptured {
            amount: Money::parse(&p.amount, currency).map_err(invalid_reply)?,
        }
    } else if let Some(p) = &e.payment_capture_failed {
        OrderInput::PaymentCaptureFailed {
            reason: p.reason.clone(),
        }
    } else if let Some(r) = &e.command_rejected
        && r.reason.starts_with(AUTHORIZATION_REFUSED)
    {
        // An authorization the payment context refused as invalid must still end the
        // saga step, or the order would wait forever.
        OrderInput::PaymentFailed {
            reason: r.reason.clone(),
        }
    } else {
        return Ok(None);
    };
    Ok(Some(Reply {
        order_id: e.order_id,
        event_id: e.event_id,
        correlation_id: e.correlation_id,
        at: e.occurred_at,
        input,
    }))
}

/// Prefix of the payment context's rejection of an AuthorizePayment command.
pub const AUTHORIZATION_REFUSED: &str = "authorization refused";

fn shipping_reply(e: wire::ShippingEvent) -> Result<Option<Reply>, ProcessError> {
    let input = if let Some(s) = &e.shipment_created {
        OrderInput::ShipmentCreated {
            carrier: s.carrier.clone(),
            tracking_number: s.tracking_number.clone(),
        }
    } else if let Some(s) = &e.shipment_failed {
        OrderInput::ShipmentFailed {
            reason: s.reason.clone(),
        }
    } else if e.shipment_cancelled.is_some() {
        OrderInput::ShipmentCancelled
    } else if e.shipment_dispatched.is_some() {
        OrderInput::ShipmentDispatched
    } else if e.shipment_delivered.is_some() {
        OrderInput::ShipmentDelivered
    } else {
        return Ok(None);
    };
    Ok(Some(Reply {
        order_id: e.order_id,
        event_id: e.event_id,
        correlation_id: e.correlation_id,
        at: e.occurred_at,
        input,
    }))
}

impl OrderProcessor {
    fn on_command(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: wire::OrderCommand,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let cause = Cause {
            id: cmd.command_id.clone(),
            correlation_id: cmd
                .correlation_id
                .clone()
                .unwrap_or_else(|| cmd.command_id.clone()),
            at: cmd.issued_at,
            source: source(&cmd.command_id, record),
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
            return self.reject_recorded(ctx, state, &key, &cause, reason);
        }
        if let Err(reason) = adapter::exactly_one_payload(&[
            cmd.place_order.is_some(),
            cmd.cancel_order.is_some(),
            cmd.update_order.is_some(),
            cmd.confirm_order.is_some(),
        ]) {
            return self.reject_recorded(ctx, state, &key, &cause, reason);
        }
        let input = if let Some(p) = &cmd.place_order {
            match self.place_order(ctx, p)? {
                Ok(place) => OrderInput::Place(place),
                Err(e) => return self.reject(ctx, &key, version, &cause, e.to_string()),
            }
        } else if let Some(c) = &cmd.cancel_order {
            OrderInput::Cancel {
                reason: c.reason.clone(),
            }
        } else if let Some(u) = &cmd.update_order {
            let currency = state.as_ref().map_or(Currency::USD, |o| o.currency);
            match order_lines(&u.lines, currency) {
                Ok(lines) => OrderInput::Update { lines },
                Err(e) => return self.reject_recorded(ctx, state, &key, &cause, e.to_string()),
            }
        } else {
            OrderInput::Confirm
        };
        self.apply(ctx, order_id, state, &input, &cause)
    }

    /// Validates a PlaceOrder into value objects and looks the customer up in the
    /// customer table (global store).
    fn place_order(
        &self,
        ctx: &mut ProcessorContext<'_>,
        w: &wire::PlaceOrder,
    ) -> Result<Result<PlaceOrder, ValueError>, ProcessError> {
        let place = match place_order(w) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let tier = match ctx.global(CUSTOMERS_GLOBAL, place.customer_id.to_string().as_bytes())? {
            None => None,
            Some(bytes) => {
                let row: wire::CustomerRow = self
                    .serde
                    .decode(SchemaKind::Customer, &bytes)
                    .map_err(adapter::wire_error)?;
                Some(CustomerTier::parse(&row.tier).unwrap_or(CustomerTier::Bronze))
            }
        };
        Ok(Ok(PlaceOrder {
            customer_tier: tier,
            ..place
        }))
    }

    fn on_reply(
        &self,
        ctx: &mut ProcessorContext<'_>,
        reply: Reply,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let order_id = OrderId::parse(&reply.order_id).map_err(invalid_reply)?;
        if adapter::seen_before(ctx, &reply.event_id, reply.at)? {
            return Ok(());
        }
        let cause = Cause {
            id: reply.event_id.clone(),
            correlation_id: reply
                .correlation_id
                .clone()
                .unwrap_or_else(|| order_id.to_string()),
            at: reply.at,
            source: source(&reply.event_id, record),
        };
        let state: Option<Order> = adapter::load(ctx, ORDERS_STORE, &order_id.to_string())?;
        self.apply(ctx, order_id, state, &reply.input, &cause)
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
        // One correlation id per saga: the order's first command's.
        let saga_cause;
        let cause = match state.as_ref().and_then(|o| o.correlation_id.clone()) {
            Some(correlation_id) => {
                saga_cause = Cause {
                    id: cause.id.clone(),
                    correlation_id,
                    at: cause.at,
                    source: cause.source.clone(),
                };
                &saga_cause
            }
            None => cause,
        };
        let events = match decide(order_id, state.as_ref(), input, cause.at) {
            Ok(events) => events,
            Err(rejection) => {
                return self.reject_recorded(ctx, state, &key, cause, rejection.to_string());
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
            let commands = react(order, event);
            let sent: Vec<String> = commands.iter().map(SagaCommand::describe).collect();
            for (j, saga) in commands.into_iter().enumerate() {
                let cmd_id = derived_id(&event_id, "saga-command", j).to_string();
                self.send(ctx, order, saga, cmd_id, &event_id, cause)?;
            }
            if let Some(entry) = state.as_mut().and_then(|o| o.history.last_mut()) {
                entry.event_id = Some(event_id);
                entry.cause = Some(cause.source.clone());
                entry.sent = sent;
            }
        }
        let mut order = state.expect("events were applied");
        order
            .correlation_id
            .get_or_insert_with(|| cause.correlation_id.clone());
        adapter::save(ctx, ORDERS_STORE, &key, &order)
    }

    /// Encodes one saga command for its context's topic, keyed as that context needs.
    fn send(
        &self,
        ctx: &mut ProcessorContext<'_>,
        order: &Order,
        saga: SagaCommand,
        command_id: String,
        event_id: &str,
        cause: &Cause,
    ) -> Result<(), ProcessError> {
        let order_id = order.id.to_string();
        let corr = Some(cause.correlation_id.clone());
        let inventory = |sku: &Sku| {
            let mut c =
                wire::InventoryCommand::empty(command_id.clone(), sku.to_string(), cause.at);
            c.correlation_id = corr.clone();
            c
        };
        let payment = || {
            let mut c = wire::PaymentCommand::empty(command_id.clone(), order_id.clone(), cause.at);
            c.correlation_id = corr.clone();
            c
        };
        let shipping = || {
            let mut c =
                wire::ShippingCommand::empty(command_id.clone(), order_id.clone(), cause.at);
            c.correlation_id = corr.clone();
            c
        };
        let (topic, key, value) = match saga {
            SagaCommand::ReserveStock {
                sku,
                line_no,
                quantity,
            } => {
                let mut c = inventory(&sku);
                c.reserve_stock = Some(wire::ReserveStock {
                    order_id: order_id.clone(),
                    line_no: line_no as i32,
                    quantity: quantity as i32,
                    channel: None,
                });
                self.inventory_command(sku, c)?
            }
            SagaCommand::ReleaseStock { sku, reason } => {
                let mut c = inventory(&sku);
                c.release_stock = Some(wire::ReleaseStock {
                    order_id: order_id.clone(),
                    reason,
                    channel: None,
                });
                self.inventory_command(sku, c)?
            }
            SagaCommand::CommitReservation { sku } => {
                let mut c = inventory(&sku);
                c.commit_reservation = Some(wire::CommitReservation {
                    order_id: order_id.clone(),
                });
                self.inventory_command(sku, c)?
            }
            SagaCommand::ReturnStock {
                sku,
                quantity,
                reason,
            } => {
                let mut c = inventory(&sku);
                c.return_stock = Some(wire::ReturnStock {
                    order_id: order_id.clone(),
                    quantity: quantity as i32,
                    reason,
                });
                self.inventory_command(sku, c)?
            }
            SagaCommand::AuthorizePayment { amount, method } => {
                let mut c = payment();
                c.authorize_payment = Some(wire::AuthorizePayment {
                    amount: amount.to_wire(),
                    currency: amount.currency().to_string(),
                    method,
                });
                self.payment_command(&order_id, c)?
            }
            SagaCommand::CapturePayment => {
                let mut c = payment();
                c.capture_payment = Some(wire::CapturePayment { note: None });
                self.payment_command(&order_id, c)?
            }
            SagaCommand::VoidPayment { reason } => {
                let mut c = payment();
                c.void_authorization = Some(wire::VoidAuthorization { reason });
                self.payment_command(&order_id, c)?
            }
            SagaCommand::RefundPayment { reason } => {
                let mut c = payment();
                c.refund_payment = Some(wire::RefundPayment {
                    amount: None,
                    reason,
                });
                self.payment_command(&order_id, c)?
            }
            SagaCommand::CreateShipment { method, weight_kg } => {
                let mut c = shipping();
                c.create_shipment = Some(wire::CreateShipment {
                    address: wire_address(&order.shipping_address),
                    weight_kg: weight_kg.normalize().to_string(),
                    method: method_name(method).to_string(),
                    currency: order.currency.to_string(),
                });
                self.shipping_command(&order_id, c)?
            }
            SagaCommand::CancelShipment { reason } => {
                let mut c = shipping();
                c.cancel_shipment = Some(wire::CancelShipment { reason });
                self.shipping_command(&order_id, c)?
            }
        };
        ctx.forward(adapter::output(
            topic,
            &key,
            value,
            cause.at,
            adapter::headers(&cause.correlation_id, event_id),
        ));
        Ok(())
    }

    fn inventory_command(
        &self,
        sku: Sku,
        c: wire::InventoryCommand,
    ) -> Result<(String, String, Vec<u8>), ProcessError> {
        let topic = self.topics.inventory_commands();
        let v = adapter::encode(&self.serde, &topic, SchemaKind::InventoryCommand, &c)?;
        Ok((topic, sku.to_string(), v))
    }

    fn payment_command(
        &self,
        order_id: &str,
        c: wire::PaymentCommand,
    ) -> Result<(String, String, Vec<u8>), ProcessError> {
        let topic = self.topics.payment_commands();
        let v = adapter::encode(&self.serde, &topic, SchemaKind::PaymentCommand, &c)?;
        Ok((topic, order_id.to_string(), v))
    }

    fn shipping_command(
        &self,
        order_id: &str,
        c: wire::ShippingCommand,
    ) -> Result<(String, String, Vec<u8>), ProcessError> {
        let topic = self.topics.shipping_commands();
        let v = adapter::encode(&self.serde, &topic, SchemaKind::ShippingCommand, &c)?;
        Ok((topic, order_id.to_string(), v))
    }

    /// Rejects, and — when the order exists — writes the rejection into its history, so
    /// the timeline shows it and a client waiting for the command sees it was answered.
    fn reject_recorded(
        &self,
        ctx: &mut ProcessorContext<'_>,
        state: Option<Order>,
        key: &str,
        cause: &Cause,
        reason: String,
    ) -> Result<(), ProcessError> {
        let version = state.as_ref().map_or(0, |o| o.version);
        if let Some(mut order) = state {
            order.history.push(HistoryEntry {
                at: cause.at,
                event: "CommandRejected".into(),
                version: order.version,
                event_id: Some(derived_id(&cause.id, "rejection", 0).to_string()),
                cause: Some(cause.source.clone()),
                sent: Vec::new(),
                detail: Some(reason.clone()),
            });
            adapter::save(ctx, ORDERS_STORE, key, &order)?;
        }
        self.reject(ctx, key, version, cause, reason)
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

fn source(id: &str, record: &InputRecord<'_>) -> HistoryCause {
    HistoryCause {
        id: id.to_string(),
        topic: record.topic.to_string(),
        partition: record.partition,
        offset: record.offset,
    }
}

fn order_lines(
    lines: &[wire::OrderLine],
    currency: Currency,
) -> Result<Vec<OrderLineRequest>, ValueError> {
    lines
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
        .collect()
}

pub fn parse_method(s: Option<&str>) -> Result<Method, ValueError> {
    match s.map(str::to_ascii_uppercase).as_deref() {
        None | Some("STANDARD") => Ok(Method::Standard),
        Some("EXPRESS") => Ok(Method::Express),
        Some(other) => Err(ValueError::Invalid(format!(
            "shipping method {other:?} is not STANDARD or EXPRESS"
        ))),
    }
}

pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Standard => "STANDARD",
        Method::Express => "EXPRESS",
    }
}

/// Validates the wire command into the domain's value objects (the customer's tier is
/// looked up by the caller).
fn place_order(w: &wire::PlaceOrder) -> Result<PlaceOrder, ValueError> {
    let currency = Currency::from_str(&w.currency)?;
    let a = &w.shipping_address;
    Ok(PlaceOrder {
        customer_id: CustomerId::parse(&w.customer_id)?,
        customer_tier: None,
        currency,
        lines: order_lines(&w.lines, currency)?,
        shipping_address: Address::new(&a.street, &a.city, &a.postal_code, &a.country)?,
        payment_method: w
            .payment_method
            .clone()
            .unwrap_or_else(|| DEFAULT_PAYMENT_METHOD.to_string()),
        shipping_method: parse_method(w.shipping_method.as_deref())?,
        manual_confirmation: w.manual_confirmation.unwrap_or(false),
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

pub fn wire_address(a: &Address) -> wire::Address {
    wire::Address {
        street: a.street.clone(),
        city: a.city.clone(),
        postal_code: a.postal_code.clone(),
        country: a.country.clone(),
    }
}

fn to_wire(event_id: String, order: &Order, event: &OrderEvent) -> wire::OrderEvent {
    use OrderEvent as E;
    let mut w = wire::OrderEvent::empty(event_id, order.id.to_string(), order.version, event.at());
    w.status = Some(order.status.name().to_string());
    let prices = |p: &Pricing| {
        (
            p.subtotal.to_wire(),
            p.discount.to_wire(),
            p.tax.to_wire(),
            p.shipping.to_wire(),
            p.total.to_wire(),
        )
    };
    match event {
        E::Created {
            customer_id,
            customer_tier,
            currency,
            lines,
            shipping_address,
            pricing,
            payment_method,
            shipping_method,
            manual_confirmation,
            ..
        } => {
            let (subtotal, discount, tax, shipping_cost, total) = prices(pricing);
            w.order_created = Some(wire::OrderCreated {
                customer_id: customer_id.to_string(),
                customer_tier: customer_tier.name().to_string(),
                currency: currency.to_string(),
                lines: lines.iter().map(wire_line).collect(),
                shipping_address: wire_address(shipping_address),
                subtotal,
                discount,
                tax,
                shipping_cost,
                total,
                payment_method: Some(payment_method.clone()),
                shipping_method: Some(method_name(*shipping_method).to_string()),
                manual_confirmation: Some(*manual_confirmation),
            })
        }
        E::Updated {
            lines,
            pricing,
            first_line_no,
            released_skus,
            ..
        } => {
            let (subtotal, discount, tax, shipping_cost, total) = prices(pricing);
            w.order_updated = Some(wire::OrderUpdated {
                lines: lines.iter().map(wire_line).collect(),
                first_line_no: *first_line_no as i32,
                released_skus: released_skus.iter().map(ToString::to_string).collect(),
                subtotal,
                discount,
                tax,
                shipping_cost,
                total,
            })
        }
        E::LineReserved {
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
        E::LineRejected {
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
        E::LineReleased { sku, reason, .. } => {
            w.order_line_released = Some(wire::OrderLineReleased {
                sku: sku.to_string(),
                reason: reason.clone(),
            })
        }
        E::LineCommitted { sku, .. } => {
            w.order_line_committed = Some(wire::OrderLineCommitted {
                sku: sku.to_string(),
            })
        }
        E::LineCommitRejected { sku, reason, .. } => {
            w.order_line_commit_rejected = Some(wire::OrderLineCommitRejected {
                sku: sku.to_string(),
                reason: reason.clone(),
            })
        }
        E::ConfirmationReceived { .. } => {
            w.order_confirmation_received = Some(wire::OrderConfirmationReceived {
                customer_id: order.customer_id.to_string(),
            })
        }
        E::PaymentRequested { amount, method, .. } => {
            w.order_payment_requested = Some(wire::OrderPaymentRequested {
                amount: amount.to_wire(),
                method: method.clone(),
            })
        }
        E::PaymentAuthorized {
            authorization_code, ..
        } => {
            w.order_payment_authorized = Some(wire::OrderPaymentAuthorized {
                authorization_code: authorization_code.clone(),
            })
        }
        E::PaymentDeclined { reason, .. } => {
            w.order_payment_declined = Some(wire::OrderPaymentDeclined {
                reason: reason.clone(),
            })
        }
        E::Confirmed { total, .. } => {
            w.order_confirmed = Some(wire::OrderConfirmed {
                total: total.to_wire(),
            })
        }
        E::Paid { amount, .. } => {
            w.order_paid = Some(wire::OrderPaid {
                amount: amount.to_wire(),
            })
        }
        E::CaptureFailed { reason, .. } => {
            w.order_capture_failed = Some(wire::OrderCaptureFailed {
                reason: reason.clone(),
            })
        }
        E::ShipmentRequested {
            method, weight_kg, ..
        } => {
            w.order_shipment_requested = Some(wire::OrderShipmentRequested {
                method: method_name(*method).to_string(),
                weight_kg: weight_kg.normalize().to_string(),
            })
        }
        E::ShipmentCreated {
            carrier,
            tracking_number,
            ..
        } => {
            w.order_shipment_created = Some(wire::OrderShipmentCreated {
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
            })
        }
        E::ShipmentFailed { reason, .. } => {
            w.order_shipment_failed = Some(wire::OrderShipmentFailed {
                reason: reason.clone(),
            })
        }
        E::ShipmentCancelled { .. } => {
            w.order_shipment_cancelled = Some(wire::OrderShipmentCancelled {
                tracking_number: order.tracking_number.clone(),
            })
        }
        E::CancellationRequested { reason, .. } => {
            w.order_cancellation_requested = Some(wire::OrderCancellationRequested {
                reason: reason.clone(),
            })
        }
        E::CancellationRefused { reason, .. } => {
            w.order_cancellation_refused = Some(wire::OrderCancellationRefused {
                reason: reason.clone(),
            })
        }
        E::Shipped { .. } => {
            w.order_shipped = Some(wire::OrderShipped {
                tracking_number: order.tracking_number.clone(),
            })
        }
        E::Completed { total, .. } => {
            w.order_completed = Some(wire::OrderCompleted {
                total: total.to_wire(),
                customer_id: Some(order.customer_id.to_string()),
                currency: Some(total.currency().to_string()),
            })
        }
        E::Cancelled {
            reason,
            compensations,
            ..
        } => {
            let mut skus: Vec<String> = compensations
                .iter()
                .filter_map(|c| match c {
                    super::event::Compensation::ReleaseStock { sku }
                    | super::event::Compensation::ReturnStock { sku, .. } => Some(sku.to_string()),
                    _ => None,
                })
                .collect();
            skus.sort();
            skus.dedup();
            w.order_cancelled = Some(wire::OrderCancelled {
                reason: reason.clone(),
                released_skus: skus,
                compensations: Some(compensations.iter().map(|c| c.describe()).collect()),
            })
        }
        E::LateReplyCompensated {
            reply,
            compensation,
            ..
        } => {
            w.order_late_reply_compensated = Some(wire::OrderLateReplyCompensated {
                reply: reply.clone(),
                compensation: compensation.describe(),
            })
        }
    }
    w
}
