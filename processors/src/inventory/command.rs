use rust_decimal::Decimal;

use crate::values::{OrderId, Quantity};

#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    RegisterProduct {
        name: String,
        /// Where the initial stock is; more warehouses appear with restocks.
        warehouse: String,
        initial_stock: u32,
        low_stock_threshold: u32,
        /// Below this available quantity a reorder of `reorder_quantity` is suggested.
        reorder_point: u32,
        reorder_quantity: u32,
        unit_weight_kg: Decimal,
    },
    Restock {
        warehouse: String,
        quantity: Quantity,
    },
    /// Stock-taking: the counted quantity on hand in one warehouse replaces the book
    /// figure.
    AdjustStock {
        warehouse: String,
        counted: u32,
        reason: String,
    },
    /// Saga step: hold `quantity` for one order line. With a `channel`, a hold taken
    /// outside the saga (the gRPC service): the order saga hears nothing of it.
    ReserveStock {
        order_id: OrderId,
        line_no: u32,
        quantity: Quantity,
        channel: Option<String>,
    },
    /// Compensation: release everything held (not yet committed) for `order_id`.
    /// With a `channel`: only that channel's hold is released (a saga hold is not its
    /// to release), and a missing hold is refused rather than ignored.
    ReleaseStock {
        order_id: OrderId,
        reason: String,
        channel: Option<String>,
    },
    /// Saga step after payment capture: the held stock leaves the books (it is sold).
    CommitReservation { order_id: OrderId },
    /// Compensation after a commit: sold stock of a cancelled order comes back.
    ReturnStock {
        order_id: OrderId,
        quantity: Quantity,
        reason: String,
    },
    /// Written by the expiry punctuation: release the hold if it is still there (the same
    /// hold: `hold` is its [`Hold::id`](super::Hold::id); `None` expires any).
    ExpireReservation {
        order_id: OrderId,
        hold: Option<String>,
    },
}
