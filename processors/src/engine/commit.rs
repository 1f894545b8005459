//! The exactly-once commit as an explicit state machine.
//!
//! ```text
//!            first record                 interval / size reached
//!   Idle ───────────────────▶ Open ────────────────────────────────▶ Committing
//!    ▲     begin_transaction    │  send offsets + commit_transaction      │
//!    │                          │ abortable error                         │ ok
//!    │                          ▼                                         ▼
//!    └──────────── Aborting (abort_transaction, drop staged writes,   stores flush
//!                   rewind consumer to the committed offsets)        (data + checkpoint
//!                                                                     in one WriteBatch)
//! ```
//! A producer that fails before the open transaction's commit was sent (fatal
//! idempotence errors; fenced by the coordinator's abort of a timed-out transaction) is
//! replaced by a new one with the same transactional id (which aborts the old one's
//! transaction), and the open transaction's work is dropped as in an abort. A failure
//! after the commit was sent (its outcome unknown), or a producer failing three times in
//! a minute, ends the thread (crash-only: the restart reads the outcome from the log).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::runtime::{EngineError, TaskManager};

/// At most this many producer renewals within `RENEWAL_WINDOW`; one more ends the thread.
const MAX_RENEWALS: usize = 3;
const RENEWAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    Idle,
    Open {
        since: Instant,
        records: usize,
        /// Its commit was sent: after a failure its outcome may be unknown.
        commit_sent: bool,
    },
}

impl TaskManager {
    /// Starts a transaction if none is open.
    pub(crate) fn ensure_open(&mut self) -> Result<(), EngineError> {
        if self.txn == TxnState::Idle {
            self.producer
                .begin_transaction()
                .map_err(|e| classify("begin", e))?;
            self.txn = TxnState::Open {
                since: Instant::now(),
                records: 0,
                commit_sent: false,
            };
        }
        Ok(())
    }

    pub(crate) fn should_commit(&self) -> bool {
        match self.txn {
            TxnState::Idle => false,
            TxnState::Open { since, records, .. } => {
                records >= self.config.max_records_per_transaction
                    || since.elapsed() >= self.config.commit_interval
            }
        }
    }

    /// Commits the open transaction: input offsets, outputs and changelogs become
    /// visible atomically; then the stores make the staged writes durable.
    pub(crate) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        if self.txn == TxnState::Idle {
            return Ok(());
        }
        if self.hold_after_records == Some(0) {
            eprintln!(
                "{}: holding an open transaction (ERP_HOLD_AFTER_RECORDS)",
                self.topology.application_id
            );
            loop {
                std::thread::park();
            }
        }
        let started = Instant::now();
        let records = match self.txn {
            TxnState::Open { records, .. } => records as u64,
            TxnState::Idle => 0,
        };
        match self.try_commit(consumer) {
            Ok(()) => {
                let kafka_done = started.elapsed();
                let (changelog, errors) = self.tracker().take();
                if !errors.is_empty() {
                    // commit_transaction succeeded, so every record was acknowledged;
                    // errors here would be from before a retry. Log, don't lose them.
                    tracing::warn!(
                        ?errors,
                        "delivery errors reported in a committed transaction"
                    );
                }
                for task in self.tasks.values_mut() {
                    for (name, store) in task.stores.iter_mut() {
                        let topic =
                            erp_state_stores::changelog_topic(&self.topology.application_id, name);
                        let checkpoint = changelog.get(&(topic, task.partition)).map(|o| o + 1);
                        store.commit(checkpoint)?;
                    }
                }
                tracing::debug!(
                    kafka_ms = kafka_done.as_millis() as u64,
                    stores_ms = (started.elapsed() - kafka_done).as_millis() as u64,
                    "transaction committed"
                );
                for (tp, next) in self.consumed.drain() {
                    if self.mute.get(&tp).is_some_and(|m| next >= *m) {
                        tracing::info!(topic = %tp.0, partition = tp.1, "replay: past emit-from, outputs resume");
                        self.mute.remove(&tp);
                    }
                    self.committed.insert(tp, Offset::Offset(next));
                }
                for task in self.tasks.values_mut() {
                    if let Some(f) = task.journal.as_mut().and_then(|j| j.follower.as_mut()) {
                        f.committed();
                    }
                }
                self.txn = TxnState::Idle;
                if let Some(left) = self.hold_after_records.as_mut() {
                    *left = left.saturating_sub(records);
                }
                self.fail_producer_if_asked();
                let app = self.topology.application_id.as_str();
                self.metrics
                    .store_memory_bytes
                    .with_label_values(&[app])
                    .set(self.config.rocksdb.cache_usage_bytes() as i64);
                self.metrics
                    .transactions_committed
                    .with_label_values(&[app])
                    .inc();
                self.metrics
                    .commit_seconds
                    .with_label_values(&[app])
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Err(e @ (EngineError::Abortable(_) | EngineError::ProducerFailed(_))) => {
                tracing::warn!(error = %e, "transaction failed; aborting and rewinding");
                self.recover(consumer, e)
            }
            Err(e) => Err(e),
        }
    }

    /// The `ERP_FAIL_PRODUCER_AFTER_COMMITS` test hook: counts commits, then raises a
    /// fatal error in the producer, as librdkafka would for a lost idempotence sequence.
    fn fail_producer_if_asked(&mut self) {
        let Some(left) = self.fail_producer_after_commits.as_mut() else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left > 0 {
            return;
        }
        self.fail_producer_after_commits = None;
        let native = self.producer.client().native_ptr();
        // SAFETY: the producer owns `native` and outlives the call.
        let err = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                native,
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                c"ERP_FAIL_PRODUCER_AFTER_COMMITS".as_ptr(),
            )
        };
        tracing::warn!(?err, "test hook: producer failed on purpose");
    }

    /// After a failed step inside the open transaction: abort it and go on, replacing
    /// the producer if it has failed. Other errors are returned.
    pub(crate) fn recover<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        error: EngineError,
    ) -> Result<(), EngineError> {
        // A changelog write is a produce like any output's: abortable.
        let error = match error {
            EngineError::Store(erp_state_stores::StoreError::Changelog { store, reason }) => {
                EngineError::Abortable(format!("changelog write of store {store}: {reason}"))
            }
            e => e,
        };
        // A produce refused because the producer failed reads as a send error: ask it.
        let error = match (error, self.producer.client().fatal_error()) {
            (
                e @ (EngineError::Abortable(_) | EngineError::ProducerFailed(_)),
                Some((code, reason)),
            ) => {
                if hopeless(code) {
                    EngineError::Fatal(format!("{e}; {code:?}: {reason}"))
                } else {
                    EngineError::ProducerFailed(format!("{e}; {code:?}: {reason}"))
                }
            }
            (e, _) => e,
        };
        match error {
            EngineError::Abortable(reason) => {
                tracing::warn!(%reason, "aborting transaction");
                self.abort(consumer)
            }
            EngineError::ProducerFailed(reason) => {
                self.renewable(&reason)?;
                tracing::warn!(%reason, "producer failed; a new one takes over");
                self.renew_producer()?;
                self.discard(consumer);
                Ok(())
            }
            e => Err(e),
        }
    }

    /// Replacing the producer and dropping the open transaction's work is right only if
    /// that transaction cannot have committed. Once its commit was sent, a failure (a
    /// timeout, then an abort refused with INVALID_TXN_STATE, as after a broker kill)
    /// leaves its outcome unknown: dropping the work of a transaction that did commit
    /// would process its records again, and a chaos run caught exactly that (an
    /// inventory event twice). Then the thread ends, and the restart reads the outcome
    /// from the log: committed offsets and changelogs.
    fn renewable(&self, reason: &str) -> Result<(), EngineError> {
        if matches!(
            self.txn,
            TxnState::Open {
                commit_sent: true,
                ..
            }
        ) {
            return Err(EngineError::Fatal(format!(
                "{reason}; the transaction's commit was sent, its outcome is unknown"
            )));
        }
        Ok(())
    }

    /// Replaces the producer: the new one's `init_transactions` fences the old one and
    /// aborts its open transaction at the coordinator (what a restarted process would
    /// do, without the restart: restoring, rejoining, rebalancing the group).
    fn renew_producer(&mut self) -> Result<(), EngineError> {
        let app = self.topology.application_id.clone();
        // Two processes with one instance id would fence each other's producers in turn:
        // a producer failing again and again ends the thread instead.
        self.renewals.retain(|at| at.elapsed() < RENEWAL_WINDOW);
        if self.renewals.len() >= MAX_RENEWALS {
            return Err(EngineError::Fatal(format!(
                "the transactional producer of {app} failed {MAX_RENEWALS} times within {RENEWAL_WINDOW:?}: is another process running with instance id {:?}?",
                self.config.instance_id
            )));
        }
        self.renewals.push(Instant::now());
        let producer = Arc::new(super::runtime::transactional_producer(&self.config, &app)?);
        // The stores' changelog layers hold clones of the collector: all switch at once.
        self.collector.replace(producer.clone());
        self.producer = producer;
        self.metrics
            .producers_renewed
            .with_label_values(&[app.as_str()])
            .inc();
        tracing::warn!(application_id = %app, "new transactional producer initialised");
        Ok(())
    }

    fn try_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        let timeout = self.config.transaction_timeout;
        let started = Instant::now();
        if !self.consumed.is_empty() {
            let mut offsets = TopicPartitionList::new();
            for ((topic, partition), next) in &self.consumed {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(*next))
                    .map_err(|e| EngineError::Kafka(e.to_string()))?;
                // Until the replay point is passed, or the journal followed to its end,
                // a restart must know.
                let marks = super::runtime::ReplayMarks {
                    emit_from: self
                        .mute
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .filter(|from| *next < *from),
                    follow: self
                        .tasks
                        .get(partition)
                        .and_then(|t| t.journal.as_ref())
                        .is_some_and(|j| j.follower.is_some()),
                };
                if let Some(metadata) = marks.encode()
                    && let Some(mut elem) = offsets.find_partition(topic, *partition)
                {
                    elem.set_metadata(metadata);
                }
            }
            let group = consumer
                .group_metadata()
                .ok_or_else(|| EngineError::Kafka("consumer has no group metadata".into()))?;
            self.producer
                .send_offsets_to_transaction(&offsets, &group, timeout)
                .map_err(|e| classify("send offsets", e))?;
        }
        let offsets_sent = started.elapsed();
        // commit_transaction first flushes, and rust-rdkafka's flush waits for delivery
        // reports in 100 ms poll slices: measured, every commit cost ~100 ms idle. Serve
        // the reports in 1 ms slices here, so that flush finds nothing in flight. Each
        // slice is librdkafka's own flush, which sends what waits in linger.ms at once
        // (a plain poll would first wait out the linger of the last batch).
        let deadline = Instant::now() + timeout;
        let native = self.producer.client().native_ptr();
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            // SAFETY: the producer owns `native` and outlives this call; flush is
            // thread-safe in librdkafka.
            unsafe { rdkafka::bindings::rd_kafka_flush(native, 1) };
            self.producer.poll(std::time::Duration::ZERO);
        }
        let flushed = started.elapsed();
        // From here on a failure may hide a commit that happened.
        if let TxnState::Open { commit_sent, .. } = &mut self.txn {
            *commit_sent = true;
        }
        let result = self
            .producer
            .commit_transaction(timeout)
            .map_err(|e| classify("commit", e));
        tracing::debug!(
            send_offsets_us = offsets_sent.as_micros() as u64,
            flush_us = (flushed - offsets_sent).as_micros() as u64,
            end_txn_us = (started.elapsed() - flushed).as_micros() as u64,
            "kafka commit"
        );
        result
    }

    /// Aborts the open transaction, drops staged store writes and rewinds every
    /// partition consumed in it to its last committed offset, so those records are
    /// processed again.
    pub(crate) fn abort<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), EngineError> {
        if self.txn == TxnState::Idle {
            return Ok(());
        }
        // abort_transaction waits for the delivery reports of everything produced in
        // the transaction, and a BaseProducer only serves them while polled: flush
        // first (those records land in the aborted transaction, invisible to
        // read_committed consumers).
        if let Err(e) = self.producer.flush(self.config.transaction_timeout) {
            tracing::warn!(error = %e, "flush before abort failed");
        }
        match self
            .producer
            .abort_transaction(self.config.transaction_timeout)
            .map_err(|e| classify("abort", e))
        {
            Ok(()) => {}
            Err(e @ EngineError::Fatal(_)) => return Err(e),
            // An abort refused (say, INVALID_TXN_STATE after a broker failover) leaves
            // a producer that cannot go on: the next one aborts the transaction.
            Err(e) => {
                self.renewable(&e.to_string())?;
                tracing::warn!(error = %e, "abort failed; a new producer takes over");
                self.renew_producer()?;
            }
        }
        self.discard(consumer);
        Ok(())
    }

    /// Forgets the open transaction's work: staged store writes, the processors' notes,
    /// and every partition consumed in it rewound to its last committed offset, so
    /// those records are processed again.
    fn discard<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if self.txn == TxnState::Idle {
            return;
        }
        let _ = self.tracker().take();
        for task in self.tasks.values_mut() {
            for store in task.stores.values_mut() {
                store.abort();
            }
            task.processor.aborted();
        }
        let rewind: HashMap<(String, i32), i64> = self.consumed.drain().collect();
        // Followers drop what they buffered: rewind those inputs to their first buffered
        // record (unless rewound further below), and their scripts to the last commit.
        let mut reseek: Vec<((String, i32), i64)> = Vec::new();
        for task in self.tasks.values_mut() {
            if let Some(f) = task.journal.as_mut().and_then(|j| j.follower.as_mut()) {
                for (input, offset) in f.aborted() {
                    let topic = self.topology.source_topics[input as usize].clone();
                    reseek.push(((topic, task.partition), offset));
                }
            }
        }
        for (tp, offset) in reseek {
            if rewind.contains_key(&tp) {
                continue;
            }
            if let Err(e) = consumer.seek(
                &tp.0,
                tp.1,
                Offset::Offset(offset),
                self.config.transaction_timeout,
            ) {
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "rewind of a buffered input failed");
            }
        }
        for (tp, _) in rewind {
            let to = self
                .committed
                .get(&tp)
                .copied()
                .unwrap_or(Offset::Beginning);
            if let Err(e) = consumer.seek(&tp.0, tp.1, to, self.config.transaction_timeout) {
                // The partition may have been revoked meanwhile; its new owner starts
                // from the committed offset anyway.
                tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "rewind failed");
            }
        }
        self.txn = TxnState::Idle;
        self.metrics
            .transactions_aborted
            .with_label_values(&[self.topology.application_id.as_str()])
            .inc();
    }
}

/// Sorts a transactional error into what the state machine does next.
/// A retriable error is treated as abortable: retrying the call (what librdkafka allows)
/// was tried and, for send-offsets after a broker kill, blocked forever inside
/// librdkafka (`rd_kafka_txn_op_req0` with an infinite timeout, seen in gdb on both
/// shipping instances of a chaos run). After a fatal error a new producer takes over,
/// unless it would fail the same way (`hopeless`).
pub(crate) fn classify(step: &str, e: KafkaError) -> EngineError {
    if let KafkaError::Transaction(ref t) = e {
        if t.txn_requires_abort() {
            return EngineError::Abortable(format!("{step}: {e}"));
        }
        if t.is_fatal() {
            return if hopeless(t.code()) {
                EngineError::Fatal(format!("{step}: {e}"))
            } else {
                EngineError::ProducerFailed(format!("{step}: {e}"))
            };
        }
        if t.is_retriable() {
            return EngineError::Abortable(format!("{step} (retriable): {e}"));
        }
    }
    EngineError::Fatal(format!("{step}: {e}"))
}

/// Errors a new producer would meet again: this principal may not use its transactional
/// id. Fencing is not among them: a transactional id names one instance id, so a fenced
/// producer almost always met the coordinator's own abort of a transaction that outlived
/// `transaction.timeout.ms` (which bumps the epoch: seen after broker kills, when a
/// commit stalls on the moving coordinator). A second process wrongly running with the
/// same instance id is stopped otherwise: its consumer is fenced by static membership
/// (a fatal consumer error ends the thread), and so is a producer renewed too often.
fn hopeless(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
    )
}
