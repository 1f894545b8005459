use crate::values::{Address, Email, Money, OrderId, PhoneNumber};

#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    Register {
        name: String,
        email: Email,
        phone: Option<PhoneNumber>,
        address: Address,
    },
    /// Contact details; `None` fields stay as they are.
    Update {
        email: Option<Email>,
        phone: Option<PhoneNumber>,
        addresses: Option<Vec<Address>>,
    },
    /// From the order context: an order of this customer completed.
    RecordCompletedOrder { order_id: OrderId, total: Money },
}
