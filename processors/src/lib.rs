//! Bounded contexts (pure `decide`/`evolve` domains), their processors, and the
//! exactly-once stream engine they run on.

pub mod acls;
mod adapter;
pub mod app;
pub mod audit;
pub mod bench;
pub mod check;
pub mod config;
pub mod customer;
pub mod engine;
pub mod inventory;
pub mod ops;
pub mod order;
pub mod payment;
pub mod routing;
pub mod shipping;
pub mod telemetry;
pub mod values;

pub use adapter::PROCESSED_STORE;
