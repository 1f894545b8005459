use serde::{Deserialize, Serialize};

use crate::order::pricing::CustomerTier;
use crate::values::{Address, Email, Money, OrderId, PhoneNumber};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CustomerEvent {
    Registered {
        name: String,
        email: Email,
        phone: Option<PhoneNumber>,
        address: Address,
    },
    Updated {
        email: Option<Email>,
        phone: Option<PhoneNumber>,
        addresses: Option<Vec<Address>>,
    },
    SpendRecorded {
        order_id: OrderId,
        total: Money,
    },
    TierPromoted {
        from: CustomerTier,
        to: CustomerTier,
    },
}
