//! Data in and out of the saga, the way Kafka Connect users expect: commands in (a
//! client's publisher, NDJSON/CSV files with per-line errors and derived ids, an
//! open-loop synthetic load, a simulated carrier) and events out (an exactly-once
//! analytics sink into PostgreSQL).

pub mod carrier;
pub mod generator;
pub mod kafka;
pub mod publisher;
pub mod sample;
pub mod sink;
pub mod source;

pub use carrier::Carrier;
pub use publisher::{AnyCommand, CommandPublisher, PublishError};
