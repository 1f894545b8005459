//! The inventory context: stock per product and warehouse, reservations for orders,
//! sales (commits), returns, restocks and stock-taking corrections.
//! Invariant, per warehouse: 0 ≤ reserved ≤ on_hand, so available = on_hand − reserved
//! is never negative and stock is never oversold.

pub mod command;
pub mod decider;
pub mod event;
pub mod processor;

pub use command::InventoryCommand;
pub use decider::{Hold, Product, Rejection, WarehouseStock, allocate, decide, evolve};
pub use event::InventoryEvent;
