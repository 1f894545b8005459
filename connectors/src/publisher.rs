use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, WireError, wire};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("kafka producer: {0}")]
    Kafka(String),
    #[error("encoding: {0}")]
    Wire(#[from] WireError),
    #[error("{0} record(s) were not acknowledged by the broker")]
    Undelivered(u64),
}

#[derive(Default)]
struct Acks {
    failed: AtomicU64,
}

impl ClientContext for Acks {}
impl ProducerContext for Acks {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::error!(error = %e, "command not delivered");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A command of any bounded context.
#[derive(Debug, Clone, Copy)]
pub enum AnyCommand<'a> {
    Order(&'a wire::OrderCommand),
    Customer(&'a wire::CustomerCommand),
    Inventory(&'a wire::InventoryCommand),
    Shipping(&'a wire::ShippingCommand),
    Payment(&'a wire::PaymentCommand),
}

/// Publishes commands as a client would: idempotent producer, acks=all, keys partitioned
/// with Kafka's murmur2 like the Java clients.
pub struct CommandPublisher {
    producer: BaseProducer<Acks>,
    serde: Arc<AvroSerde>,
    topics: Topics,
}

impl CommandPublisher {
    pub fn new(
        bootstrap: &str,
        serde: Arc<AvroSerde>,
        topics: Topics,
    ) -> Result<Self, PublishError> {
        let producer = crate::kafka::client()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("partitioner", "murmur2_random")
            .create_with_context(Acks::default())
            .map_err(|e| PublishError::Kafka(e.to_string()))?;
        Ok(Self {
            producer,
            serde,
            topics,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Any command, with extra headers (a chaos run marks its bad records; the query API
    /// forwards its caller's `traceparent`). Every command carries `correlation_id` (its
    /// own id unless it names its saga's) and `command_id`.
    pub fn command(
        &self,
        command: AnyCommand<'_>,
        extra: &[(&str, &str)],
    ) -> Result<(), PublishError> {
        let t = &self.topics;
        let (topic, key, value, id, at, corr) = match command {
            AnyCommand::Order(c) => {
                let topic = t.order_commands();
                let v = self.serde.encode(&topic, SchemaKind::OrderCommand, c)?;
                (
                    topic,
                    &c.order_id,
                    v,
                    &c.command_id,
                    c.issued_at,
                    &c.correlation_id,
                )
            }
            AnyCommand::Customer(c) => {
                let topic = t.customer_commands();
                let v = self.serde.encode(&topic, SchemaKind::CustomerCommand, c)?;
                (
                    topic,
                    &c.customer_id,
                    v,
                    &c.command_id,
                    c.issued_at,
                    &c.correlation_id,
                )
            }
            AnyCommand::Inventory(c) => {
                let topic = t.inventory_commands();
                let v = self.serde.encode(&topic, SchemaKind::InventoryCommand, c)?;
                (
                    topic,
                    &c.sku,
                    v,
                    &c.command_id,
                    c.issued_at,
                    &c.correlation_id,
                )
            }
            AnyCommand::Shipping(c) => {
                let topic = t.shipping_commands();
                let v = self.serde.encode(&topic, SchemaKind::ShippingCommand, c)?;
                (
                    topic,
                    &c.order_id,
                    v,
                    &c.command_id,
                    c.issued_at,
                    &c.correlation_id,
                )
            }
            AnyCommand::Payment(c) => {
                let topic = t.payment_commands();
                let v = self.serde.encode(&topic, SchemaKind::PaymentCommand, c)?;
                (
                    topic,
                    &c.order_id,
                    v,
                    &c.command_id,
                    c.issued_at,
                    &c.correlation_id,
                )
            }
        };
        let mut headers = vec![
            ("correlation_id", corr.as_deref().unwrap_or(id)),
            ("command_id", id.as_str()),
        ];
        headers.extend_from_slice(extra);
        self.send_raw(&topic, key.as_bytes(), &value, at, &headers)
    }

    pub fn order(&self, cmd: &wire::OrderCommand) -> Result<(), PublishError> {
        self.command(AnyCommand::Order(cmd), &[])
    }

    /// The serde the publisher encodes with.
    pub fn serde(&self) -> &AvroSerde {
        &self.serde
    }

    pub fn inventory(&self, cmd: &wire::InventoryCommand) -> Result<(), PublishError> {
        self.command(AnyCommand::Inventory(cmd), &[])
    }

    pub fn customer(&self, cmd: &wire::CustomerCommand) -> Result<(), PublishError> {
        self.command(AnyCommand::Customer(cmd), &[])
    }

    pub fn shipping(&self, cmd: &wire::ShippingCommand) -> Result<(), PublishError> {
        self.command(AnyCommand::Shipping(cmd), &[])
    }

    pub fn payment(&self, cmd: &wire::PaymentCommand) -> Result<(), PublishError> {
        self.command(AnyCommand::Payment(cmd), &[])
    }

    /// Sends arbitrary bytes (tests use it for poison records).
    pub fn send_raw(
        &self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        timestamp: i64,
        headers: &[(&str, &str)],
    ) -> Result<(), PublishError> {
        self.send_record(topic, Some(key), Some(value), timestamp, headers)
    }

    /// Sends a record as it is, a null key or value included (a dead letter copies the
    /// record it stands for).
    pub fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        timestamp: i64,
        headers: &[(&str, &str)],
    ) -> Result<(), PublishError> {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic)
            .timestamp(timestamp)
            .headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.producer.poll(Duration::ZERO);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(PublishError::Kafka(e.to_string())),
            }
        }
    }

    /// Waits until every record is acknowledged.
    pub fn flush(&self) -> Result<(), PublishError> {
        self.producer
            // Long enough to ride out a broker restart (librdkafka keeps retrying).
            .flush(Duration::from_secs(180))
            .map_err(|e| PublishError::Kafka(format!("flush: {e}")))?;
        match self.producer.context().failed.swap(0, Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(PublishError::Undelivered(n)),
        }
    }
}
