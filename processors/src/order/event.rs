use serde::{Deserialize, Serialize};

use super::command::OrderLineRequest;
use super::pricing::Pricing;
use crate::values::{Address, Currency, CustomerId, Money, OrderId, Sku};

/// Facts about one order, in the order they happen. `Created` is much larger than the
/// others; events live for one record's processing, so boxing it buys nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OrderEvent {
    Created {
        order_id: OrderId,
        customer_id: CustomerId,
        customer_tier: String,
        currency: Currency,
        lines: Vec<OrderLineRequest>,
        shipping_address: Address,
        pricing: Pricing,
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
    Confirmed {
        total: Money,
        at: i64,
    },
    Cancelled {
        reason: String,
        released_skus: Vec<Sku>,
        at: i64,
    },
}

impl OrderEvent {
    pub fn at(&self) -> i64 {
        match self {
            OrderEvent::Created { at, .. }
            | OrderEvent::LineReserved { at, .. }
            | OrderEvent::LineRejected { at, .. }
            | OrderEvent::Confirmed { at, .. }
            | OrderEvent::Cancelled { at, .. } => *at,
        }
    }

    /// The outcome events. Until shipping exists, a customer may still cancel a
    /// Confirmed order, so Confirmed can be followed by Cancelled (and nothing else).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            OrderEvent::Confirmed { .. } | OrderEvent::Cancelled { .. }
        )
    }
}
