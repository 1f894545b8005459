use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::values::OrderId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryEvent {
    Registered {
        name: String,
        warehouse: String,
        on_hand: u32,
        low_stock_threshold: u32,
        reorder_point: u32,
        reorder_quantity: u32,
        unit_weight_kg: Decimal,
    },
    Restocked {
        warehouse: String,
        quantity: u32,
        on_hand: u32,
        available: u32,
    },
    /// A stock-taking correction of one warehouse.
    Adjusted {
        warehouse: String,
        from: u32,
        to: u32,
        reason: String,
        available: u32,
    },
    Reserved {
        order_id: OrderId,
        line_no: u32,
        quantity: u32,
        /// Units held per warehouse, as the allocator chose.
        allocation: BTreeMap<String, u32>,
        available: u32,
        at: i64,
        /// Set for holds taken outside the order saga.
        channel: Option<String>,
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
        reason: String,
    },
    /// The hold outlived its time to live and was released. Sent back to the order.
    Expired {
        order_id: OrderId,
        quantity: u32,
        available: u32,
    },
    /// The held stock was sold: it leaves on hand. Sent back to the order.
    Committed {
        order_id: OrderId,
        quantity: u32,
        on_hand: u32,
        available: u32,
    },
    /// Nothing was held to commit (expired or released first). Sent back to the order.
    CommitRejected { order_id: OrderId, reason: String },
    /// Sold stock of a cancelled order is back on hand.
    Returned {
        order_id: OrderId,
        warehouse: String,
        quantity: u32,
        on_hand: u32,
        available: u32,
    },
    /// Available stock fell below the product's threshold.
    LowStock { available: u32, threshold: u32 },
    /// Available stock fell below the reorder point: buy `quantity` more.
    ReorderSuggested {
        available: u32,
        reorder_point: u32,
        quantity: u32,
    },
}

impl InventoryEvent {
    /// The order this event answers, if it is a reply the order saga waits for.
    pub fn reply_to(&self) -> Option<OrderId> {
        match self {
            InventoryEvent::Reserved { order_id, .. }
            | InventoryEvent::Rejected { order_id, .. }
            | InventoryEvent::Expired { order_id, .. }
            | InventoryEvent::Committed { order_id, .. }
            | InventoryEvent::CommitRejected { order_id, .. } => Some(*order_id),
            _ => None,
        }
    }
}
