//! The order aggregate as a pure decider, and the saga's state: `decide` turns an input
//! (a client command or another context's reply) into events or a rejection; `evolve`
//! folds an event into the state. No I/O, no clock, no randomness: time comes from the
//! input record.
//!
//! Saga: reserve every line → (customer confirmation, if asked for) → authorize payment
//! → Confirmed → capture → Paid → commit the reservations → create the shipment →
//! dispatched (Shipped) → delivered (Completed). Any failure, and a customer cancel
//! before dispatch, ends in Cancelled with the compensations for the steps done.

use serde::{Deserialize, Serialize};

use super::command::{OrderInput, OrderLineRequest, PlaceOrder};
use super::event::{Compensation, OrderEvent};
use super::pricing::{CustomerTier, Pricing, price_for};
use crate::shipping::Method;
use crate::values::{Address, Currency, CustomerId, OrderId, Sku};

/// The seed's order status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Created; stock being reserved, confirmation awaited, payment being authorized.
    Pending,
    /// Stock held and payment authorized; capture in flight.
    Confirmed,
    /// Payment captured; stock being committed, shipment being created.
    Paid,
    /// The shipment left the warehouse: no cancel any more.
    Shipped,
    Completed,
    Cancelled,
}

impl OrderStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Completed | OrderStatus::Cancelled)
    }

    pub fn name(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Paid => "PAID",
            OrderStatus::Shipped => "SHIPPED",
            OrderStatus::Completed => "COMPLETED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

/// Where one line's stock is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationState {
    Requested,
    Reserved,
    Rejected(String),
    /// Payment captured: commit (sale) requested, outcome pending.
    Committing,
    /// Sold: inventory took it off the books.
    Committed,
    /// Let go by inventory (expired) or by a compensation.
    Released(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    NotRequested,
    Authorizing,
    Authorized,
    Declined,
    Capturing,
    Captured,
    CaptureFailed,
    /// Compensations sent.
    Voided,
    Refunded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentState {
    NotRequested,
    Requested,
    Created,
    Failed,
    Cancelled,
    Dispatched,
    Delivered,
}

/// One line of the order's history, for timelines. The domain records what happened;
/// the adapter adds where it came from (the input record) and what it sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: i64,
    pub event: String,
    pub version: i64,
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub cause: Option<HistoryCause>,
    /// Commands (saga steps and compensations) sent because of this event.
    #[serde(default)]
    pub sent: Vec<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// The input record that caused a history entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryCause {
    /// Command or event id.
    pub id: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// First, so the query API reads it (the ETag) off the stored JSON's prefix.
    pub version: i64,
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub customer_tier: CustomerTier,
    pub status: OrderStatus,
    pub currency: Currency,
    pub lines: Vec<OrderLineRequest>,
    /// Line `i` is numbered `first_line_no + i` in reservation requests and replies.
    pub first_line_no: u32,
    pub reservations: Vec<ReservationState>,
    pub shipping_address: Address,
    pub pricing: Pricing,
    pub payment_method: String,
    pub shipping_method: Method,
    pub manual_confirmation: bool,
    pub customer_confirmed: bool,
    pub payment: PaymentState,
    pub authorization_code: Option<String>,
    pub shipment: ShipmentState,
    pub tracking_number: Option<String>,
    pub carrier: Option<String>,
    /// A cancel waiting for the shipment's answer.
    pub cancel_requested: Option<String>,
    pub cancel_reason: Option<String>,
    pub history: Vec<HistoryEntry>,
    /// The saga's correlation id (its first command's), kept by the adapter so every
    /// later event and command of the order carries it, whoever caused them.
    #[serde(default)]
    pub correlation_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Order {
    fn skus_where(&self, pred: impl Fn(&ReservationState) -> bool) -> Vec<Sku> {
        let mut skus: Vec<Sku> = self
            .lines
            .iter()
            .zip(&self.reservations)
            .filter(|(_, r)| pred(r))
            .map(|(l, _)| l.sku.clone())
            .collect();
        skus.sort();
        skus.dedup();
        skus
    }

    /// SKUs with stock held (reserved, not known to be sold) for this order.
    pub fn reserved_skus(&self) -> Vec<Sku> {
        self.skus_where(|r| matches!(r, ReservationState::Reserved | ReservationState::Committing))
    }

    /// Distinct SKUs of the order.
    pub fn skus(&self) -> Vec<Sku> {
        self.skus_where(|_| true)
    }

    fn committed_quantity(&self, sku: &Sku) -> u32 {
        self.lines
            .iter()
            .zip(&self.reservations)
            .filter(|(l, r)| l.sku == *sku && **r == ReservationState::Committed)
            .map(|(l, _)| l.quantity.get())
            .sum()
    }

    fn line_index(&self, line_no: u32) -> Option<usize> {
        let i = line_no.checked_sub(self.first_line_no)? as usize;
        (i < self.lines.len()).then_some(i)
    }

    fn all_reserved(&self) -> bool {
        self.reservations
            .iter()
            .all(|r| *r == ReservationState::Reserved)
    }

    /// The compensations for every step done so far, as a cancel needs them now.
    /// Requests still in flight are compensated when their late reply arrives.
    pub fn compensations(&self) -> Vec<Compensation> {
        let mut out: Vec<Compensation> = self
            .reserved_skus()
            .into_iter()
            .map(|sku| Compensation::ReleaseStock { sku })
            .collect();
        for sku in self.skus() {
            let q = self.committed_quantity(&sku);
            if q > 0 {
                out.push(Compensation::ReturnStock { sku, quantity: q });
            }
        }
        match self.payment {
            PaymentState::Authorized | PaymentState::CaptureFailed => {
                out.push(Compensation::VoidPayment)
            }
            PaymentState::Captured => out.push(Compensation::RefundPayment),
            _ => {}
        }
        if self.shipment == ShipmentState::Created {
            out.push(Compensation::CancelShipment);
        }
        out
    }
}

/// Why an input was not applied. Reported to the sender as a rejection event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("order {0} already exists")]
    AlreadyExists(OrderId),
    #[error("order {0} does not exist")]
    UnknownOrder(OrderId),
    #[error("unknown customer {0}: register the customer before ordering")]
    UnknownCustomer(CustomerId),
    #[error("order must have at least one line")]
    NoLines,
    #[error("line {line_no} is in {found}, the order is in {expected}")]
    CurrencyMismatch {
        line_no: usize,
        found: Currency,
        expected: Currency,
    },
    #[error("invalid order: {0}")]
    Invalid(String),
    #[error("line {0} does not exist")]
    UnknownLine(u32),
    #[error("order {id} is {status}; only a PENDING order can be {action}")]
    NotPending {
        id: OrderId,
        status: &'static str,
        action: &'static str,
    },
    #[error("order {0} is being paid; it can no longer be modified")]
    PaymentStarted(OrderId),
    #[error("order {id} is {status} and cannot be cancelled")]
    NotCancellable { id: OrderId, status: &'static str },
    #[error("a cancellation of order {0} is already waiting for the shipment")]
    CancellationPending(OrderId),
}

/// Decides what happens when `input` reaches the order `state` (None: no such order).
/// `now` is the input record's timestamp.
pub fn decide(
    id: OrderId,
    state: Option<&Order>,
    input: &OrderInput,
    now: i64,
) -> Result<Vec<OrderEvent>, Rejection> {
    match (state, input) {
        (Some(_), OrderInput::Place(_)) => Err(Rejection::AlreadyExists(id)),
        (None, OrderInput::Place(cmd)) => place(id, cmd, now),
        (None, _) => Err(Rejection::UnknownOrder(id)),
        (Some(order), OrderInput::Update { lines }) => update(order, lines, now),
        (Some(order), OrderInput::Confirm) => confirm(order, now),
        (Some(order), OrderInput::Cancel { reason }) => {
            cancel(order, format!("cancelled by customer: {reason}"), now)
        }
        (Some(order), reply) => on_reply(order, reply, now),
    }
}

fn check_lines(currency: Currency, lines: &[OrderLineRequest]) -> Result<(), Rejection> {
    if lines.is_empty() {
        return Err(Rejection::NoLines);
    }
    if let Some((i, l)) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.unit_price.currency() != currency)
    {
        return Err(Rejection::CurrencyMismatch {
            line_no: i,
            found: l.unit_price.currency(),
            expected: currency,
        });
    }
    Ok(())
}

fn place(id: OrderId, cmd: &PlaceOrder, now: i64) -> Result<Vec<OrderEvent>, Rejection> {
    let tier = cmd
        .customer_tier
        .ok_or(Rejection::UnknownCustomer(cmd.customer_id))?;
    check_lines(cmd.currency, &cmd.lines)?;
    if cmd.payment_method.trim().is_empty() {
        return Err(Rejection::Invalid(
            "payment method must not be empty".into(),
        ));
    }
    let pricing = price_for(
        &cmd.lines,
        tier,
        &cmd.shipping_address,
        cmd.currency,
        cmd.shipping_method,
    )
    .map_err(|e| Rejection::Invalid(e.to_string()))?;
    Ok(vec![OrderEvent::Created {
        order_id: id,
        customer_id: cmd.customer_id,
        customer_tier: tier,
        currency: cmd.currency,
        lines: cmd.lines.clone(),
        shipping_address: cmd.shipping_address.clone(),
        pricing,
        payment_method: cmd.payment_method.trim().to_string(),
        shipping_method: cmd.shipping_method,
        manual_confirmation: cmd.manual_confirmation,
        at: now,
    }])
}

fn not_pending(order: &Order, action: &'static str) -> Rejection {
    Rejection::NotPending {
        id: order.id,
        status: order.status.name(),
        action,
    }
}

fn update(
    order: &Order,
    lines: &[OrderLineRequest],
    now: i64,
) -> Result<Vec<OrderEvent>, Rejection> {
    if order.status != OrderStatus::Pending || order.cancel_requested.is_some() {
        return Err(not_pending(order, "modified"));
    }
    if order.payment != PaymentState::NotRequested {
        return Err(Rejection::PaymentStarted(order.id));
    }
    check_lines(order.currency, lines)?;
    let pricing = price_for(
        lines,
        order.customer_tier,
        &order.shipping_address,
        order.currency,
        order.shipping_method,
    )
    .map_err(|e| Rejection::Invalid(e.to_string()))?;
    // Held and in-flight reservations of the old lines are released; releases and the
    // new reservations travel the same SKU partitions in order, so nothing leaks.
    let released_skus =
        order.skus_where(|r| matches!(r, ReservationState::Requested | ReservationState::Reserved));
    Ok(vec![OrderEvent::Updated {
        lines: lines.to_vec(),
        pricing,
        first_line_no: order.first_line_no + order.lines.len() as u32,
        released_skus,
        at: now,
    }])
}

fn confirm(order: &Order, now: i64) -> Result<Vec<OrderEvent>, Rejection> {
    if order.status != OrderStatus::Pending || order.cancel_requested.is_some() {
        return Err(not_pending(order, "confirmed"));
    }
    if order.customer_confirmed {
        return Ok(vec![]);
    }
    let mut events = vec![OrderEvent::ConfirmationReceived { at: now }];
    if order.all_reserved() && order.payment == PaymentState::NotRequested {
        events.push(request_payment(order, now));
    }
    Ok(events)
}

fn request_payment(order: &Order, now: i64) -> OrderEvent {
    OrderEvent::PaymentRequested {
        amount: order.pricing.total,
        method: order.payment_method.clone(),
        at: now,
    }
}

fn cancel(order: &Order, reason: String, now: i64) -> Result<Vec<OrderEvent>, Rejection> {
    match order.status {
        OrderStatus::Completed | OrderStatus::Cancelled | OrderStatus::Shipped => {
            return Err(Rejection::NotCancellable {
                id: order.id,
                status: order.status.name(),
            });
        }
        _ => {}
    }
    if order.cancel_requested.is_some() {
        return Err(Rejection::CancellationPending(order.id));
    }
    // A shipment may leave the warehouse at any moment: ask it to cancel first.
    if matches!(
        order.shipment,
        ShipmentState::Requested | ShipmentState::Created
    ) {
        return Ok(vec![OrderEvent::CancellationRequested { reason, at: now }]);
    }
    Ok(vec![cancelled(order, reason, now)])
}

fn cancelled(order: &Order, reason: String, now: i64) -> OrderEvent {
    OrderEvent::Cancelled {
        reason,
        compensations: order.compensations(),
        at: now,
    }
}

/// `first`, then — if the order is still running — what follows from it in `then`.
fn and_then(
    order: &Order,
    first: OrderEvent,
    then: impl FnOnce(&Order) -> Vec<OrderEvent>,
) -> Vec<OrderEvent> {
    let after = evolve(Some(order.clone()), &first).expect("order exists");
    let mut events = vec![first];
    events.extend(then(&after));
    events
}

fn late(reply: &str, compensation: Compensation, now: i64) -> OrderEvent {
    OrderEvent::LateReplyCompensated {
        reply: reply.to_string(),
        compensation,
        at: now,
    }
}

fn on_reply(order: &Order, input: &OrderInput, now: i64) -> Result<Vec<OrderEvent>, Rejection> {
    use OrderInput as I;
    let cancelled_already = order.status == OrderStatus::Cancelled;
    let lines_of = |sku: &Sku, state: ReservationState| {
        order
            .lines
            .iter()
            .zip(&order.reservations)
            .any(|(l, r)| l.sku == *sku && *r == state)
    };
    let events = match input {
        I::Place(_) | I::Update { .. } | I::Confirm | I::Cancel { .. } => {
            unreachable!("commands are decided above")
        }
        I::StockReserved { line_no } | I::StockRejected { line_no, .. } => {
            if *line_no < order.first_line_no {
                return Ok(vec![]); // a reply about lines an update replaced
            }
            let idx = order
                .line_index(*line_no)
                .ok_or(Rejection::UnknownLine(*line_no))?;
            // Redelivered or superseded: the first answer counts.
            if order.reservations[idx] != ReservationState::Requested {
                return Ok(vec![]);
            }
            let line = &order.lines[idx];
            let first = match input {
                I::StockRejected { reason, .. } => OrderEvent::LineRejected {
                    line_no: *line_no,
                    sku: line.sku.clone(),
                    reason: reason.clone(),
                    at: now,
                },
                _ => OrderEvent::LineReserved {
                    line_no: *line_no,
                    sku: line.sku.clone(),
                    quantity: line.quantity.get(),
                    at: now,
                },
            };
            if cancelled_already {
                let mut events = vec![first.clone()];
                if matches!(first, OrderEvent::LineReserved { .. }) {
                    let sku = line.sku.clone();
                    events.push(late(
                        "StockReserved",
                        Compensation::ReleaseStock { sku },
                        now,
                    ));
                }
                return Ok(events);
            }
            and_then(order, first, |after| {
                if after.reservations.contains(&ReservationState::Requested) {
                    return vec![];
                }
                let reasons: Vec<String> = after
                    .reservations
                    .iter()
                    .zip(&after.lines)
                    .filter_map(|(r, l)| match r {
                        ReservationState::Rejected(why) => Some(format!("{}: {why}", l.sku)),
                        _ => None,
                    })
                    .collect();
                if !reasons.is_empty() {
                    let reason = format!("stock unavailable ({})", reasons.join("; "));
                    return vec![cancelled(after, reason, now)];
                }
                if after.all_reserved()
                    && (!after.manual_confirmation || after.customer_confirmed)
                    && after.payment == PaymentState::NotRequested
                {
                    return vec![request_payment(after, now)];
                }
                vec![]
            })
        }
        I::StockExpired { sku } => {
            if !lines_of(sku, ReservationState::Reserved)
                && !lines_of(sku, ReservationState::Committing)
            {
                return Ok(vec![]);
            }
            let first = OrderEvent::LineReleased {
                sku: sku.clone(),
                reason: "reservation expired".into(),
                at: now,
            };
            if cancelled_already {
                return Ok(vec![first]);
            }
            and_then(order, first, |after| {
                vec![cancelled(
                    after,
                    format!("reservation of {sku} expired before the order was paid"),
                    now,
                )]
            })
        }
        I::StockCommitted { sku } => {
            if !lines_of(sku, ReservationState::Committing) {
                return Ok(vec![]);
            }
            let first = OrderEvent::LineCommitted {
                sku: sku.clone(),
                at: now,
            };
            if cancelled_already {
                let quantity = order
                    .lines
                    .iter()
                    .zip(&order.reservations)
                    .filter(|(l, r)| l.sku == *sku && **r == ReservationState::Committing)
                    .map(|(l, _)| l.quantity.get())
                    .sum();
                let sku = sku.clone();
                return Ok(vec![
                    first,
                    late(
                        "StockCommitted",
                        Compensation::ReturnStock { sku, quantity },
                        now,
                    ),
                ]);
            }
            and_then(order, first, |after| {
                let all_sold = after
                    .reservations
                    .iter()
                    .all(|r| *r == ReservationState::Committed);
                if all_sold && after.shipment == ShipmentState::NotRequested {
                    vec![OrderEvent::ShipmentRequested {
                        method: after.shipping_method,
                        weight_kg: after.pricing.total_weight_kg,
                        at: now,
                    }]
                } else {
                    vec![]
                }
            })
        }
        I::StockCommitRejected { sku, reason } => {
            if !lines_of(sku, ReservationState::Committing) {
                return Ok(vec![]);
            }
            let first = OrderEvent::LineCommitRejected {
                sku: sku.clone(),
                reason: reason.clone(),
                at: now,
            };
            if cancelled_already {
                return Ok(vec![first]);
            }
            and_then(order, first, |after| {
                vec![cancelled(
                    after,
                    format!("stock of {sku} could not be committed: {reason}"),
                    now,
                )]
            })
        }
        I::PaymentAuthorized { authorization_code } => {
            if order.payment != PaymentState::Authorizing {
                return Ok(vec![]);
            }
            let first = OrderEvent::PaymentAuthorized {
                authorization_code: authorization_code.clone(),
                at: now,
            };
            if cancelled_already {
                return Ok(vec![
                    first,
                    late("PaymentAuthorized", Compensation::VoidPayment, now),
                ]);
            }
            and_then(order, first, |after| {
                vec![OrderEvent::Confirmed {
                    total: after.pricing.total,
                    at: now,
                }]
            })
        }
        I::PaymentFailed { reason } => {
            if order.payment != PaymentState::Authorizing {
                return Ok(vec![]);
            }
            let first = OrderEvent::PaymentDeclined {
                reason: reason.clone(),
                at: now,
            };
            if cancelled_already {
                return Ok(vec![first]);
            }
            and_then(order, first, |after| {
                vec![cancelled(after, format!("payment declined: {reason}"), now)]
            })
        }
        I::PaymentCaptured { amount } => {
            if order.payment != PaymentState::Capturing {
                return Ok(vec![]);
            }
            let first = OrderEvent::Paid {
                amount: *amount,
                at: now,
            };
            if cancelled_already {
                return Ok(vec![
                    first,
                    late("PaymentCaptured", Compensation::RefundPayment, now),
                ]);
            }
            vec![first]
        }
        I::PaymentCaptureFailed { reason } => {
            if order.payment != PaymentState::Capturing {
                return Ok(vec![]);
            }
            let first = OrderEvent::CaptureFailed {
                reason: reason.clone(),
                at: now,
            };
            if cancelled_already {
                return Ok(vec![
                    first,
                    late("CaptureFailed", Compensation::VoidPayment, now),
                ]);
            }
            and_then(order, first, |after| {
                vec![cancelled(
                    after,
                    format!("payment capture failed: {reason}"),
                    now,
                )]
            })
        }
        I::ShipmentCreated {
            carrier,
            tracking_number,
        } => {
            if order.shipment != ShipmentState::Requested {
                return Ok(vec![]);
            }
            vec![OrderEvent::ShipmentCreated {
                carrier: carrier.clone(),
                tracking_number: tracking_number.clone(),
                at: now,
            }]
        }
        I::ShipmentFailed { reason } => {
            if order.shipment != ShipmentState::Requested || cancelled_already {
                return Ok(vec![]);
            }
            let first = OrderEvent::ShipmentFailed {
                reason: reason.clone(),
                at: now,
            };
            let why = match &order.cancel_requested {
                Some(requested) => requested.clone(),
                None => format!("shipment impossible: {reason}"),
            };
            and_then(order, first, |after| vec![cancelled(after, why, now)])
        }
        I::ShipmentCancelled => {
            if !matches!(
                order.shipment,
                ShipmentState::Requested | ShipmentState::Created
            ) || cancelled_already
            {
                return Ok(vec![]);
            }
            let first = OrderEvent::ShipmentCancelled { at: now };
            let why = order
                .cancel_requested
                .clone()
                .unwrap_or_else(|| "shipment cancelled by the carrier".into());
            and_then(order, first, |after| vec![cancelled(after, why, now)])
        }
        I::ShipmentDispatched => {
            if !matches!(
                order.shipment,
                ShipmentState::Requested | ShipmentState::Created
            ) || cancelled_already
            {
                return Ok(vec![]);
            }
            let mut events = Vec::new();
            if order.cancel_requested.is_some() {
                events.push(OrderEvent::CancellationRefused {
                    reason: "the shipment was already dispatched".into(),
                    at: now,
                });
            }
            events.push(OrderEvent::Shipped { at: now });
            events
        }
        I::ShipmentDelivered => {
            if order.status != OrderStatus::Shipped {
                return Ok(vec![]);
            }
            vec![OrderEvent::Completed {
                total: order.pricing.total,
                at: now,
            }]
        }
    };
    Ok(events)
}

/// Folds one event into the state. `Created` starts an order; every event bumps the
/// version and is recorded in the history. Once an order is terminal its status never
/// changes again; late replies still update the step they answer.
pub fn evolve(state: Option<Order>, event: &OrderEvent) -> Option<Order> {
    use OrderEvent as E;
    let mut order = match (state, event) {
        (
            None,
            E::Created {
                order_id,
                customer_id,
                customer_tier,
                currency,
                lines,
                shipping_address,
                pricing,
                payment_method,
                shipping_method,
                manual_confirmation,
                at,
            },
        ) => Order {
            id: *order_id,
            customer_id: *customer_id,
            customer_tier: *customer_tier,
            status: OrderStatus::Pending,
            currency: *currency,
            lines: lines.clone(),
            first_line_no: 0,
            reservations: vec![ReservationState::Requested; lines.len()],
            shipping_address: shipping_address.clone(),
            pricing: pricing.clone(),
            payment_method: payment_method.clone(),
            shipping_method: *shipping_method,
            manual_confirmation: *manual_confirmation,
            customer_confirmed: false,
            payment: PaymentState::NotRequested,
            authorization_code: None,
            shipment: ShipmentState::NotRequested,
            tracking_number: None,
            carrier: None,
            cancel_requested: None,
            cancel_reason: None,
            history: Vec::new(),
            correlation_id: None,
            version: 0,
            created_at: *at,
            updated_at: *at,
        },
        (None, _) => return None,
        (Some(_), E::Created { .. }) => return None,
        (Some(order), _) => order,
    };
    let set_status = |order: &mut Order, s: OrderStatus| {
        if !order.status.is_terminal() {
            order.status = s;
        }
    };
    let set_lines = |order: &mut Order, sku: &Sku, from: ReservationState, to: ReservationState| {
        for (l, r) in order.lines.iter().zip(order.reservations.iter_mut()) {
            if l.sku == *sku && *r == from {
                *r = to.clone();
            }
        }
    };
    match event {
        E::Created { .. } => {}
        E::Updated {
            lines,
            pricing,
            first_line_no,
            ..
        } => {
            order.lines = lines.clone();
            order.pricing = pricing.clone();
            order.first_line_no = *first_line_no;
            order.reservations = vec![ReservationState::Requested; lines.len()];
            // A confirmation was for the old lines and price: ask again.
            if order.manual_confirmation {
                order.customer_confirmed = false;
            }
        }
        E::LineReserved { line_no, .. } => {
            if let Some(i) = order.line_index(*line_no) {
                order.reservations[i] = ReservationState::Reserved;
            }
        }
        E::LineRejected {
            line_no, reason, ..
        } => {
            if let Some(i) = order.line_index(*line_no) {
                order.reservations[i] = ReservationState::Rejected(reason.clone());
            }
        }
        E::LineReleased { sku, reason, .. } => {
            for from in [ReservationState::Reserved, ReservationState::Committing] {
                set_lines(
                    &mut order,
                    sku,
                    from,
                    ReservationState::Released(reason.clone()),
                );
            }
        }
        E::LineCommitted { sku, .. } => set_lines(
            &mut order,
            sku,
            ReservationState::Committing,
            ReservationState::Committed,
        ),
        E::LineCommitRejected { sku, reason, .. } => set_lines(
            &mut order,
            sku,
            ReservationState::Committing,
            ReservationState::Released(reason.clone()),
        ),
        E::ConfirmationReceived { .. } => order.customer_confirmed = true,
        E::PaymentRequested { .. } => order.payment = PaymentState::Authorizing,
        E::PaymentAuthorized {
            authorization_code, ..
        } => {
            order.payment = PaymentState::Authorized;
            order.authorization_code = Some(authorization_code.clone());
        }
        E::PaymentDeclined { .. } => order.payment = PaymentState::Declined,
        E::Confirmed { .. } => {
            order.payment = PaymentState::Capturing;
            set_status(&mut order, OrderStatus::Confirmed);
        }
        E::Paid { .. } => {
            order.payment = PaymentState::Captured;
            if !order.status.is_terminal() {
                for r in order.reservations.iter_mut() {
                    if *r == ReservationState::Reserved {
                        *r = ReservationState::Committing;
                    }
                }
            }
            set_status(&mut order, OrderStatus::Paid);
        }
        E::CaptureFailed { .. } => order.payment = PaymentState::CaptureFailed,
        E::ShipmentRequested { .. } => order.shipment = ShipmentState::Requested,
        E::ShipmentCreated {
            carrier,
            tracking_number,
            ..
        } => {
            order.shipment = ShipmentState::Created;
            order.carrier = Some(carrier.clone());
            order.tracking_number = Some(tracking_number.clone());
        }
        E::ShipmentFailed { .. } => order.shipment = ShipmentState::Failed,
        E::ShipmentCancelled { .. } => order.shipment = ShipmentState::Cancelled,
        E::CancellationRequested { reason, .. } => order.cancel_requested = Some(reason.clone()),
        E::CancellationRefused { .. } => order.cancel_requested = None,
        E::Shipped { .. } => {
            order.shipment = ShipmentState::Dispatched;
            set_status(&mut order, OrderStatus::Shipped);
        }
        E::Completed { .. } => {
            order.shipment = ShipmentState::Delivered;
            set_status(&mut order, OrderStatus::Completed);
        }
        E::Cancelled {
            reason,
            compensations,
            ..
        } => {
            apply_compensations(&mut order, compensations);
            order.cancel_requested = None;
            order.cancel_reason = Some(reason.clone());
            set_status(&mut order, OrderStatus::Cancelled);
        }
        E::LateReplyCompensated { compensation, .. } => {
            apply_compensations(&mut order, std::slice::from_ref(compensation))
        }
    }
    order.version += 1;
    order.updated_at = event.at();
    order.history.push(HistoryEntry {
        at: event.at(),
        event: event.name().to_string(),
        version: order.version,
        event_id: None,
        cause: None,
        sent: Vec::new(),
        detail: event.detail(),
    });
    Some(order)
}

fn apply_compensations(order: &mut Order, compensations: &[Compensation]) {
    for c in compensations {
        match c {
            // A line whose commit is in flight stays Committing: its late reply decides
            // whether the stock must come back.
            Compensation::ReleaseStock { sku } => {
                for (l, r) in order.lines.iter().zip(order.reservations.iter_mut()) {
                    if l.sku == *sku && *r == ReservationState::Reserved {
                        *r = ReservationState::Released("compensated".into());
                    }
                }
            }
            Compensation::ReturnStock { sku, .. } => {
                for (l, r) in order.lines.iter().zip(order.reservations.iter_mut()) {
                    if l.sku == *sku && *r == ReservationState::Committed {
                        *r = ReservationState::Released("returned".into());
                    }
                }
            }
            Compensation::VoidPayment => order.payment = PaymentState::Voided,
            Compensation::RefundPayment => order.payment = PaymentState::Refunded,
            Compensation::CancelShipment => order.shipment = ShipmentState::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::order::saga::{SagaCommand, react};
    use crate::values::{Money, Quantity};
    use rust_decimal_macros::dec;

    fn oid() -> OrderId {
        OrderId::parse("6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11").unwrap()
    }
    fn sku(i: usize) -> Sku {
        Sku::parse(&format!("SKU-{i:03}")).unwrap()
    }
    fn lines(n: usize) -> Vec<OrderLineRequest> {
        (0..n)
            .map(|i| OrderLineRequest {
                sku: sku(i),
                product_name: format!("p{i}"),
                quantity: Quantity::new(2).unwrap(),
                unit_price: Money::new(dec!(10), Currency::USD).unwrap(),
                unit_weight_kg: dec!(5),
            })
            .collect()
    }
    fn place_with(n: usize, tier: Option<CustomerTier>, manual: bool) -> OrderInput {
        OrderInput::Place(PlaceOrder {
            customer_id: CustomerId::parse("0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33").unwrap(),
            customer_tier: tier,
            currency: Currency::USD,
            lines: lines(n),
            shipping_address: Address::new("1 Main", "Town", "10001", "US").unwrap(),
            payment_method: "tok_visa".into(),
            shipping_method: Method::Standard,
            manual_confirmation: manual,
        })
    }
    fn place(n: usize) -> OrderInput {
        place_with(n, Some(CustomerTier::Bronze), false)
    }
    fn reserved(line_no: u32) -> OrderInput {
        OrderInput::StockReserved { line_no }
    }
    fn authorized() -> OrderInput {
        OrderInput::PaymentAuthorized {
            authorization_code: "A1".into(),
        }
    }
    fn captured() -> OrderInput {
        OrderInput::PaymentCaptured {
            amount: Money::new(dec!(54), Currency::USD).unwrap(),
        }
    }
    fn committed(i: usize) -> OrderInput {
        OrderInput::StockCommitted { sku: sku(i) }
    }
    fn created() -> OrderInput {
        OrderInput::ShipmentCreated {
            carrier: "USPS".into(),
            tracking_number: "USPS1".into(),
        }
    }
    fn cancel() -> OrderInput {
        OrderInput::Cancel {
            reason: "changed my mind".into(),
        }
    }

    /// given `history`, when `input`: (state before, decision, commands the saga sends).
    fn given_when(
        history: &[OrderInput],
        input: &OrderInput,
    ) -> (
        Option<Order>,
        Result<Vec<OrderEvent>, Rejection>,
        Vec<SagaCommand>,
    ) {
        let mut state = None;
        for (t, h) in history.iter().enumerate() {
            for e in decide(oid(), state.as_ref(), h, t as i64).unwrap() {
                state = evolve(state, &e);
            }
        }
        let out = decide(oid(), state.as_ref(), input, 100);
        let mut after = state.clone();
        let mut commands = Vec::new();
        if let Ok(events) = &out {
            for e in events {
                after = evolve(after, e);
                commands.extend(react(after.as_ref().unwrap(), e));
            }
        }
        (state, out, commands)
    }
    fn names(out: &Result<Vec<OrderEvent>, Rejection>) -> Vec<&'static str> {
        out.as_ref().unwrap().iter().map(OrderEvent::name).collect()
    }

    const UP_TO_PAID: usize = 5;
    fn happy_history() -> Vec<OrderInput> {
        vec![
            place(2),
            reserved(0),
            reserved(1),
            authorized(),
            captured(),
            committed(0),
            committed(1),
            created(),
            OrderInput::ShipmentDispatched,
        ]
    }

    #[test]
    fn placing_an_order_prices_it_with_the_tier_and_reserves_every_line() {
        let (_, out, cmds) = given_when(&[], &place_with(2, Some(CustomerTier::Gold), false));
        let order = evolve(None, &out.unwrap()[0]).unwrap();
        assert_eq!(order.status, OrderStatus::Pending);
        // 40 − 10 % = 36; tax 3.60; shipping 10 → 49.60
        assert_eq!(order.pricing.subtotal.amount(), dec!(40));
        assert_eq!(order.pricing.discount.amount(), dec!(4));
        assert_eq!(order.pricing.tax.amount(), dec!(3.6));
        assert_eq!(order.pricing.total.amount(), dec!(49.6));
        assert_eq!(cmds.len(), 2);
        assert!(matches!(
            cmds[1],
            SagaCommand::ReserveStock { line_no: 1, .. }
        ));
    }

    #[test]
    fn an_unknown_customer_cannot_order() {
        let (_, out, _) = given_when(&[], &place_with(1, None, false));
        assert!(matches!(out, Err(Rejection::UnknownCustomer(_))));
    }

    #[test]
    fn the_happy_path_runs_to_completed_step_by_step() {
        let h = happy_history();
        let (_, out, cmds) = given_when(&h[..2], &h[2]);
        assert_eq!(names(&out), ["LineReserved", "PaymentRequested"]);
        assert!(
            matches!(&cmds[..], [SagaCommand::AuthorizePayment { amount, method }] if amount.amount() == dec!(54) && method == "tok_visa")
        );
        let (_, out, cmds) = given_when(&h[..3], &h[3]);
        assert_eq!(names(&out), ["PaymentAuthorized", "OrderConfirmed"]);
        assert_eq!(cmds, vec![SagaCommand::CapturePayment]);
        let (_, out, cmds) = given_when(&h[..4], &h[4]);
        assert_eq!(names(&out), ["OrderPaid"]);
        assert_eq!(
            cmds,
            vec![
                SagaCommand::CommitReservation { sku: sku(0) },
                SagaCommand::CommitReservation { sku: sku(1) }
            ]
        );
        let (_, out, cmds) = given_when(&h[..6], &h[6]);
        assert_eq!(names(&out), ["LineCommitted", "ShipmentRequested"]);
        assert!(
            matches!(&cmds[..], [SagaCommand::CreateShipment { method: Method::Standard, weight_kg }] if *weight_kg == dec!(20))
        );
        let (_, out, _) = given_when(&h[..8], &h[8]);
        assert_eq!(names(&out), ["OrderShipped"]);
        let (state, out, cmds) = given_when(&h, &OrderInput::ShipmentDelivered);
        assert_eq!(names(&out), ["OrderCompleted"]);
        assert_eq!(
            cmds,
            vec![],
            "the customer context reads OrderCompleted itself"
        );
        assert_eq!(state.unwrap().status, OrderStatus::Shipped);
    }

    #[test]
    fn a_rejected_line_cancels_and_releases_the_reserved_ones() {
        let (_, out, cmds) = given_when(
            &[place(2), reserved(0)],
            &OrderInput::StockRejected {
                line_no: 1,
                reason: "only 1 available".into(),
            },
        );
        match &out.unwrap()[1] {
            OrderEvent::Cancelled { reason, .. } => {
                assert!(reason.contains("SKU-001: only 1 available"), "{reason}")
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
        assert!(matches!(&cmds[..], [SagaCommand::ReleaseStock { sku: s, .. }] if *s == sku(0)));
    }

    #[test]
    fn a_declined_payment_releases_the_stock() {
        let (_, out, cmds) = given_when(
            &[place(1), reserved(0)],
            &OrderInput::PaymentFailed {
                reason: "card declined".into(),
            },
        );
        assert_eq!(names(&out), ["PaymentDeclined", "OrderCancelled"]);
        assert!(matches!(&cmds[..], [SagaCommand::ReleaseStock { .. }]));
    }

    #[test]
    fn a_failed_capture_voids_and_releases() {
        let (_, out, cmds) = given_when(
            &[place(1), reserved(0), authorized()],
            &OrderInput::PaymentCaptureFailed {
                reason: "issuer".into(),
            },
        );
        assert_eq!(names(&out), ["CaptureFailed", "OrderCancelled"]);
        assert!(matches!(
            &cmds[..],
            [
                SagaCommand::ReleaseStock { .. },
                SagaCommand::VoidPayment { .. }
            ]
        ));
    }

    #[test]
    fn an_undeliverable_order_is_refunded_and_its_stock_returned() {
        let h = happy_history();
        let (_, out, cmds) = given_when(
            &h[..7],
            &OrderInput::ShipmentFailed {
                reason: "undeliverable".into(),
            },
        );
        assert_eq!(names(&out), ["ShipmentFailed", "OrderCancelled"]);
        assert!(matches!(
            &cmds[..],
            [
                SagaCommand::ReturnStock { quantity: 2, .. },
                SagaCommand::ReturnStock { quantity: 2, .. },
                SagaCommand::RefundPayment { .. }
            ]
        ));
    }

    #[test]
    fn a_customer_cancel_compensates_exactly_the_steps_done() {
        let h = happy_history();
        // While reserving: release what is held; the late reservation is released later.
        let (_, out, cmds) = given_when(&h[..2], &cancel());
        assert_eq!(names(&out), ["OrderCancelled"]);
        assert!(matches!(&cmds[..], [SagaCommand::ReleaseStock { sku: s, .. }] if *s == sku(0)));
        let mut late = h[..2].to_vec();
        late.push(cancel());
        let (_, out, cmds) = given_when(&late, &reserved(1));
        assert_eq!(names(&out), ["LineReserved", "LateReplyCompensated"]);
        assert!(matches!(&cmds[..], [SagaCommand::ReleaseStock { sku: s, .. }] if *s == sku(1)));
        // Authorized and capture in flight: release now; the capture's answer decides
        // between a refund (captured) and a void (capture failed).
        let (_, _, cmds) = given_when(&h[..4], &cancel());
        assert!(matches!(
            &cmds[..],
            [
                SagaCommand::ReleaseStock { .. },
                SagaCommand::ReleaseStock { .. }
            ]
        ));
        let mut late = h[..4].to_vec();
        late.push(cancel());
        let (_, out, cmds) = given_when(&late, &captured());
        assert_eq!(names(&out), ["OrderPaid", "LateReplyCompensated"]);
        assert!(
            matches!(&cmds[..], [SagaCommand::RefundPayment { .. }]),
            "{cmds:?}"
        );
        let (_, _, cmds) = given_when(
            &late,
            &OrderInput::PaymentCaptureFailed { reason: "x".into() },
        );
        assert!(
            matches!(&cmds[..], [SagaCommand::VoidPayment { .. }]),
            "{cmds:?}"
        );
        // Paid, commits in flight: release now (a no-op if already sold), refund; a late
        // commit is returned.
        let (_, _, cmds) = given_when(&h[..UP_TO_PAID], &cancel());
        assert_eq!(cmds.len(), 3);
        assert!(matches!(cmds[2], SagaCommand::RefundPayment { .. }));
        let mut late = h[..UP_TO_PAID].to_vec();
        late.push(cancel());
        let (_, out, cmds) = given_when(&late, &committed(0));
        assert_eq!(names(&out), ["LineCommitted", "LateReplyCompensated"]);
        assert!(matches!(
            &cmds[..],
            [SagaCommand::ReturnStock { quantity: 2, .. }]
        ));
        // Shipment created: ask the shipment first; cancelled → refund + return.
        let (_, out, cmds) = given_when(&h[..8], &cancel());
        assert_eq!(names(&out), ["CancellationRequested"]);
        assert!(matches!(&cmds[..], [SagaCommand::CancelShipment { .. }]));
        let mut waiting = h[..8].to_vec();
        waiting.push(cancel());
        let (_, out, cmds) = given_when(&waiting, &OrderInput::ShipmentCancelled);
        assert_eq!(names(&out), ["ShipmentCancelled", "OrderCancelled"]);
        assert_eq!(cmds.len(), 3, "{cmds:?}");
        // …or it was dispatched already: the cancel is refused and the order ships.
        let (_, out, _) = given_when(&waiting, &OrderInput::ShipmentDispatched);
        assert_eq!(names(&out), ["CancellationRefused", "OrderShipped"]);
        // Shipped, completed, cancelled: no cancel.
        let (_, out, _) = given_when(&h, &cancel());
        assert!(matches!(out, Err(Rejection::NotCancellable { .. })));
    }

    #[test]
    fn an_expired_reservation_cancels_an_unpaid_order() {
        let (_, out, cmds) = given_when(
            &[place(2), reserved(0), reserved(1)],
            &OrderInput::StockExpired { sku: sku(0) },
        );
        assert_eq!(names(&out), ["LineReleased", "OrderCancelled"]);
        // Only the other SKU is still held; the payment request is answered late.
        assert!(matches!(&cmds[..], [SagaCommand::ReleaseStock { sku: s, .. }] if *s == sku(1)));
    }

    #[test]
    fn manual_confirmation_waits_for_the_customer_and_only_pending_orders_confirm() {
        let manual = place_with(1, Some(CustomerTier::Bronze), true);
        let (_, out, _) = given_when(std::slice::from_ref(&manual), &reserved(0));
        assert_eq!(names(&out), ["LineReserved"]);
        let (_, out, cmds) = given_when(&[manual.clone(), reserved(0)], &OrderInput::Confirm);
        assert_eq!(names(&out), ["ConfirmationReceived", "PaymentRequested"]);
        assert_eq!(cmds.len(), 1);
        // Confirmed before the stock answered: payment starts with the last reservation.
        let (_, out, _) = given_when(&[manual, OrderInput::Confirm], &reserved(0));
        assert_eq!(names(&out), ["LineReserved", "PaymentRequested"]);
        let (_, out, _) = given_when(&happy_history()[..4], &OrderInput::Confirm);
        assert!(matches!(out, Err(Rejection::NotPending { .. })));
        // An update after a confirmation asks for a new one (new lines, new price).
        let update = OrderInput::Update { lines: lines(1) };
        let history = [
            place_with(1, Some(CustomerTier::Bronze), true),
            OrderInput::Confirm,
            update,
        ];
        let (_, out, _) = given_when(&history, &reserved(1));
        assert_eq!(
            names(&out),
            ["LineReserved"],
            "waits for a new confirmation"
        );
    }

    #[test]
    fn an_update_reprices_releases_the_old_lines_and_reserves_the_new_ones() {
        let mut new_lines = lines(1);
        new_lines[0].quantity = Quantity::new(5).unwrap();
        let update = OrderInput::Update { lines: new_lines };
        let (_, out, cmds) = given_when(&[place(2), reserved(0)], &update);
        let events = out.unwrap();
        let after = evolve(given_when(&[place(2), reserved(0)], &update).0, &events[0]).unwrap();
        assert_eq!(after.pricing.subtotal.amount(), dec!(50));
        assert_eq!(after.first_line_no, 2);
        assert_eq!(
            cmds,
            vec![
                SagaCommand::ReleaseStock {
                    sku: sku(0),
                    reason: "order updated".into()
                },
                SagaCommand::ReleaseStock {
                    sku: sku(1),
                    reason: "order updated".into()
                },
                SagaCommand::ReserveStock {
                    sku: sku(0),
                    line_no: 2,
                    quantity: 5
                },
            ]
        );
        // A reply about a replaced line is stale.
        let (_, out, _) = given_when(&[place(2), reserved(0), update.clone()], &reserved(1));
        assert_eq!(out, Ok(vec![]));
        // Once payment started, no more updates.
        let (_, out, _) = given_when(&happy_history()[..3], &update);
        assert_eq!(out, Err(Rejection::PaymentStarted(oid())));
    }

    #[test]
    fn duplicate_and_stale_replies_change_nothing() {
        let h = happy_history();
        for (i, reply) in h.iter().enumerate().skip(1) {
            let (_, out, _) = given_when(&h[..=i], reply);
            assert_eq!(out, Ok(vec![]), "repeating {reply:?}");
        }
        let (_, out, _) = given_when(&[place(1)], &reserved(5));
        assert_eq!(out, Err(Rejection::UnknownLine(5)));
    }
}
