//! Command sources: publish Avro commands to the saga's topics.

pub mod publisher;
pub mod sample;

pub use publisher::{CommandPublisher, PublishError};
