//! Command sources: publish Avro commands to the saga's topics (a client's publisher, a
//! deterministic sample load, and a simulated carrier that dispatches and delivers).

pub mod carrier;
pub mod generator;
pub mod publisher;
pub mod sample;
pub mod sink;
pub mod source;

pub use carrier::Carrier;
pub use publisher::{CommandPublisher, PublishError};
