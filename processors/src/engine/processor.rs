use std::collections::BTreeMap;
use std::sync::Arc;

use erp_state_stores::{KeyValueStore, StoreError};

use super::global::{GlobalStoreSpec, GlobalStores};
use super::journal::ReadLog;

/// A header as it travels on Kafka.
pub type Header = (String, Vec<u8>);

/// One consumed record, borrowed from the consumer.
#[derive(Debug)]
pub struct InputRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp (ms). Domain time comes from here, never from the wall clock.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<Header>,
}

impl<'a> InputRecord<'a> {
    /// A consumed Kafka message as the processor sees it (headers copied out).
    pub(crate) fn from_message<M: rdkafka::message::Message>(m: &'a M) -> Self {
        use rdkafka::message::Headers;
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis().unwrap_or(0),
            key: m.key(),
            value: m.payload(),
            headers,
        }
    }
}

/// One record to produce inside the current transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRecord {
    pub topic: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub timestamp: i64,
    pub headers: Vec<Header>,
}

/// Why a record could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The record itself is bad (undecodable, wrong schema): dead-letter it, go on.
    #[error("poison record ({class}): {reason}")]
    Poison { class: &'static str, reason: String },
    /// Something outside may heal (registry down): abort, rewind, retry later.
    #[error("transient failure: {0}")]
    Transient(String),
    /// A defect (e.g. our own record does not fit our schema): stop this thread.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The local state is broken: stop this thread.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stores and output buffer a processor works with while handling one record.
pub struct ProcessorContext<'a> {
    pub partition: i32,
    pub(crate) stores: &'a mut BTreeMap<String, Box<dyn KeyValueStore>>,
    pub(crate) outputs: &'a mut Vec<OutputRecord>,
    pub(crate) globals: &'a GlobalStores,
    /// Where global reads are journaled (and, while replaying, served from).
    pub(crate) reads: Option<&'a mut ReadLog>,
}

impl<'a> ProcessorContext<'a> {
    pub fn new(
        partition: i32,
        stores: &'a mut BTreeMap<String, Box<dyn KeyValueStore>>,
        outputs: &'a mut Vec<OutputRecord>,
        globals: &'a GlobalStores,
    ) -> Self {
        Self {
            partition,
            stores,
            outputs,
            globals,
            reads: None,
        }
    }

    /// Journals this record's global reads in `log` (and serves scripted ones from it).
    pub(crate) fn with_reads(mut self, log: &'a mut ReadLog) -> Self {
        self.reads = Some(log);
        self
    }

    /// Reads `key` from the global store `name` (read-only: its topic is its only writer).
    pub fn global(&mut self, name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, ProcessError> {
        let Some(log) = self.reads.as_deref_mut() else {
            return Ok(self.globals.get(name, key)?);
        };
        let value = match log.take_scripted(name, key) {
            Some(v) => v,
            None => self.globals.get(name, key)?,
        };
        log.record(name, key, value.as_deref());
        Ok(value)
    }

    /// The task's store called `name`. Panics on a name the topology did not declare:
    /// that is a programming error, caught by the first test that touches it.
    pub fn store(&mut self, name: &str) -> &mut dyn KeyValueStore {
        self.stores
            .get_mut(name)
            .unwrap_or_else(|| panic!("store {name} is not declared by the topology"))
            .as_mut()
    }

    /// Queues `record` for the current transaction.
    pub fn forward(&mut self, record: OutputRecord) {
        self.outputs.push(record);
    }
}

/// What drives a punctuation: the wall clock, or the task's stream time (the largest
/// record timestamp it has seen), as in Kafka Streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PunctuationType {
    WallClockTime,
    StreamTime,
}

/// A processor: a thin adapter from records to a bounded context's decider.
pub trait Processor: Send {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError>;

    /// Timers of this processor's task: each fires `punctuate` at most once per
    /// interval. Its outputs and store writes join the open transaction.
    fn punctuations(&self) -> Vec<(PunctuationType, std::time::Duration)> {
        Vec::new()
    }

    /// Called when a timer fires; `timestamp` is wall-clock or stream time (ms).
    fn punctuate(
        &mut self,
        _ctx: &mut ProcessorContext<'_>,
        _kind: PunctuationType,
        _timestamp: i64,
    ) -> Result<(), ProcessError> {
        Ok(())
    }

    /// What this processor sent is gone — the open transaction was aborted, or a
    /// punctuation's outputs were dropped (a task rebuilding after a replay sends
    /// nothing) — and in-memory notes about it must be forgotten.
    fn aborted(&mut self) {}
}

/// Runs `process`, turning a panic into a poison record: a processor bug triggered by
/// one record (say, arithmetic on absurd input) must not stop the partition forever,
/// which is what an unwinding stream thread would do (the record is never committed,
/// so every restart would meet it again).
pub(crate) fn process_guarded(
    processor: &mut dyn Processor,
    ctx: &mut ProcessorContext<'_>,
    record: &InputRecord<'_>,
) -> Result<(), ProcessError> {
    // W3C trace context: the record's span (on every log line it causes) and the
    // traceparent of everything it makes the processor write.
    let trace = super::trace::RecordTrace::of(record);
    let _span = trace.span(record).entered();
    let before = ctx.outputs.len();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        processor.process(ctx, record)
    })) {
        Ok(result) => {
            if result.is_ok() {
                super::trace::stamp(&mut ctx.outputs[before..], &trace);
            }
            result
        }
        Err(panic) => {
            let reason = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(topic = record.topic, partition = record.partition, offset = record.offset, %reason, "processor panicked; record dead-lettered");
            Err(ProcessError::Poison {
                class: "processor_panic",
                reason,
            })
        }
    }
}

/// Runs a timer; what it writes joins the trace of each output's saga
/// (`correlation_id`), since no input record caused it.
pub(crate) fn punctuate_traced(
    processor: &mut dyn Processor,
    ctx: &mut ProcessorContext<'_>,
    kind: PunctuationType,
    time: i64,
) -> Result<(), ProcessError> {
    let before = ctx.outputs.len();
    let result = processor.punctuate(ctx, kind, time);
    if result.is_ok() {
        super::trace::stamp_punctuation(&mut ctx.outputs[before..], ctx.partition, time);
    }
    result
}

/// One timer of a task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    pub kind: PunctuationType,
    pub interval_ms: i64,
    /// Next time (wall or stream, ms) at which it fires; None until stream time starts.
    pub next_at: Option<i64>,
}

impl Schedule {
    pub(crate) fn for_processor(processor: &dyn Processor, now_ms: i64) -> Vec<Schedule> {
        processor
            .punctuations()
            .into_iter()
            .map(|(kind, every)| {
                let interval_ms = (every.as_millis() as i64).max(1);
                let next_at = match kind {
                    PunctuationType::WallClockTime => Some(now_ms + interval_ms),
                    PunctuationType::StreamTime => None,
                };
                Schedule {
                    kind,
                    interval_ms,
                    next_at,
                }
            })
            .collect()
    }

    /// True (and re-armed) if the timer of `kind` is due at `time`.
    pub(crate) fn due(&mut self, kind: PunctuationType, time: i64) -> bool {
        if self.kind != kind {
            return false;
        }
        match self.next_at {
            None => {
                // Stream time starts with the first record: fire on the next interval.
                self.next_at = Some((time / self.interval_ms + 1) * self.interval_ms);
                false
            }
            Some(at) if time >= at => {
                self.next_at = Some((time / self.interval_ms + 1) * self.interval_ms);
                true
            }
            Some(_) => false,
        }
    }
}

pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Builds the processor of one task (partition).
pub type ProcessorFactory = Arc<dyn Fn(i32) -> Box<dyn Processor> + Send + Sync>;

/// What one application reads, writes and keeps.
#[derive(Clone)]
pub struct Topology {
    /// Stable name: consumer group, transactional ids, state and changelog names derive
    /// from it. Renaming it starts from empty state.
    pub application_id: String,
    /// Co-partitioned input topics; task `p` reads partition `p` of each.
    pub source_topics: Vec<String>,
    /// Topics the processor writes (created at start-up if missing).
    pub sink_topics: Vec<String>,
    /// Store names; each gets `<application_id>-<store>-changelog`.
    pub stores: Vec<String>,
    /// Global stores: a full copy of a topic on every instance, restored before processing.
    pub global_stores: Vec<GlobalStoreSpec>,
    pub processor: ProcessorFactory,
}

impl Topology {
    pub fn dlq_topic(&self) -> String {
        format!("{}-dlq", self.application_id)
    }

    /// Whether reprocessing needs the input journal to repeat itself: several inputs
    /// (their interleaving is arrival order) or global stores (they move on their own).
    pub fn journaled(&self) -> bool {
        self.source_topics.len() > 1 || !self.global_stores.is_empty()
    }

    pub fn journal_topic(&self) -> String {
        super::journal::journal_topic(&self.application_id)
    }

    /// Topics a reset deletes: the application's changelogs (its state is rebuilt).
    /// Not the journal (the order to rebuild it in) nor the DLQ (an output).
    pub fn internal_topics(&self) -> Vec<String> {
        self.changelog_topics()
    }

    pub fn changelog_topics(&self) -> Vec<String> {
        self.stores
            .iter()
            .map(|s| erp_state_stores::changelog_topic(&self.application_id, s))
            .collect()
    }
}
