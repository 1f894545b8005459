//! The customer context (domain only so far; the processor and its wiring into order
//! pricing come next): registration, contact updates, and a loyalty rule that promotes
//! the tier from the lifetime spend of completed orders.

pub mod command;
pub mod decider;
pub mod event;

pub use command::CustomerCommand;
pub use decider::{Customer, Rejection, decide, evolve, tier_for_spend};
pub use event::CustomerEvent;
