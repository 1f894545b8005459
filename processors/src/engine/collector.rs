//! The transactional producer's side: sending records and tracking deliveries (the
//! changelog offsets that become store checkpoints after a commit).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header as KHeader, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use erp_state_stores::ChangelogCollector;

use super::processor::Header;

#[derive(Default)]
struct Deliveries {
    /// Highest delivered offset per changelog partition in the open transaction.
    changelog: HashMap<(String, i32), i64>,
    errors: Vec<String>,
}

/// Producer context recording delivery reports.
#[derive(Default)]
pub(crate) struct DeliveryTracker {
    deliveries: Mutex<Deliveries>,
}

impl DeliveryTracker {
    /// Drains what was delivered since the last call (one transaction's worth).
    pub(crate) fn take(&self) -> (HashMap<(String, i32), i64>, Vec<String>) {
        let mut d = self.deliveries.lock().expect("poisoned");
        (
            std::mem::take(&mut d.changelog),
            std::mem::take(&mut d.errors),
        )
    }
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut d = self.deliveries.lock().expect("poisoned");
        match result {
            Ok(m) if m.topic().ends_with("-changelog") => {
                let slot = d
                    .changelog
                    .entry((m.topic().to_string(), m.partition()))
                    .or_insert(-1);
                *slot = (*slot).max(m.offset());
            }
            Ok(_) => {}
            Err((e, m)) => d
                .errors
                .push(format!("{}[{}]: {e}", m.topic(), m.partition())),
        }
    }
}

pub(crate) type TxProducer = BaseProducer<DeliveryTracker>;

/// Sends records through the transactional producer, waiting out a full queue. Clones
/// (one per store's changelog layer) share the producer, so replacing it once replaces
/// it for all.
#[derive(Clone)]
pub(crate) struct RecordCollector {
    producer: Arc<RwLock<Arc<TxProducer>>>,
}

impl RecordCollector {
    pub(crate) fn new(producer: Arc<TxProducer>) -> Self {
        Self {
            producer: Arc::new(RwLock::new(producer)),
        }
    }

    /// From now on, every clone sends through `producer`.
    pub(crate) fn replace(&self, producer: Arc<TxProducer>) {
        *self.producer.write().expect("collector lock poisoned") = producer;
    }

    pub(crate) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: &[Header],
        timestamp: Option<i64>,
    ) -> Result<(), String> {
        let mut record: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        if !headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(headers.len());
            for (k, v) in headers {
                h = h.insert(KHeader {
                    key: k,
                    value: Some(v),
                });
            }
            record = record.headers(h);
        }
        let producer = self
            .producer
            .read()
            .expect("collector lock poisoned")
            .clone();
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(format!("produce to {topic}: {e}")),
            }
        }
    }
}

impl ChangelogCollector for RecordCollector {
    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        RecordCollector::send(self, topic, Some(partition), key, value, &[], None)
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<RecordCollector>();
    is::<Arc<TxProducer>>();
    let _ = |p: &TxProducer| p.in_flight_count();
}
