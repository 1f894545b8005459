//! Restoring stores from their changelogs: from the local checkpoint to the end,
//! read_committed, in batches that each land with their checkpoint atomically, with
//! progress as log lines (with %), a Prometheus gauge and, on a terminal, a bar.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use erp_state_stores::{StoreBackend, Write};

use super::EngineError;
use super::metrics::EngineMetrics;

const BATCH: usize = 1000;

/// One store partition to bring up to date.
pub(crate) struct RestoreTarget {
    pub store: String,
    pub topic: String,
    pub partition: i32,
    pub backend: Arc<dyn StoreBackend>,
}

/// A target with its range to read.
struct Planned<'a> {
    target: &'a RestoreTarget,
    from: i64,
    to: i64,
}

/// Counts restored records against the planned total and reports progress.
struct Progress<'a> {
    application_id: &'a str,
    total: u64,
    done: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<ProgressBar>,
    metrics: &'a EngineMetrics,
}

impl<'a> Progress<'a> {
    fn new(application_id: &'a str, total: u64, metrics: &'a EngineMetrics) -> Self {
        let bar = (total > 0 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(format!("restoring {application_id}"));
            bar
        });
        metrics
            .restore_remaining
            .with_label_values(&[application_id])
            .set(total as i64);
        Self {
            application_id,
            total,
            done: 0,
            started: Instant::now(),
            last_log: Instant::now(),
            bar,
            metrics,
        }
    }

    /// Offsets advanced (records or markers) since the last call.
    fn advance(&mut self, n: u64) {
        self.done = (self.done + n).min(self.total);
        let remaining = self.total - self.done;
        self.metrics
            .restore_remaining
            .with_label_values(&[self.application_id])
            .set(remaining as i64);
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
        if self.last_log.elapsed() >= Duration::from_secs(2) {
            self.last_log = Instant::now();
            let pct = 100.0 * self.done as f64 / self.total.max(1) as f64;
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            tracing::info!(
                application_id = self.application_id,
                progress = format!("{pct:.1}%"),
                restored = self.done,
                total = self.total,
                rate_per_s = rate as u64,
                "restore in progress"
            );
        }
    }

    fn finish(self) {
        self.metrics
            .restore_remaining
            .with_label_values(&[self.application_id])
            .set(0);
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
        if self.total > 0 {
            tracing::info!(
                application_id = self.application_id,
                progress = "100%",
                offsets = self.total,
                elapsed_ms = self.started.elapsed().as_millis() as u64,
                "restore complete"
            );
        }
    }
}

/// Restores every target; returns the records applied per store name.
pub(crate) fn restore(
    bootstrap: &str,
    application_id: &str,
    targets: &[RestoreTarget],
    metrics: &EngineMetrics,
) -> Result<HashMap<String, u64>, EngineError> {
    let probe: BaseConsumer<EofIsNotAnError> = restore_consumer(bootstrap)?;
    let mut plan: Vec<Planned<'_>> = Vec::new();
    for t in targets {
        let (low, high) = watermarks(&probe, &t.topic, t.partition)?;
        let mut from = t.backend.checkpoint()?.unwrap_or(low);
        if from > high || from < low {
            // The changelog was recreated or truncated under us: the checkpoint means
            // nothing any more, rebuild from what the log holds.
            tracing::warn!(store = %t.store, partition = t.partition, checkpoint = from, low, high,
                "checkpoint outside the changelog; wiping the store and restoring in full");
            t.backend.wipe()?;
            from = low;
        }
        if from < high {
            tracing::info!(store = %t.store, partition = t.partition, from, to = high, "restoring");
            plan.push(Planned {
                target: t,
                from,
                to: high,
            });
        }
    }
    let total: u64 = plan.iter().map(|p| (p.to - p.from) as u64).sum();
    let mut progress = Progress::new(application_id, total, metrics);
    let mut applied: HashMap<String, u64> = HashMap::new();
    // One consumer per changelog topic: PartitionEOF names only the partition.
    let mut topics: Vec<&str> = plan.iter().map(|p| p.target.topic.as_str()).collect();
    topics.sort();
    topics.dedup();
    for topic in topics {
        let of_topic: Vec<&Planned<'_>> = plan.iter().filter(|p| p.target.topic == topic).collect();
        for (store, n) in restore_topic(bootstrap, topic, &of_topic, &mut progress)? {
            *applied.entry(store).or_default() += n;
        }
    }
    progress.finish();
    Ok(applied)
}

/// The partition's low and high watermarks. Right after topics are created or leaders
/// move, the broker answers "not leader" or "unknown partition" for a moment: retry
/// those for up to 30 s rather than failing the assignment.
pub(crate) fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), EngineError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(topic, partition, error = %e, "watermarks unavailable; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(EngineError::Kafka(format!(
                    "watermarks of {topic}[{partition}]: {e}"
                )));
            }
        }
    }
}

pub(crate) const RESTORE_GROUP: &str = "erp-restore-unused";

pub(crate) fn restore_consumer(
    bootstrap: &str,
) -> Result<BaseConsumer<EofIsNotAnError>, EngineError> {
    erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", RESTORE_GROUP)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        // An up-to-date changelog answers with an empty fetch: do not let the broker
        // hold it for the default 500 ms before saying so.
        .set("fetch.wait.max.ms", "10")
        .create_with_context(EofIsNotAnError)
        .map_err(|e| EngineError::Kafka(format!("restore consumer: {e}")))
}

fn restore_topic(
    bootstrap: &str,
    topic: &str,
    plan: &[&Planned<'_>],
    progress: &mut Progress<'_>,
) -> Result<HashMap<String, u64>, EngineError> {
    let mut applied: HashMap<String, u64> = HashMap::new();
    let consumer = restore_consumer(bootstrap)?;
    let mut tpl = TopicPartitionList::new();
    // partition -> (plan, next offset expected)
    let mut pending: HashMap<i32, (&Planned<'_>, i64)> = HashMap::new();
    for p in plan {
        tpl.add_partition_offset(topic, p.target.partition, Offset::Offset(p.from))
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
        pending.insert(p.target.partition, (p, p.from));
    }
    consumer
        .assign(&tpl)
        .map_err(|e| EngineError::Kafka(format!("assign {topic}: {e}")))?;

    let mut batches: HashMap<i32, Vec<Write>> = HashMap::new();
    while !pending.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // End of the committed log (the last stable offset under read_committed).
                if let Some((p, next)) = pending.remove(&partition) {
                    let writes = batches.remove(&partition).unwrap_or_default();
                    let at = position(&consumer, topic, partition)
                        .unwrap_or(next)
                        .max(next);
                    p.target.backend.write_batch(&writes, Some(at))?;
                    *applied.entry(p.target.store.clone()).or_default() += writes.len() as u64;
                    progress.advance((p.to - next).max(0) as u64);
                }
            }
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {}
            Some(Err(e)) if transient(&e) => {
                tracing::warn!(error = %e, topic, "restore: broker unreachable for now; librdkafka retries")
            }
            Some(Err(e)) => return Err(EngineError::Kafka(format!("restore {topic}: {e}"))),
            Some(Ok(m)) => {
                let Some((p, next)) = pending.get_mut(&m.partition()) else {
                    continue;
                };
                // Offsets skipped (transaction markers, aborted records) count as progress.
                progress.advance((m.offset() + 1 - *next).max(0) as u64);
                *next = m.offset() + 1;
                let batch = batches.entry(m.partition()).or_default();
                batch.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().map(<[u8]>::to_vec),
                ));
                if batch.len() >= BATCH {
                    let writes = std::mem::take(batch);
                    p.target.backend.write_batch(&writes, Some(*next))?;
                    *applied.entry(p.target.store.clone()).or_default() += writes.len() as u64;
                }
            }
        }
    }
    Ok(applied)
}

/// Reaching the end of a changelog is how a restore finishes, not an error to log.
pub(crate) struct EofIsNotAnError;

impl rdkafka::ClientContext for EofIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "restore consumer error");
        }
    }
}

impl ConsumerContext for EofIsNotAnError {}

fn position<C: ConsumerContext>(
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

/// Committed changelog records one poll burst brings (up to 1000 per partition),
/// grouped by (topic, partition) with the offset to checkpoint after them: how standby
/// replicas and global stores follow their topics.
pub(crate) type Burst = HashMap<(String, i32), (Vec<Write>, i64)>;

pub(crate) fn poll_burst<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
) -> Result<Burst, EngineError> {
    let mut batches: Burst = HashMap::new();
    let mut next = consumer.poll(Duration::from_millis(200));
    while let Some(msg) = next {
        let m = match msg {
            Ok(m) => m,
            // A broker away: the global and standby tails poll on (librdkafka fails
            // over); a chaos run saw the global-store thread stop the process here.
            Err(e) if transient(&e) => {
                tracing::warn!(error = %e, "changelog consumer: broker away; polling on");
                break;
            }
            Err(e) => return Err(EngineError::Kafka(format!("changelog consumer: {e}"))),
        };
        let entry = batches
            .entry((m.topic().to_string(), m.partition()))
            .or_default();
        entry.0.push((
            m.key().unwrap_or_default().to_vec(),
            m.payload().map(<[u8]>::to_vec),
        ));
        entry.1 = m.offset() + 1;
        if entry.0.len() >= BATCH {
            break;
        }
        next = consumer.poll(Duration::ZERO);
    }
    Ok(batches)
}

/// Journal records of `topic[partition]` from `from` (or the start) to the committed
/// end, decoded, in log order. Undecodable records fail loudly: a journal we cannot read
/// cannot be followed.
pub(crate) fn read_journal(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    from: Option<i64>,
) -> Result<Vec<Vec<super::journal::JournalEntry>>, EngineError> {
    let consumer = restore_consumer(bootstrap)?;
    let (low, high) = watermarks(&consumer, topic, partition)?;
    let start = from.unwrap_or(low).max(low);
    let mut out = Vec::new();
    if start >= high {
        return Ok(out);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(|e| EngineError::Kafka(e.to_string()))?;
    consumer
        .assign(&tpl)
        .map_err(|e| EngineError::Kafka(format!("assign {topic}: {e}")))?;
    // However long the journal, give up only when it stops coming.
    let mut last_progress = Instant::now();
    loop {
        if last_progress.elapsed() > Duration::from_secs(60) {
            return Err(EngineError::Kafka(format!(
                "reading the journal {topic}[{partition}]: nothing for 60 s"
            )));
        }
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                break;
            }
            Some(Err(e)) if transient(&e) => {
                tracing::warn!(error = %e, topic, "journal: broker unreachable for now; librdkafka retries")
            }
            Some(Err(e)) => return Err(EngineError::Kafka(format!("journal {topic}: {e}"))),
            Some(Ok(m)) => {
                last_progress = Instant::now();
                if let Some(bytes) = m.payload() {
                    out.push(super::journal::decode(bytes).map_err(|e| {
                        EngineError::Config(format!("{topic}[{partition}]@{}: {e}", m.offset()))
                    })?);
                }
                if m.offset() + 1 >= high {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Errors a consumer reports while one broker is away (killed, restarting, moving
/// leadership); librdkafka reconnects and fails over by itself, so a reader logs them and
/// keeps polling instead of failing the stream thread.
pub(crate) fn transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
        )
    )
}
