use serde::{Deserialize, Serialize};

use crate::values::{Address, Currency, CustomerId, Money, Quantity, Sku};

/// Everything the order decider reacts to: commands from clients and replies from the
/// other contexts of the saga.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderInput {
    Place(PlaceOrder),
    /// The customer cancels: compensations run for the steps already done.
    Cancel {
        reason: String,
    },
    StockReserved {
        line_no: u32,
    },
    StockRejected {
        line_no: u32,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub customer_id: CustomerId,
    pub currency: Currency,
    pub lines: Vec<OrderLineRequest>,
    pub shipping_address: Address,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLineRequest {
    pub sku: Sku,
    pub product_name: String,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// Weight of one unit; the seed's default of 5 kg applies when the sender omits it.
    pub unit_weight_kg: rust_decimal::Decimal,
}
