use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::command::OrderLineRequest;
use super::pricing::{CustomerTier, Pricing};
use crate::shipping::Method;
use crate::values::{Address, Currency, CustomerId, Money, OrderId, Sku};

/// A compensating action the order asks of another context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compensation {
    /// Release what is held (not yet sold) for the order on `sku`.
    ReleaseStock {
        sku: Sku,
    },
    /// Sold stock comes back (the reservation was already committed).
    ReturnStock {
        sku: Sku,
        quantity: u32,
    },
    VoidPayment,
    RefundPayment,
    CancelShipment,
}

impl Compensation {
    pub fn describe(&self) -> String {
        match self {
            Compensation::ReleaseStock { sku } => format!("release stock {sku}"),
            Compensation::ReturnStock { sku, quantity } => format!("return {quantity} x {sku}"),
            Compensation::VoidPayment => "void payment".into(),
            Compensation::RefundPayment => "refund payment".into(),
            Compensation::CancelShipment => "cancel shipment".into(),
        }
    }
}

/// Facts about one order, in the order they happen. `Created` is much larger than the
/// others; events live for one record's processing, so boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    Created {
        order_id: OrderId,
        customer_id: CustomerId,
        customer_tier: CustomerTier,
        currency: Currency,
        lines: Vec<OrderLineRequest>,
        shipping_address: Address,
        pricing: Pricing,
        payment_method: String,
        shipping_method: Method,
        manual_confirmation: bool,
        at: i64,
    },
    /// The lines were replaced (while Pending); the new lines are numbered from
    /// `first_line_no`, and replies about older line numbers are stale.
    Updated {
        lines: Vec<OrderLineRequest>,
        pricing: Pricing,
        first_line_no: u32,
        released_skus: Vec<Sku>,
        at: i64,
    },
    LineReserved {
        line_no: u32,
        sku: Sku,
        quantity: u32,
        at: i64,
    },
    LineRejected {
        line_no: u32,
        sku: Sku,
        reason: String,
        at: i64,
    },
    /// Inventory let the hold on `sku` go (reservation expired).
    LineReleased {
        sku: Sku,
        reason: String,
        at: i64,
    },
    LineCommitted {
        sku: Sku,
        at: i64,
    },
    LineCommitRejected {
        sku: Sku,
        reason: String,
        at: i64,
    },
    /// The customer confirmed an order placed with manual confirmation.
    ConfirmationReceived {
        at: i64,
    },
    PaymentRequested {
        amount: Money,
        method: String,
        at: i64,
    },
    PaymentAuthorized {
        authorization_code: String,
        at: i64,
    },
    PaymentDeclined {
        reason: String,
        at: i64,
    },
    /// Stock held and payment authorized: the seed's Confirmed. Capture follows.
    Confirmed {
        total: Money,
        at: i64,
    },
    Paid {
        amount: Money,
        at: i64,
    },
    CaptureFailed {
        reason: String,
        at: i64,
    },
    ShipmentRequested {
        method: Method,
        weight_kg: Decimal,
        at: i64,
    },
    ShipmentCreated {
        carrier: String,
        tracking_number: String,
        at: i64,
    },
    ShipmentFailed {
        reason: String,
        at: i64,
    },
    ShipmentCancelled {
        at: i64,
    },
    /// A cancel arrived while a shipment exists: the shipment is asked to cancel first
    /// (it may already have left the warehouse).
    CancellationRequested {
        reason: String,
        at: i64,
    },
    CancellationRefused {
        reason: String,
        at: i64,
    },
    Shipped {
        at: i64,
    },
    Completed {
        total: Money,
        at: i64,
    },
    Cancelled {
        reason: String,
        compensations: Vec<Compensation>,
        at: i64,
    },
    /// A reply that arrived after the order was cancelled, undone.
    LateReplyCompensated {
        reply: String,
        compensation: Compensation,
        at: i64,
    },
}

impl OrderEvent {
    pub fn at(&self) -> i64 {
        use OrderEvent as E;
        match self {
            E::Created { at, .. }
            | E::Updated { at, .. }
            | E::LineReserved { at, .. }
            | E::LineRejected { at, .. }
            | E::LineReleased { at, .. }
            | E::LineCommitted { at, .. }
            | E::LineCommitRejected { at, .. }
            | E::ConfirmationReceived { at }
            | E::PaymentRequested { at, .. }
            | E::PaymentAuthorized { at, .. }
            | E::PaymentDeclined { at, .. }
            | E::Confirmed { at, .. }
            | E::Paid { at, .. }
            | E::CaptureFailed { at, .. }
            | E::ShipmentRequested { at, .. }
            | E::ShipmentCreated { at, .. }
            | E::ShipmentFailed { at, .. }
            | E::ShipmentCancelled { at }
            | E::CancellationRequested { at, .. }
            | E::CancellationRefused { at, .. }
            | E::Shipped { at }
            | E::Completed { at, .. }
            | E::Cancelled { at, .. }
            | E::LateReplyCompensated { at, .. } => *at,
        }
    }

    /// The outcome events: every order ends with exactly one of them.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OrderEvent::Completed { .. } | OrderEvent::Cancelled { .. }
        )
    }

    /// The reason or outcome worth showing in a timeline, if any.
    pub fn detail(&self) -> Option<String> {
        use OrderEvent as E;
        match self {
            E::LineRejected { sku, reason, .. } | E::LineReleased { sku, reason, .. } => {
                Some(format!("{sku}: {reason}"))
            }
            E::LineCommitRejected { sku, reason, .. } => Some(format!("{sku}: {reason}")),
            E::PaymentDeclined { reason, .. }
            | E::CaptureFailed { reason, .. }
            | E::ShipmentFailed { reason, .. }
            | E::CancellationRequested { reason, .. }
            | E::CancellationRefused { reason, .. } => Some(reason.clone()),
            E::Cancelled { reason, .. } => Some(reason.clone()),
            E::ShipmentCreated {
                carrier,
                tracking_number,
                ..
            } => Some(format!("{carrier} {tracking_number}")),
            E::LateReplyCompensated { reply, .. } => Some(format!("late {reply}")),
            _ => None,
        }
    }

    /// A short name for histories and logs.
    pub fn name(&self) -> &'static str {
        use OrderEvent as E;
        match self {
            E::Created { .. } => "OrderCreated",
            E::Updated { .. } => "OrderUpdated",
            E::LineReserved { .. } => "LineReserved",
            E::LineRejected { .. } => "LineRejected",
            E::LineReleased { .. } => "LineReleased",
            E::LineCommitted { .. } => "LineCommitted",
            E::LineCommitRejected { .. } => "LineCommitRejected",
            E::ConfirmationReceived { .. } => "ConfirmationReceived",
            E::PaymentRequested { .. } => "PaymentRequested",
            E::PaymentAuthorized { .. } => "PaymentAuthorized",
            E::PaymentDeclined { .. } => "PaymentDeclined",
            E::Confirmed { .. } => "OrderConfirmed",
            E::Paid { .. } => "OrderPaid",
            E::CaptureFailed { .. } => "CaptureFailed",
            E::ShipmentRequested { .. } => "ShipmentRequested",
            E::ShipmentCreated { .. } => "ShipmentCreated",
            E::ShipmentFailed { .. } => "ShipmentFailed",
            E::ShipmentCancelled { .. } => "ShipmentCancelled",
            E::CancellationRequested { .. } => "CancellationRequested",
            E::CancellationRefused { .. } => "CancellationRefused",
            E::Shipped { .. } => "OrderShipped",
            E::Completed { .. } => "OrderCompleted",
            E::Cancelled { .. } => "OrderCancelled",
            E::LateReplyCompensated { .. } => "LateReplyCompensated",
        }
    }
}
