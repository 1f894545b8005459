//! The saga's wire contract: Avro schemas (`schemas/avro/*.avsc`), the typed records that
//! mirror them, and the Confluent wire format (magic byte 0, 4-byte schema id, Avro body)
//! backed by a Confluent-compatible schema registry.
//!
//! Keys are plain UTF-8 strings (the aggregate id), readable by any `StringDeserializer`.
//! Values use TopicNameStrategy subjects (`<topic>-value`).

mod registry;
pub mod topics;
pub mod traceparent;
pub mod wire;
#[cfg(test)]
mod wire_roundtrip;

pub use registry::{AvroSerde, RegistryError, SchemaKind, WireError};
