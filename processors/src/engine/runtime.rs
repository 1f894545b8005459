//! The stream thread: poll, process, commit — named steps in one loop — with
//! rebalance callbacks that commit before partitions leave and restore before they
//! are processed.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use erp_state_stores::{
    ChangeLoggingStore, KeyValueStore, MeteredStore, Readiness, RocksDbBackend, StoreBackend,
    StoreMetrics, StoreRegistry, TransactionalStore,
};

use super::collector::{DeliveryTracker, RecordCollector, TxProducer};
use super::commit::TxnState;
use super::config::{EngineConfig, PoisonPolicy};
use super::dlq::dead_letter;
use super::global::{GlobalStores, start_global_stores};
use super::guard::check_stable_names;
use super::journal::{Follower, GlobalRead, JournalEntry, Positioned, ReadLog, Step};
use super::metrics::EngineMetrics;
use super::processor::{
    InputRecord, OutputRecord, ProcessError, ProcessorContext, PunctuationType, Schedule, Topology,
    process_guarded, punctuate_traced, wall_clock_ms,
};
use super::restore::{RestoreTarget, read_journal, restore};
use super::standby::{SharedStandbys, start_standbys};
use super::task::{StreamTask, TaskJournal};

/// What a replay leaves in the offset-commit metadata of an input partition, e.g.
/// `erp-replay:emit-from=120,follow`. Records before `emit-from` rebuild state but send
/// nothing (their outputs are in the log already); `follow` says the task was following
/// its journal, so a restart in the middle reads the whole journal again. Each commit
/// carries the marks forward until they no longer apply.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplayMarks {
    pub emit_from: Option<i64>,
    pub follow: bool,
}

impl ReplayMarks {
    const PREFIX: &'static str = "erp-replay:";

    pub fn parse(metadata: &str) -> Self {
        let mut marks = Self::default();
        if let Some(rest) = metadata.strip_prefix(Self::PREFIX) {
            for part in rest.split(',') {
                if part == "follow" {
                    marks.follow = true;
                } else if let Some(n) = part.strip_prefix("emit-from=") {
                    marks.emit_from = n.parse().ok();
                }
            }
        }
        marks
    }

    /// The metadata string, or None when there is nothing to say.
    pub fn encode(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(n) = self.emit_from {
            parts.push(format!("emit-from={n}"));
        }
        if self.follow {
            parts.push("follow".to_string());
        }
        (!parts.is_empty()).then(|| format!("{}{}", Self::PREFIX, parts.join(",")))
    }
}

/// A follower pauses an input holding this many records it cannot release yet, and
/// resumes it below a tenth of that.
const FOLLOWER_PAUSE_AT: usize = 5000;

/// How long a follower waits for a scripted record before it checks whether the record
/// is still in the log at all (deleted by retention, or the input was recreated).
const FOLLOWER_PATIENCE: Duration = Duration::from_secs(30);

impl Positioned for OwnedMessage {
    fn offset(&self) -> i64 {
        Message::offset(self)
    }
    fn timestamp(&self) -> i64 {
        Message::timestamp(self).to_millis().unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("configuration: {0}")]
    Config(String),
    /// The transaction must be aborted; the thread goes on.
    #[error("abortable transaction error: {0}")]
    Abortable(String),
    /// The producer can go on no more (a fatal idempotence error, a fence by the
    /// coordinator's abort of a timed-out transaction): unless the open transaction's
    /// commit was already sent, a new producer with the same transactional id takes
    /// over, which aborts the old one's transaction.
    #[error("producer failed: {0}")]
    ProducerFailed(String),
    /// Fenced or fatal: a newer producer owns this work, or the client is broken.
    #[error("fatal transaction error: {0}")]
    Fatal(String),
    #[error(transparent)]
    Store(#[from] erp_state_stores::StoreError),
}

/// Everything that lives for as long as the thread owns its partitions. Shared between
/// the loop and the rebalance callbacks (which run inside `poll`, on the same thread).
pub(crate) struct TaskManager {
    pub(crate) config: EngineConfig,
    pub(crate) topology: Topology,
    pub(crate) producer: Arc<TxProducer>,
    pub(crate) collector: RecordCollector,
    pub(crate) tasks: BTreeMap<i32, StreamTask>,
    pub(crate) txn: TxnState,
    /// Next offset to read per input partition, for records in the open transaction.
    pub(crate) consumed: HashMap<(String, i32), i64>,
    /// Last committed position per input partition: where an abort rewinds to.
    pub(crate) committed: HashMap<(String, i32), Offset>,
    pub(crate) metrics: EngineMetrics,
    store_metrics: StoreMetrics,
    registry: StoreRegistry,
    readiness: Readiness,
    /// A failure inside a rebalance callback, surfaced by the loop.
    failed: Option<EngineError>,
    globals: GlobalStores,
    standbys: SharedStandbys,
    /// Per input partition: offsets below this are reprocessed without outputs.
    pub(crate) mute: HashMap<(String, i32), i64>,
    /// Test hook (`ERP_HOLD_AFTER_RECORDS=<application-id suffix>:<N>`): once N input
    /// records are committed, the thread stops inside its next open transaction, so a
    /// test can kill the process mid-work at a known point instead of racing a fast engine.
    pub(crate) hold_after_records: Option<u64>,
    /// Test hook (`ERP_FAIL_PRODUCER_AFTER_COMMITS=<application-id suffix>:<N>`): after N
    /// commits the producer gets a fatal error (librdkafka's `rd_kafka_test_fatal_error`),
    /// once, so a test can watch the engine replace it.
    pub(crate) fail_producer_after_commits: Option<u64>,
    /// When the producer was last replaced (a bounded number of times per minute).
    pub(crate) renewals: Vec<Instant>,
}

impl TaskManager {
    pub(crate) fn tracker(&self) -> &DeliveryTracker {
        self.producer.context()
    }

    fn component(&self) -> String {
        self.topology.application_id.clone()
    }

    /// Handles one record inside the open transaction.
    fn process<C: ConsumerContext, M: Message>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &M,
        scripted: Vec<GlobalRead>,
    ) -> Result<(), EngineError> {
        let partition = msg.partition();
        if !self.tasks.contains_key(&partition) {
            // Not ours (any more): a revoked partition's buffered record.
            return Ok(());
        }
        self.ensure_open()?;
        let record = InputRecord::from_message(msg);
        // Until it is done, this record's own offset is the partition's next offset: an
        // abort from here on rewinds to (at most) it, so it is never skipped.
        let tp = (record.topic.to_string(), partition);
        self.consumed.insert(tp.clone(), record.offset);
        let started = Instant::now();
        let mut outputs: Vec<OutputRecord> = Vec::new();
        let task = self.tasks.get_mut(&partition).expect("checked above");
        for store in task.stores.values_mut() {
            store.begin_record();
        }
        let journaled = task.journal.is_some();
        let mut reads = ReadLog::scripted(scripted);
        let result = {
            let mut ctx =
                ProcessorContext::new(partition, &mut task.stores, &mut outputs, &self.globals);
            if journaled {
                ctx = ctx.with_reads(&mut reads);
            }
            process_guarded(task.processor.as_mut(), &mut ctx, &record)
        };
        let app = self.topology.application_id.clone();
        match result {
            Ok(()) => {}
            Err(ProcessError::Poison { class, reason }) => {
                // Whatever the processor produced or wrote for this record is dropped.
                outputs.clear();
                for store in self
                    .tasks
                    .get_mut(&partition)
                    .expect("owned")
                    .stores
                    .values_mut()
                {
                    store.discard_record()?;
                }
                match self.config.poison_policy {
                    PoisonPolicy::DeadLetter => {
                        tracing::warn!(topic = record.topic, partition, offset = record.offset, class, %reason,
                            "poison record sent to the dead-letter topic");
                        outputs.push(dead_letter(
                            &self.topology.dlq_topic(),
                            &app,
                            &record,
                            class,
                            &reason,
                        ));
                        self.metrics
                            .records_dead_lettered
                            .with_label_values(&[&app, class])
                            .inc();
                    }
                    PoisonPolicy::Skip => {
                        tracing::warn!(topic = record.topic, partition, offset = record.offset, class, %reason,
                            "poison record skipped");
                        self.metrics
                            .records_skipped
                            .with_label_values(&[&app, class])
                            .inc();
                    }
                    PoisonPolicy::Fail => {
                        return Err(EngineError::Fatal(format!(
                            "poison record at {}[{}]@{} ({class}): {reason}",
                            record.topic, partition, record.offset
                        )));
                    }
                }
            }
            Err(ProcessError::Transient(reason)) => {
                tracing::warn!(%reason, "transient failure; aborting and retrying after a pause");
                self.abort(consumer)?;
                std::thread::sleep(Duration::from_millis(500));
                return Ok(());
            }
            Err(ProcessError::Store(e)) => return Err(e.into()),
            Err(ProcessError::Fatal(reason)) => return Err(EngineError::Fatal(reason)),
        }
        if journaled {
            // Sent now, not at commit: the journal partition joins the transaction with
            // the outputs, so the commit waits for no extra AddPartitionsToTxn and
            // produce round trip (measured: ~35 % of a journaled engine's throughput).
            let input = self
                .topology
                .source_topics
                .iter()
                .position(|t| t == record.topic)
                .unwrap_or(0) as u8;
            let entry = JournalEntry {
                input,
                offset: record.offset,
                reads: reads.recorded,
            };
            self.collector
                .send(
                    &self.topology.journal_topic(),
                    Some(partition),
                    &[],
                    Some(&super::journal::encode(std::slice::from_ref(&entry))),
                    &[],
                    Some(wall_clock_ms()),
                )
                .map_err(EngineError::Abortable)?;
        }
        if self.mute.get(&tp).is_some_and(|m| record.offset < *m) {
            // Rebuilding state before the replay point: these outputs are in the log.
            outputs.clear();
        }
        self.send_outputs(&outputs)?;
        self.advance_stream_time(partition, record.timestamp)?;
        self.consumed.insert(tp, record.offset + 1);
        if let TxnState::Open { records, .. } = &mut self.txn {
            *records += 1;
        }
        self.metrics
            .records_processed
            .with_label_values(&[&app, record.topic])
            .inc();
        self.metrics
            .process_seconds
            .observe(started.elapsed().as_secs_f64());
        let now_ms = wall_clock_ms();
        if record.timestamp > 0 {
            self.metrics
                .end_to_end_seconds
                .with_label_values(&[&app, record.topic])
                .observe((now_ms - record.timestamp).max(0) as f64 / 1000.0);
        }
        Ok(())
    }

    fn send_outputs(&self, outputs: &[OutputRecord]) -> Result<(), EngineError> {
        for out in outputs {
            self.collector
                .send(
                    &out.topic,
                    None,
                    &out.key,
                    Some(&out.value),
                    &out.headers,
                    Some(out.timestamp),
                )
                .map_err(EngineError::Abortable)?;
        }
        Ok(())
    }

    /// Runs one timer of a task inside the open transaction.
    fn punctuate(
        &mut self,
        partition: i32,
        kind: PunctuationType,
        time: i64,
    ) -> Result<(), EngineError> {
        self.ensure_open()?;
        let task = self
            .tasks
            .get_mut(&partition)
            .expect("punctuating an owned task");
        let mut outputs = Vec::new();
        let result = {
            let mut ctx =
                ProcessorContext::new(partition, &mut task.stores, &mut outputs, &self.globals);
            punctuate_traced(task.processor.as_mut(), &mut ctx, kind, time)
        };
        let rebuilding = self.mute.keys().any(|(_, q)| *q == partition);
        match result {
            // Timers of a task still rebuilding state silently send nothing either; the
            // processor hears that what it sent is gone (else the inventory would
            // believe a dropped expiry written and never write it again).
            Ok(()) if rebuilding => {
                task.processor.aborted();
                Ok(())
            }
            Ok(()) => self.send_outputs(&outputs),
            Err(ProcessError::Transient(reason)) => Err(EngineError::Abortable(reason)),
            Err(ProcessError::Store(e)) => Err(e.into()),
            Err(e) => Err(EngineError::Fatal(format!(
                "punctuation of task {partition}: {e}"
            ))),
        }
    }

    /// A record moved the task's stream time: fire its due stream-time timers.
    fn advance_stream_time(&mut self, partition: i32, timestamp: i64) -> Result<(), EngineError> {
        let task = self.tasks.get_mut(&partition).expect("owned task");
        task.stream_time = task.stream_time.max(timestamp);
        let now = task.stream_time;
        let mut due = 0;
        for s in task.schedules.iter_mut() {
            due += usize::from(s.due(PunctuationType::StreamTime, now));
        }
        for _ in 0..due {
            self.punctuate(partition, PunctuationType::StreamTime, now)?;
        }
        Ok(())
    }

    /// Fires every wall-clock timer that is due, on every task.
    fn punctuate_wall_clock(&mut self) -> Result<(), EngineError> {
        let now = wall_clock_ms();
        let mut due = Vec::new();
        for (p, task) in self.tasks.iter_mut() {
            for s in task.schedules.iter_mut() {
                if s.due(PunctuationType::WallClockTime, now) {
                    due.push(*p);
                }
            }
        }
        for p in due {
            self.punctuate(p, PunctuationType::WallClockTime, now)?;
        }
        Ok(())
    }

    /// After an offset reset the committed positions of task `p` are behind what its
    /// journal recorded: follow the journal from there.
    fn load_follower(&mut self, p: i32, was_following: bool) -> Result<(), EngineError> {
        let topic = self.topology.journal_topic();
        let starts: Vec<i64> = self
            .topology
            .source_topics
            .iter()
            .map(|t| match self.committed.get(&(t.clone(), p)) {
                Some(Offset::Offset(o)) => *o,
                _ => 0,
            })
            .collect();
        // The last records tell the furthest positions journaled: usually already
        // committed (a plain restart), and then there is nothing to follow.
        let (low, high) = {
            let probe = super::restore::restore_consumer(&self.config.bootstrap_servers)?;
            super::restore::watermarks(&probe, &topic, p)?
        };
        if high <= low {
            return Ok(());
        }
        // Interrupted while following: the tail holds what the replay itself journaled,
        // all behind the committed positions, so only the whole journal tells.
        if !was_following {
            let tail = read_journal(
                &self.config.bootstrap_servers,
                &topic,
                p,
                Some((high - 16).max(low)),
            )?;
            let mut furthest = vec![-1i64; starts.len()];
            for e in tail.iter().flatten() {
                if let Some(f) = furthest.get_mut(e.input as usize) {
                    *f = (*f).max(e.offset);
                }
            }
            if furthest.iter().zip(&starts).all(|(f, s)| f < s) {
                return Ok(());
            }
        }
        let records = read_journal(&self.config.bootstrap_servers, &topic, p, None)?;
        let script = super::journal::script(records, &starts);
        if script.is_empty() {
            return Ok(());
        }
        tracing::info!(application_id = %self.topology.application_id, partition = p,
            records = script.len(), ?starts,
            "replay: following the input journal (same records, same order, same global reads)");
        if let Some(task) = self.tasks.get_mut(&p) {
            task.journal = Some(TaskJournal {
                follower: Some(Follower::new(script, self.topology.source_topics.len())),
                ..TaskJournal::default()
            });
        }
        Ok(())
    }

    /// Whether records of partition `p` wait in a journal follower.
    fn follows(&self, p: i32) -> bool {
        self.tasks
            .get(&p)
            .and_then(|t| t.journal.as_ref())
            .is_some_and(|j| j.follower.is_some())
    }

    fn input_index(&self, topic: &str) -> u8 {
        self.topology
            .source_topics
            .iter()
            .position(|t| t == topic)
            .unwrap_or(0) as u8
    }

    /// Hands a record to its task's follower; pauses an input it buffers too much of.
    fn buffer<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        msg: &rdkafka::message::BorrowedMessage<'_>,
    ) {
        let input = self.input_index(msg.topic());
        let (topic, p) = (msg.topic().to_string(), msg.partition());
        let Some(journal) = self.tasks.get_mut(&p).and_then(|t| t.journal.as_mut()) else {
            return;
        };
        let Some(follower) = journal.follower.as_mut() else {
            return;
        };
        follower.push(input, msg.detach());
        if follower.buffered(input) >= FOLLOWER_PAUSE_AT && journal.paused.insert(input) {
            pause(consumer, &topic, p, true);
        }
    }

    /// Processes what the followers can release, in journal order.
    fn drain_followers<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        let following: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.journal.as_ref().is_some_and(|j| j.follower.is_some()))
            .map(|(p, _)| *p)
            .collect();
        for p in following {
            while let Some(journal) = self.tasks.get_mut(&p).and_then(|t| t.journal.as_mut()) {
                let Some(follower) = journal.follower.as_mut() else {
                    break;
                };
                if follower.buffered_total() > 0 && self.txn == super::commit::TxnState::Idle {
                    // Open the transaction before a record leaves the buffer: if that
                    // fails, nothing has been taken out yet.
                    self.ensure_open()?;
                    continue;
                }
                match follower.release() {
                    Step::Process(m, reads) => {
                        journal.waiting_since = None;
                        let input = self.input_index(Message::topic(&m));
                        self.process(consumer, &m, reads)?;
                        self.resume_if_drained(consumer, p, input);
                        if self.should_commit() {
                            self.commit(consumer)?;
                        }
                    }
                    Step::Wait(input) => {
                        let since = *journal.waiting_since.get_or_insert_with(Instant::now);
                        if journal.paused.contains(&input) {
                            self.resume_if_drained(consumer, p, input);
                        }
                        if since.elapsed() > FOLLOWER_PATIENCE {
                            let Some(j) = self.tasks.get_mut(&p).and_then(|t| t.journal.as_mut())
                            else {
                                break;
                            };
                            j.waiting_since = None;
                            let Some(follower) = j.follower.as_mut() else {
                                break;
                            };
                            let awaited = follower.awaited().map_or(-1, |(_, o)| o);
                            let topic = self.topology.source_topics[input as usize].clone();
                            // Skipping a record that is still in the log would reorder the
                            // replay: only a record gone (retention, a recreated input) is
                            // skipped; a slow fetch is waited out, however long.
                            match consumer.fetch_watermarks(&topic, p, Duration::from_secs(5)) {
                                Ok((low, high)) if awaited >= low && awaited < high => {
                                    tracing::warn!(partition = p, input = %topic, offset = awaited,
                                        "replay: still waiting for the next journaled record (it is in the log)");
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(partition = p, input = %topic, error = %e,
                                        "replay: cannot tell whether the next journaled record is still in the log; waiting");
                                    break;
                                }
                                Ok((low, high)) => {
                                    tracing::warn!(partition = p, input = %topic, offset = awaited, low, high,
                                        "replay: the next journaled record is no longer in the log; skipping it");
                                    follower.skip_current();
                                    continue;
                                }
                            }
                        }
                        break;
                    }
                    Step::Idle => {
                        // Kept until the last scripted record is committed: an abort
                        // before that rewinds into the script again.
                        if follower.settled() {
                            tracing::info!(application_id = %self.topology.application_id,
                                partition = p, skipped = follower.skipped, unscripted = follower.unscripted,
                                "replay: journal followed to its end; back to live order");
                            journal.follower = None;
                            for input in std::mem::take(&mut journal.paused) {
                                let topic = self.topology.source_topics[input as usize].clone();
                                pause(consumer, &topic, p, false);
                            }
                        }
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    fn resume_if_drained<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        p: i32,
        input: u8,
    ) {
        let topic = self.topology.source_topics[input as usize].clone();
        let Some(journal) = self.tasks.get_mut(&p).and_then(|t| t.journal.as_mut()) else {
            return;
        };
        let low = journal
            .follower
            .as_ref()
            .is_none_or(|f| f.buffered(input) < FOLLOWER_PAUSE_AT / 10);
        if low && journal.paused.remove(&input) {
            pause(consumer, &topic, p, false);
        }
    }

    /// Partitions arrive: open their stores, restore them, then let records flow.
    fn on_assign<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) -> Result<(), EngineError> {
        self.readiness.set(&self.component(), false);
        let mut new_partitions: Vec<i32> = tpl
            .elements()
            .iter()
            .map(|e| e.partition())
            .filter(|p| !self.tasks.contains_key(p))
            .collect();
        new_partitions.sort();
        new_partitions.dedup();
        let app = self.topology.application_id.clone();
        // Warm replicas of these partitions become the active tasks' stores.
        self.standbys
            .lock()
            .expect("poisoned")
            .take_over(&new_partitions);
        let mut targets = Vec::new();
        let mut backends: BTreeMap<(i32, String), Arc<dyn StoreBackend>> = BTreeMap::new();
        for &p in &new_partitions {
            for store in &self.topology.stores {
                let path = self
                    .config
                    .state_dir
                    .join(&app)
                    .join(format!("{p}"))
                    .join(store);
                let backend: Arc<dyn StoreBackend> =
                    Arc::new(RocksDbBackend::open(store, &path, &self.config.rocksdb)?);
                targets.push(RestoreTarget {
                    store: store.clone(),
                    topic: erp_state_stores::changelog_topic(&app, store),
                    partition: p,
                    backend: backend.clone(),
                });
                backends.insert((p, store.clone()), backend);
            }
        }
        let started = Instant::now();
        let restored = restore(
            &self.config.bootstrap_servers,
            &app,
            &targets,
            &self.metrics,
        )?;
        for (store, n) in &restored {
            self.metrics
                .records_restored
                .with_label_values(&[&app, store])
                .inc_by(*n);
        }
        if !new_partitions.is_empty() {
            tracing::info!(application_id = %app, partitions = ?new_partitions, ?restored,
                elapsed_ms = started.elapsed().as_millis() as u64, "tasks restored");
        }
        for &p in &new_partitions {
            let mut stores: BTreeMap<String, Box<dyn KeyValueStore>> = BTreeMap::new();
            for store in &self.topology.stores {
                let backend = backends.remove(&(p, store.clone())).expect("opened above");
                self.registry.register(store, p, backend.clone());
                let layered: Box<dyn KeyValueStore> = Box::new(MeteredStore::new(
                    Box::new(ChangeLoggingStore::new(
                        Box::new(TransactionalStore::new(backend)),
                        erp_state_stores::changelog_topic(&app, store),
                        p,
                        Arc::new(self.collector.clone()),
                    )),
                    self.store_metrics.clone(),
                ));
                stores.insert(store.clone(), layered);
            }
            let processor = (self.topology.processor)(p);
            self.tasks.insert(
                p,
                StreamTask {
                    partition: p,
                    stores,
                    schedules: Schedule::for_processor(processor.as_ref(), wall_clock_ms()),
                    processor,
                    stream_time: -1,
                    journal: self.topology.journaled().then(TaskJournal::default),
                },
            );
        }
        // Where an abort rewinds to: the group's committed offsets (retried while the
        // group coordinator is still loading).
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut following = std::collections::HashSet::new();
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e, "committed offsets unavailable; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(EngineError::Kafka(format!("committed offsets: {e}"))),
            }
        };
        for e in committed.elements() {
            let at = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            let tp = (e.topic().to_string(), e.partition());
            let marks = ReplayMarks::parse(e.metadata());
            if let Some(from) = marks.emit_from {
                tracing::info!(topic = %tp.0, partition = tp.1, committed = ?at, emit_from = from,
                    "replay: records before emit-from rebuild state without outputs");
                self.mute.insert(tp.clone(), from);
            }
            if marks.follow {
                following.insert(tp.1);
            }
            self.committed.insert(tp, at);
        }
        // A pause survives revoke and re-assign in librdkafka: start unpaused.
        if let Err(e) = consumer.resume(tpl) {
            tracing::warn!(error = %e, "resume of the assigned partitions failed");
        }
        if self.topology.journaled() {
            for &p in &new_partitions {
                self.load_follower(p, following.contains(&p))?;
            }
        }
        self.metrics
            .assigned_tasks
            .with_label_values(&[&app])
            .set(self.tasks.len() as i64);
        self.readiness.set(&self.component(), true);
        Ok(())
    }

    /// Partitions leave: finish the open transaction first, then close their tasks.
    fn on_revoke<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tpl: &TopicPartitionList,
    ) -> Result<(), EngineError> {
        if let Err(e) = self.commit(consumer) {
            tracing::warn!(error = %e, "commit on revoke failed; aborting");
            self.abort(consumer)?;
        }
        let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        // A pause outlives the assignment in librdkafka: lift it before letting go.
        for p in &revoked {
            if let Some(j) = self.tasks.get_mut(p).and_then(|t| t.journal.as_mut()) {
                for input in std::mem::take(&mut j.paused) {
                    let topic = self.topology.source_topics[input as usize].clone();
                    pause(consumer, &topic, *p, false);
                }
            }
        }
        self.standbys.lock().expect("poisoned").release(&revoked);
        for p in revoked {
            if let Some(task) = self.tasks.remove(&p) {
                for store in task.stores.keys() {
                    self.registry.unregister(store, p);
                }
            }
        }
        for e in tpl.elements() {
            let tp = (e.topic().to_string(), e.partition());
            self.committed.remove(&tp);
            self.mute.remove(&tp);
        }
        self.metrics
            .assigned_tasks
            .with_label_values(&[&self.topology.application_id])
            .set(self.tasks.len() as i64);
        Ok(())
    }
}

/// Consumer context whose rebalance callbacks drive the task manager.
pub(crate) struct EngineContext {
    tasks: Arc<Mutex<TaskManager>>,
}

impl ClientContext for EngineContext {
    /// librdkafka's statistics (every few seconds): consumer lag per owned partition,
    /// and store sizes while at it.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Ok(tm) = self.tasks.try_lock() else {
            return; // busy: the next report will do
        };
        let app = tm.topology.application_id.as_str();
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if p.partition < 0 {
                    continue;
                }
                let partition = partition.to_string();
                let labels = [app, topic.as_str(), partition.as_str()];
                // Offsets are committed through the producer's transaction, so the
                // consumer's own `consumer_lag` (against offsets it committed itself) never
                // moves: lag is the last stable offset minus the next record handed to
                // the processor.
                if !tm.tasks.contains_key(&p.partition) {
                    // Revoked: another instance reports it now.
                    let _ = tm.metrics.consumer_lag.remove_label_values(&labels);
                } else if p.app_offset >= 0 && p.ls_offset >= 0 {
                    tm.metrics
                        .consumer_lag
                        .with_label_values(&labels)
                        .set((p.ls_offset - p.app_offset).max(0));
                }
            }
        }
        let mut keys: BTreeMap<&str, i64> = BTreeMap::new();
        for task in tm.tasks.values() {
            for (name, store) in &task.stores {
                *keys.entry(name).or_default() += store.backend().approximate_len() as i64;
            }
        }
        for (store, n) in keys {
            tm.metrics
                .store_keys
                .with_label_values(&[app, store])
                .set(n);
        }
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // At info: the evidence an operator (or the chaos runner) looks for after a
            // pause, a crash or a scale-out.
            tracing::info!(partitions = tpl.count(), "rebalance: partitions revoked");
            let mut tm = self.tasks.lock().expect("task manager poisoned");
            if let Err(e) = tm.on_revoke(consumer, tpl) {
                tracing::error!(error = %e, "revoke failed");
                tm.failed.get_or_insert(e);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), "rebalance: partitions assigned");
                let mut tm = self.tasks.lock().expect("task manager poisoned");
                if let Err(e) = tm.on_assign(consumer, tpl) {
                    tracing::error!(error = %e, "assignment failed");
                    tm.failed.get_or_insert(e);
                }
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// One processor's engine thread.
pub struct StreamThread {
    pub config: EngineConfig,
    pub topology: Topology,
    pub registry: StoreRegistry,
    pub readiness: Readiness,
    pub metrics: EngineMetrics,
    pub store_metrics: StoreMetrics,
    pub shutdown: Arc<AtomicBool>,
}

impl StreamThread {
    /// Runs the thread until `shutdown` is set or a fatal error occurs.
    pub fn spawn(self) -> JoinHandle<Result<(), EngineError>> {
        let name = format!("stream-{}", self.topology.application_id);
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let app = self.topology.application_id.clone();
                let shutdown = self.shutdown.clone();
                let out = self.run();
                if let Err(e) = &out {
                    tracing::error!(application_id = %app, error = %e, "stream thread stopped");
                    // Crash-only: one dead thread stops the process's other engines too.
                    shutdown.store(true, Ordering::Relaxed);
                }
                out
            })
            .expect("spawn stream thread")
    }

    fn run(self) -> Result<(), EngineError> {
        let app = self.topology.application_id.clone();
        self.readiness.set(&app, false);
        // Counters exist from the start (at 0): a dashboard shows "no aborts", not "no
        // data", and rate() sees the first increment.
        self.metrics
            .transactions_aborted
            .with_label_values(&[&app])
            .inc_by(0);
        self.metrics
            .transactions_committed
            .with_label_values(&[&app])
            .inc_by(0);
        self.metrics
            .producers_renewed
            .with_label_values(&[&app])
            .inc_by(0);
        let broker_topics = list_topics(&self.config.bootstrap_servers)?;
        check_stable_names(
            &self.config.state_dir,
            &self.topology,
            &broker_topics,
            self.config.allow_topology_change,
        )?;
        // Global stores first: processing must not start before they are complete.
        let standbys = SharedStandbys::default();
        let (globals, global_thread) = start_global_stores(
            &self.config,
            &app,
            &self.topology.global_stores,
            &self.registry,
            &self.metrics,
            self.shutdown.clone(),
        )?;
        let producer = Arc::new(transactional_producer(&self.config, &app)?);
        let tm = Arc::new(Mutex::new(TaskManager {
            config: self.config.clone(),
            topology: self.topology.clone(),
            collector: RecordCollector::new(producer.clone()),
            producer,
            tasks: BTreeMap::new(),
            txn: TxnState::Idle,
            consumed: HashMap::new(),
            committed: HashMap::new(),
            metrics: self.metrics.clone(),
            store_metrics: self.store_metrics.clone(),
            registry: self.registry.clone(),
            readiness: self.readiness.clone(),
            failed: None,
            globals,
            standbys: standbys.clone(),
            mute: HashMap::new(),
            hold_after_records: test_hook("ERP_HOLD_AFTER_RECORDS", &self.topology.application_id),
            renewals: Vec::new(),
            fail_producer_after_commits: test_hook(
                "ERP_FAIL_PRODUCER_AFTER_COMMITS",
                &self.topology.application_id,
            ),
        }));
        let standby_thread = start_standbys(
            &self.config,
            &self.topology,
            standbys,
            self.shutdown.clone(),
        );
        let consumer: BaseConsumer<EngineContext> = erp_connectors::kafka::client()
            .set("bootstrap.servers", &self.config.bootstrap_servers)
            .set("group.id", &app)
            .set("client.id", client_id(&app, &self.config))
            // Static membership: a restarted instance takes its partitions straight back
            // instead of waiting out the dead member's session.
            .set(
                "group.instance.id",
                format!("{app}-{}", self.config.instance_id),
            )
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // A fetch waiting at the broker for data is answered when data comes; this
            // bounds how long it waits when a transaction's markers make records
            // readable without new data arriving (librdkafka's default: 500 ms).
            .set("fetch.wait.max.ms", "10")
            .set(
                "session.timeout.ms",
                self.config.session_timeout.as_millis().to_string(),
            )
            .set("heartbeat.interval.ms", "1000")
            .set(
                "partition.assignment.strategy",
                assignment_strategy(&self.topology),
            )
            .set("statistics.interval.ms", "5000")
            .create_with_context(EngineContext { tasks: tm.clone() })
            .map_err(|e| EngineError::Kafka(format!("consumer: {e}")))?;
        let topics: Vec<&str> = self
            .topology
            .source_topics
            .iter()
            .map(String::as_str)
            .collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| EngineError::Kafka(format!("subscribe: {e}")))?;
        tracing::info!(application_id = %app, topics = ?topics, "stream thread started");

        let result = self.run_loop(&consumer, &tm);
        // Leave cleanly: commit what is open, then let the consumer close (which
        // revokes, and so closes, the tasks).
        {
            let mut guard = tm.lock().expect("task manager poisoned");
            if result.is_ok()
                && let Err(e) = guard.commit(&consumer)
            {
                tracing::warn!(error = %e, "final commit failed");
            }
        }
        consumer.unsubscribe();
        drop(consumer);
        self.readiness.set(&app, false);
        for t in [global_thread, standby_thread].into_iter().flatten() {
            self.shutdown.store(true, Ordering::Relaxed);
            let _ = t.join();
        }
        result
    }

    fn run_loop(
        &self,
        consumer: &BaseConsumer<EngineContext>,
        tm: &Arc<Mutex<TaskManager>>,
    ) -> Result<(), EngineError> {
        // An open transaction is committed as soon as a poll comes back empty (when
        // configured), so the wait for more records is kept short while one is open.
        let mut open = false;
        while !self.shutdown.load(Ordering::Relaxed) {
            let wait = if open && self.config.commit_when_idle {
                Duration::from_millis(1)
            } else {
                Duration::from_millis(20)
            };
            // Callbacks (rebalances) run inside poll and take the lock themselves.
            let polled = consumer.poll(wait);
            let idle = polled.is_none();
            let mut guard = tm.lock().expect("task manager poisoned");
            if let Some(e) = guard.failed.take() {
                return Err(e);
            }
            let handled = match polled {
                Some(Ok(msg)) if guard.follows(msg.partition()) => {
                    guard.buffer(consumer, &msg);
                    Ok(())
                }
                Some(Ok(msg)) => guard.process(consumer, &msg, Vec::new()),
                // A fatal consumer error (e.g. this static member fenced by a rejoin
                // with the same group.instance.id) leaves a consumer that never
                // fetches again: a chaos run saw the instance idle, holding no
                // partitions, while its twin got none either. Crash-only: stop, and
                // let the restart join afresh.
                Some(Err(rdkafka::error::KafkaError::MessageConsumptionFatal(code))) => {
                    Err(EngineError::Fatal(format!("fatal consumer error: {code}")))
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    Ok(())
                }
                None => Ok(()),
            };
            if let Err(e) = handled.and_then(|()| guard.drain_followers(consumer)) {
                guard.recover(consumer, e)?;
            }
            if let Err(e) = guard.punctuate_wall_clock() {
                guard.recover(consumer, e)?;
            }
            guard.producer.poll(Duration::ZERO);
            if guard.should_commit() || (idle && self.config.commit_when_idle) {
                guard.commit(consumer)?;
            }
            open = guard.txn != TxnState::Idle;
        }
        Ok(())
    }
}

/// This thread's transactional producer, its transactions initialised: which fences a
/// previous producer with the same transactional id (an earlier incarnation, or this
/// thread's failed one) and aborts its open transaction.
pub(crate) fn transactional_producer(
    config: &EngineConfig,
    app: &str,
) -> Result<TxProducer, EngineError> {
    let mut producer_config = erp_connectors::kafka::client();
    // librdkafka's own debug contexts (e.g. "eos,msg"), for diagnosing commits.
    if let Ok(contexts) = std::env::var("ERP_RDKAFKA_DEBUG") {
        producer_config.set("debug", contexts);
    }
    let producer: TxProducer = producer_config
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("transactional.id", format!("{app}-{}", config.instance_id))
        .set("enable.idempotence", "true")
        .set(
            "transaction.timeout.ms",
            config.transaction_timeout.as_millis().to_string(),
        )
        // Same key → same partition as Java clients (Kafka's murmur2 partitioner).
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // The next transaction's AddOffsetsToTxn often meets the previous one's
        // markers still being written (CONCURRENT_TRANSACTIONS) and is retried
        // after this backoff: librdkafka's 100 ms default made every commit cost
        // ~120 ms. (Its AddPartitionsToTxn retries after a fixed 20 ms.)
        .set("retry.backoff.ms", "1")
        .set("retry.backoff.max.ms", "5")
        .create_with_context(DeliveryTracker::default())
        .map_err(|e| EngineError::Kafka(format!("producer: {e}")))?;
    // Fences (and aborts the open transaction of) a previous incarnation.
    producer
        .init_transactions(Duration::from_secs(60))
        .map_err(|e| EngineError::Fatal(format!("init_transactions: {e}")))?;
    Ok(producer)
}

/// `<app>-<instance>`, plus `@<host:port>` of the query API when advertised: the group's
/// member list then says where each partition's stores can be queried.
pub(crate) fn client_id(app: &str, config: &EngineConfig) -> String {
    match &config.advertised_addr {
        Some(addr) => format!("{app}-{}@{addr}", config.instance_id),
        None => format!("{app}-{}", config.instance_id),
    }
}

fn list_topics(bootstrap: &str) -> Result<Vec<String>, EngineError> {
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| EngineError::Kafka(format!("metadata client: {e}")))?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| EngineError::Kafka(format!("cannot list topics on {bootstrap}: {e}")))?;
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}

/// Cooperative-sticky (incremental rebalances: partitions that stay put keep being
/// processed) where librdkafka allows it for us: a single source topic. Co-partitioned
/// sources need partition `p` of every source on the same instance, which among
/// librdkafka's assignors only the eager `range` guarantees.
fn assignment_strategy(topology: &Topology) -> &'static str {
    if topology.source_topics.len() == 1 {
        "cooperative-sticky"
    } else {
        "range"
    }
}

fn pause<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str, partition: i32, pause: bool) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let result = if pause {
        consumer.pause(&tpl)
    } else {
        consumer.resume(&tpl)
    };
    if let Err(e) = result {
        tracing::warn!(topic, partition, pause, error = %e, "pause/resume failed");
    }
}

/// Parses a test hook's variable (`<application-id suffix>:<N>`; an empty suffix means
/// every topology) for one topology.
fn test_hook(variable: &str, application_id: &str) -> Option<u64> {
    let spec = std::env::var(variable).ok()?;
    let (suffix, n) = spec.rsplit_once(':')?;
    let n = n.parse().ok()?;
    application_id.ends_with(suffix).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::ReplayMarks;

    #[test]
    fn replay_marks_round_trip_through_commit_metadata() {
        for marks in [
            ReplayMarks::default(),
            ReplayMarks {
                emit_from: Some(120),
                follow: false,
            },
            ReplayMarks {
                emit_from: None,
                follow: true,
            },
            ReplayMarks {
                emit_from: Some(7),
                follow: true,
            },
        ] {
            let encoded = marks.encode();
            assert_eq!(ReplayMarks::parse(encoded.as_deref().unwrap_or("")), marks);
        }
        assert_eq!(
            ReplayMarks {
                emit_from: Some(120),
                follow: true
            }
            .encode()
            .as_deref(),
            Some("erp-replay:emit-from=120,follow")
        );
        // Other tools' metadata (or none) means no replay.
        assert_eq!(ReplayMarks::parse(""), ReplayMarks::default());
        assert_eq!(ReplayMarks::parse("something else"), ReplayMarks::default());
    }
}
