//! Confluent wire format over a Confluent-compatible registry (Apicurio's `ccompat` API
//! works). All calls are blocking HTTP: call them from the engine's own threads or
//! `spawn_blocking`, never from a tokio worker.

use std::collections::HashMap;
use std::sync::RwLock;

use schema_registry_converter::blocking::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::blocking::schema_registry::{SrSettings, post_schema};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The most one decoded string, byte array or collection may allocate.
pub const MAX_ALLOCATION_BYTES: usize = 16 << 20;

/// The record schemas this project owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    OrderCommand,
    OrderEvent,
    InventoryCommand,
    InventoryEvent,
    PaymentCommand,
    PaymentEvent,
    ShippingCommand,
    ShippingEvent,
    CustomerCommand,
    CustomerEvent,
    Customer,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 11] = [
        SchemaKind::OrderCommand,
        SchemaKind::OrderEvent,
        SchemaKind::InventoryCommand,
        SchemaKind::InventoryEvent,
        SchemaKind::PaymentCommand,
        SchemaKind::PaymentEvent,
        SchemaKind::ShippingCommand,
        SchemaKind::ShippingEvent,
        SchemaKind::CustomerCommand,
        SchemaKind::CustomerEvent,
        SchemaKind::Customer,
    ];

    /// The `.avsc` text, compiled in so a binary always carries the schemas it writes.
    pub fn schema_json(self) -> &'static str {
        match self {
            SchemaKind::OrderCommand => include_str!("../avro/order-command.avsc"),
            SchemaKind::OrderEvent => include_str!("../avro/order-event.avsc"),
            SchemaKind::InventoryCommand => include_str!("../avro/inventory-command.avsc"),
            SchemaKind::InventoryEvent => include_str!("../avro/inventory-event.avsc"),
            SchemaKind::PaymentCommand => include_str!("../avro/payment-command.avsc"),
            SchemaKind::PaymentEvent => include_str!("../avro/payment-event.avsc"),
            SchemaKind::ShippingCommand => include_str!("../avro/shipping-command.avsc"),
            SchemaKind::ShippingEvent => include_str!("../avro/shipping-event.avsc"),
            SchemaKind::CustomerCommand => include_str!("../avro/customer-command.avsc"),
            SchemaKind::CustomerEvent => include_str!("../avro/customer-event.avsc"),
            SchemaKind::Customer => include_str!("../avro/customer.avsc"),
        }
    }

    pub fn full_name(self) -> &'static str {
        match self {
            SchemaKind::OrderCommand => "erp.order.OrderCommand",
            SchemaKind::OrderEvent => "erp.order.OrderEvent",
            SchemaKind::InventoryCommand => "erp.inventory.InventoryCommand",
            SchemaKind::InventoryEvent => "erp.inventory.InventoryEvent",
            SchemaKind::PaymentCommand => "erp.payment.PaymentCommand",
            SchemaKind::PaymentEvent => "erp.payment.PaymentEvent",
            SchemaKind::ShippingCommand => "erp.shipping.ShippingCommand",
            SchemaKind::ShippingEvent => "erp.shipping.ShippingEvent",
            SchemaKind::CustomerCommand => "erp.customer.CustomerCommand",
            SchemaKind::CustomerEvent => "erp.customer.CustomerEvent",
            SchemaKind::Customer => "erp.customer.Customer",
        }
    }

    fn supplied(self) -> SuppliedSchema {
        SuppliedSchema::new(
            Some(self.full_name().to_string()),
            SchemaType::Avro,
            self.schema_json().to_string(),
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry at {url} is unreachable or refused the request: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("schema registry rejected subject {subject}: {reason}")]
    Rejected { subject: String, reason: String },
}

/// Why a value could not be read or written. `Malformed`, `UnknownSchema` and `Mismatch`
/// are the record's fault (dead-letter it); `Registry` may heal (retry later).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("malformed value: {0}")]
    Malformed(String),
    #[error("unknown schema id {id}: {reason}")]
    UnknownSchema { id: u32, reason: String },
    #[error("value does not match the expected record {expected}: {reason}")]
    Mismatch {
        expected: &'static str,
        reason: String,
    },
    #[error("schema registry error: {0}")]
    Registry(String),
}

impl WireError {
    /// True when the same bytes may decode later (registry down); false for poison.
    pub fn is_retriable(&self) -> bool {
        matches!(self, WireError::Registry(_))
    }

    /// A short machine-friendly class, used in DLQ headers and metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            WireError::Malformed(_) => "malformed",
            WireError::UnknownSchema { .. } => "unknown_schema",
            WireError::Mismatch { .. } => "schema_mismatch",
            WireError::Registry(_) => "registry",
        }
    }
}

/// The registry has no schema under the record's id (as opposed to bytes that do not
/// match the schema it has: "Could not transform bytes using schema" is malformed data).
fn is_schema_lookup_failure(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("schema registry")
        || r.contains("404")
        || r.contains("not found")
        || r.contains("raw schema")
}

fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(c) => format!("{}: {c}", e.error),
        None => e.error.clone(),
    }
}

/// Encoder and decoder of the Confluent wire format, caching schemas by subject and id.
pub struct AvroSerde {
    url: String,
    settings: SrSettings,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    /// Subject strategies by topic, so the encoder's cache key stays stable.
    strategies: RwLock<HashMap<String, SubjectNameStrategy>>,
}

impl AvroSerde {
    /// `url` is the Confluent-compatible base, e.g. `http://127.0.0.1:8081/apis/ccompat/v7`.
    pub fn new(url: &str) -> Self {
        // A crafted length prefix must not make the decoder allocate apache-avro's default
        // 512 MiB: no record of ours comes near 16 MiB (Kafka's default limit is 1 MiB).
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        let settings = SrSettings::new(url.to_string());
        Self {
            url: url.to_string(),
            encoder: AvroEncoder::new(settings.clone()),
            decoder: AvroDecoder::new(settings.clone()),
            settings,
            strategies: RwLock::new(HashMap::new()),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Registers `kind` under `<topic>-value` (idempotent) and returns its schema id.
    pub fn register(&self, topic: &str, kind: SchemaKind) -> Result<u32, RegistryError> {
        let subject = format!("{topic}-value");
        let registered =
            post_schema(&self.settings, subject.clone(), kind.supplied()).map_err(|e| {
                if e.retriable {
                    RegistryError::Unavailable {
                        url: self.url.clone(),
                        reason: describe(&e),
                    }
                } else {
                    RegistryError::Rejected {
                        subject: subject.clone(),
                        reason: describe(&e),
                    }
                }
            })?;
        tracing::info!(subject = %subject, schema_id = registered.id, "schema registered");
        Ok(registered.id)
    }

    /// Writes `value` as `kind` for `topic` in the Confluent wire format.
    pub fn encode<T: Serialize>(
        &self,
        topic: &str,
        kind: SchemaKind,
        value: &T,
    ) -> Result<Vec<u8>, WireError> {
        let strategy = {
            let read = self.strategies.read().expect("strategy cache poisoned");
            read.get(topic).cloned()
        };
        let strategy = match strategy {
            Some(s) => s,
            None => {
                let s = SubjectNameStrategy::TopicNameStrategyWithSchema(
                    topic.to_string(),
                    false,
                    kind.supplied(),
                );
                self.strategies
                    .write()
                    .expect("strategy cache poisoned")
                    .insert(topic.to_string(), s.clone());
                s
            }
        };
        self.encoder.encode_struct(value, &strategy).map_err(|e| {
            if e.retriable {
                WireError::Registry(describe(&e))
            } else {
                WireError::Mismatch {
                    expected: kind.full_name(),
                    reason: describe(&e),
                }
            }
        })
    }

    /// Reads a Confluent wire-format value into `T`. The writer's schema comes from the
    /// registry by the id in the value, so values written with an older or newer
    /// compatible schema decode too.
    pub fn decode<T: DeserializeOwned>(
        &self,
        expected: SchemaKind,
        bytes: &[u8],
    ) -> Result<T, WireError> {
        let id = schema_id(bytes)?;
        let decoded = self.decoder.decode(Some(bytes)).map_err(|e| {
            let reason = describe(&e);
            if e.retriable {
                WireError::Registry(reason)
            } else if is_schema_lookup_failure(&reason) {
                WireError::UnknownSchema { id, reason }
            } else {
                WireError::Malformed(reason)
            }
        })?;
        if let Some(name) = &decoded.name
            && name.fullname(None) != expected.full_name()
        {
            return Err(WireError::Mismatch {
                expected: expected.full_name(),
                reason: format!("value was written as {}", name.fullname(None)),
            });
        }
        apache_avro::from_value::<T>(&decoded.value).map_err(|e| WireError::Mismatch {
            expected: expected.full_name(),
            reason: e.to_string(),
        })
    }
}

impl AvroSerde {
    /// Any Confluent wire-format value as JSON, with its schema id and record name: for
    /// operators' tools, which read whatever a topic holds.
    pub fn decode_json(
        &self,
        bytes: &[u8],
    ) -> Result<(u32, Option<String>, serde_json::Value), WireError> {
        let id = schema_id(bytes)?;
        let decoded = self.decoder.decode(Some(bytes)).map_err(|e| {
            let reason = describe(&e);
            if e.retriable {
                WireError::Registry(reason)
            } else if is_schema_lookup_failure(&reason) {
                WireError::UnknownSchema { id, reason }
            } else {
                WireError::Malformed(reason)
            }
        })?;
        let name = decoded.name.as_ref().map(|n| n.fullname(None));
        let json = serde_json::Value::try_from(decoded.value)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok((id, name, json))
    }
}

/// The schema id of a Confluent wire-format value, or why it is not one.
pub fn schema_id(bytes: &[u8]) -> Result<u32, WireError> {
    match bytes {
        [] => Err(WireError::Malformed("empty value".into())),
        [m, ..] if *m != 0 => Err(WireError::Malformed(format!(
            "magic byte is {m:#04x}, expected 0x00 (Confluent wire format)"
        ))),
        [_, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(WireError::Malformed(format!(
            "value of {} bytes is shorter than the 5-byte wire-format header",
            bytes.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses_as_avro() {
        for kind in SchemaKind::ALL {
            let schema = apache_avro::Schema::parse_str(kind.schema_json())
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            match schema {
                apache_avro::Schema::Record(r) => {
                    assert_eq!(r.name.fullname(None), kind.full_name())
                }
                other => panic!("{kind:?} is not a record: {other:?}"),
            }
        }
    }

    #[test]
    fn schema_id_reads_the_header_and_refuses_garbage() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 7, 42]).unwrap(), 263);
        assert!(matches!(schema_id(&[]), Err(WireError::Malformed(_))));
        assert!(matches!(
            schema_id(&[1, 0, 0, 0, 1]),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            schema_id(&[0, 0, 1]),
            Err(WireError::Malformed(_))
        ));
    }
}
