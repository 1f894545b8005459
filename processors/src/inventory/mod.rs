//! The inventory context: stock per product, reservations for orders, restocks.
//! Invariant: 0 ≤ reserved ≤ on_hand, so available = on_hand − reserved is never
//! negative and stock is never oversold.

pub mod command;
pub mod decider;
pub mod event;
pub mod processor;

pub use command::InventoryCommand;
pub use decider::{Product, Rejection, decide, evolve};
pub use event::InventoryEvent;
