use rust_decimal::Decimal;

use crate::values::{OrderId, Quantity};

#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    RegisterProduct {
        name: String,
        initial_stock: u32,
        low_stock_threshold: u32,
        unit_weight_kg: Decimal,
    },
    Restock {
        quantity: Quantity,
    },
    /// Saga step: hold `quantity` for one order line.
    ReserveStock {
        order_id: OrderId,
        line_no: u32,
        quantity: Quantity,
    },
    /// Compensation: release everything held for `order_id`.
    ReleaseStock {
        order_id: OrderId,
        reason: String,
    },
}
