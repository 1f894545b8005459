use serde::{Deserialize, Serialize};

use super::pricing::CustomerTier;
use crate::shipping::Method;
use crate::values::{Address, Currency, CustomerId, Money, Quantity, Sku};

/// Everything the order decider reacts to: commands from clients and replies from the
/// other contexts of the saga.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderInput {
    Place(PlaceOrder),
    /// Replace the lines of a Pending order whose payment was not requested yet.
    Update {
        lines: Vec<OrderLineRequest>,
    },
    /// The customer's go-ahead for an order placed with manual confirmation.
    Confirm,
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
    /// Inventory released this order's hold on `sku` because it outlived its TTL.
    StockExpired {
        sku: Sku,
    },
    StockCommitted {
        sku: Sku,
    },
    StockCommitRejected {
        sku: Sku,
        reason: String,
    },
    PaymentAuthorized {
        authorization_code: String,
    },
    PaymentFailed {
        reason: String,
    },
    PaymentCaptured {
        amount: Money,
    },
    PaymentCaptureFailed {
        reason: String,
    },
    ShipmentCreated {
        carrier: String,
        tracking_number: String,
    },
    ShipmentFailed {
        reason: String,
    },
    ShipmentCancelled,
    ShipmentDispatched,
    ShipmentDelivered,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub customer_id: CustomerId,
    /// The customer's tier as the customer table knows it; `None`: unknown customer.
    pub customer_tier: Option<CustomerTier>,
    pub currency: Currency,
    pub lines: Vec<OrderLineRequest>,
    pub shipping_address: Address,
    /// Token for the (simulated) payment gateway.
    pub payment_method: String,
    pub shipping_method: Method,
    /// When true the saga waits for ConfirmOrder after reserving the stock.
    pub manual_confirmation: bool,
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
