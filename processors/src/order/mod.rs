//! The order context: prices orders and orchestrates the saga. The order aggregate *is*
//! the saga state (which lines are reserved, what was compensated).

pub mod command;
pub mod decider;
pub mod event;
pub mod pricing;
pub mod processor;
pub mod saga;

pub use command::{OrderInput, OrderLineRequest, PlaceOrder};
pub use decider::{
    Order, OrderStatus, PaymentState, Rejection, ReservationState, ShipmentState, decide, evolve,
};
pub use event::{Compensation, OrderEvent};
