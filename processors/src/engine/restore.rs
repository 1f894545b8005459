//! Restoring stores from their changelogs: from the local checkpoint to the end,
//! read_committed, in batches that each land with their checkpoint atomically.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use erp_state_stores::{StoreBackend, Write};

use super::EngineError;

const BATCH: usize = 1000;

/// One store partition to bring up to date.
pub(crate) struct RestoreTarget {
    pub store: String,
    pub topic: String,
    pub partition: i32,
    pub backend: Arc<dyn StoreBackend>,
}

/// Restores every target; returns the records applied per store name.
pub(crate) fn restore(
    bootstrap: &str,
    targets: &[RestoreTarget],
) -> Result<HashMap<String, u64>, EngineError> {
    let mut applied: HashMap<String, u64> = HashMap::new();
    // One consumer per changelog topic: PartitionEOF names only the partition.
    let mut topics: Vec<&str> = targets.iter().map(|t| t.topic.as_str()).collect();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let of_topic: Vec<&RestoreTarget> = targets.iter().filter(|t| t.topic == topic).collect();
        for (store, n) in restore_topic(bootstrap, topic, &of_topic)? {
            *applied.entry(store).or_default() += n;
        }
    }
    Ok(applied)
}

fn restore_topic(
    bootstrap: &str,
    topic: &str,
    targets: &[&RestoreTarget],
) -> Result<HashMap<String, u64>, EngineError> {
    let mut applied: HashMap<String, u64> = HashMap::new();
    let consumer: BaseConsumer<EofIsNotAnError> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "erp-restore-unused")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .create_with_context(EofIsNotAnError)
        .map_err(|e| EngineError::Kafka(format!("restore consumer: {e}")))?;

    let mut tpl = TopicPartitionList::new();
    // partition -> (target, offset to restore from)
    let mut pending: HashMap<i32, (&RestoreTarget, i64)> = HashMap::new();
    for t in targets {
        let (low, high) = consumer
            .fetch_watermarks(topic, t.partition, Duration::from_secs(30))
            .map_err(|e| EngineError::Kafka(format!("watermarks of {topic}: {e}")))?;
        let mut from = t.backend.checkpoint()?.unwrap_or(low);
        if from > high || from < low {
            // The changelog was recreated or truncated under us: the checkpoint means
            // nothing any more, rebuild from what the log holds.
            tracing::warn!(store = %t.store, partition = t.partition, checkpoint = from, low, high,
                "checkpoint outside the changelog; wiping the store and restoring in full");
            t.backend.wipe()?;
            from = low;
        }
        if from >= high {
            continue;
        }
        tracing::info!(store = %t.store, partition = t.partition, from, to = high, "restoring");
        tpl.add_partition_offset(topic, t.partition, Offset::Offset(from))
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
        pending.insert(t.partition, (t, from));
    }
    if pending.is_empty() {
        return Ok(applied);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| EngineError::Kafka(format!("assign {topic}: {e}")))?;

    let mut batches: HashMap<i32, Vec<Write>> = HashMap::new();
    let started = Instant::now();
    let mut last_log = Instant::now();
    while !pending.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                // End of the committed log (LSO under read_committed).
                if let Some((t, from)) = pending.remove(&p) {
                    let writes = batches.remove(&p).unwrap_or_default();
                    let next = position(&consumer, topic, p).unwrap_or(from).max(from);
                    t.backend.write_batch(&writes, Some(next))?;
                    *applied.entry(t.store.clone()).or_default() += writes.len() as u64;
                }
            }
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
            Some(Err(e)) => return Err(EngineError::Kafka(format!("restore {topic}: {e}"))),
            Some(Ok(m)) => {
                let Some((t, _)) = pending.get(&m.partition()).copied() else {
                    continue;
                };
                let batch = batches.entry(m.partition()).or_default();
                batch.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                if batch.len() >= BATCH {
                    let writes = std::mem::take(batch);
                    t.backend.write_batch(&writes, Some(m.offset() + 1))?;
                    *applied.entry(t.store.clone()).or_default() += writes.len() as u64;
                }
            }
        }
        if last_log.elapsed() > Duration::from_secs(5) {
            tracing::info!(
                topic,
                remaining = pending.len(),
                elapsed_s = started.elapsed().as_secs(),
                "restore in progress"
            );
            last_log = Instant::now();
        }
    }
    Ok(applied)
}

/// Reaching the end of a changelog is how a restore finishes, not an error to log.
struct EofIsNotAnError;

impl rdkafka::ClientContext for EofIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "restore consumer error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EofIsNotAnError {}

fn position<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Option<i64> {
    let pos = consumer.position().ok()?;
    match pos.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}
