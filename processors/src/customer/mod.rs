//! The customer context: registration, contact updates, and a loyalty rule that promotes
//! the tier from the lifetime spend of completed orders (reported by the order saga).
//! Its table topic feeds the order processor's pricing (tier) and customer check.

pub mod command;
pub mod decider;
pub mod event;
pub mod processor;

pub use command::CustomerCommand;
pub use decider::{Customer, Rejection, decide, evolve, tier_for_spend};
pub use event::CustomerEvent;
