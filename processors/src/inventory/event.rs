use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::values::OrderId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryEvent {
    Registered {
        name: String,
        on_hand: u32,
        low_stock_threshold: u32,
        unit_weight_kg: Decimal,
    },
    Restocked {
        quantity: u32,
        on_hand: u32,
        available: u32,
    },
    Reserved {
        order_id: OrderId,
        line_no: u32,
        quantity: u32,
        available: u32,
    },
    /// The reservation was refused; nothing changed. Sent back to the order.
    Rejected {
        order_id: OrderId,
        line_no: u32,
        quantity: u32,
        available: u32,
        reason: String,
    },
    Released {
        order_id: OrderId,
        quantity: u32,
        available: u32,
    },
    /// Available stock fell below the product's threshold.
    LowStock { available: u32, threshold: u32 },
}
