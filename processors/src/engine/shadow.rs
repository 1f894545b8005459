//! Shadow rebuilds for `erp verify`: a topology's stores rebuilt into a separate
//! directory, either by reprocessing its inputs (from the start up to the group's
//! committed offsets, in journal order, outputs dropped, no transactions) or by reading
//! its changelogs. Nothing is written to Kafka; the live state is not touched.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use erp_state_stores::{
    KeyValueStore, RocksDbBackend, RocksDbOptions, StoreBackend, TransactionalStore,
};

use super::EngineError;
use super::global::GlobalStores;
use super::journal::{Follower, ReadLog, Step};
use super::metrics::EngineMetrics;
use super::processor::{
    InputRecord, OutputRecord, ProcessError, ProcessorContext, PunctuationType, Schedule, Topology,
    process_guarded, punctuate_traced,
};
use super::restore::{EofIsNotAnError, RestoreTarget, read_journal, restore, restore_consumer};

/// What a rebuild did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildStats {
    pub records: u64,
    /// Records that were poison (their writes undone, as the engine does).
    pub poison: u64,
    /// Journal entries whose record was not found, and records the journal did not name.
    pub journal_skipped: u64,
    pub journal_unscripted: u64,
}

/// The committed stores of one rebuilt partition, by store name.
pub type Rebuilt = BTreeMap<String, Arc<dyn StoreBackend>>;

fn open(
    path: &Path,
    store: &str,
    options: &RocksDbOptions,
) -> Result<Arc<RocksDbBackend>, EngineError> {
    // A previous run's leftovers would be compared as if rebuilt now.
    if path.exists() {
        std::fs::remove_dir_all(path)
            .map_err(|e| EngineError::Config(format!("cannot clear {}: {e}", path.display())))?;
    }
    Ok(Arc::new(RocksDbBackend::open(store, path, options)?))
}

/// Restores `store`'s changelog partition into `dir`.
pub fn rebuild_from_changelog(
    bootstrap: &str,
    topology: &Topology,
    store: &str,
    partition: i32,
    dir: &Path,
) -> Result<Arc<dyn StoreBackend>, EngineError> {
    let app = &topology.application_id;
    let backend: Arc<dyn StoreBackend> = open(
        &dir.join("changelog")
            .join(app)
            .join(partition.to_string())
            .join(store),
        store,
        &RocksDbOptions::with_memory_budget(32 << 20),
    )?;
    let metrics = EngineMetrics::new(&prometheus::Registry::new())
        .map_err(|e| EngineError::Config(e.to_string()))?;
    restore(
        bootstrap,
        app,
        &[RestoreTarget {
            store: store.to_string(),
            topic: erp_state_stores::changelog_topic(app, store),
            partition,
            backend: backend.clone(),
        }],
        &metrics,
    )?;
    Ok(backend)
}

/// Reprocesses partition `partition` of `topology`'s inputs from the start up to
/// `until` (next offset per source topic, index as in the topology) into stores under
/// `dir`; `progress` is told how many records were processed so far.
pub fn rebuild_from_inputs(
    bootstrap: &str,
    topology: &Topology,
    partition: i32,
    until: &[i64],
    dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<(Rebuilt, RebuildStats), EngineError> {
    let app = &topology.application_id;
    let options = RocksDbOptions::with_memory_budget(64 << 20);
    let base = dir.join("replay").join(app);
    let mut backends: Rebuilt = BTreeMap::new();
    let mut stores: BTreeMap<String, Box<dyn KeyValueStore>> = BTreeMap::new();
    for name in &topology.stores {
        let backend: Arc<dyn StoreBackend> =
            open(&base.join(partition.to_string()).join(name), name, &options)?;
        backends.insert(name.clone(), backend.clone());
        stores.insert(name.clone(), Box::new(TransactionalStore::new(backend)));
    }
    let globals = global_stores(bootstrap, topology, &base, &options)?;
    let mut processor = (topology.processor)(partition);
    let mut schedules = Schedule::for_processor(processor.as_ref(), 0);
    let mut stream_time = -1i64;

    let inputs = topology.source_topics.len();
    let mut follower: Option<Follower<OwnedMessage>> = if topology.journaled() {
        let records = read_journal(bootstrap, &topology.journal_topic(), partition, None)?;
        let script: Vec<_> = super::journal::script(records, &vec![0; inputs])
            .into_iter()
            .filter(|e| e.offset < until.get(e.input as usize).copied().unwrap_or(0))
            .collect();
        Some(Follower::new(script, inputs))
    } else {
        None
    };

    let consumer: BaseConsumer<EofIsNotAnError> = restore_consumer(bootstrap)?;
    let mut tpl = TopicPartitionList::new();
    let mut done = vec![false; inputs];
    for (i, topic) in topology.source_topics.iter().enumerate() {
        // Nothing of it below `until` is left (never was, or retention took it).
        let low = super::restore::watermarks(&consumer, topic, partition)?.0;
        if until[i] <= low {
            done[i] = true;
            continue;
        }
        tpl.add_partition_offset(topic, partition, Offset::Beginning)
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| EngineError::Kafka(format!("assign inputs: {e}")))?;

    let mut stats = RebuildStats::default();
    let journaled = topology.journaled();
    let mut apply = |m: &OwnedMessage,
                     reads: Vec<super::journal::GlobalRead>,
                     stores: &mut BTreeMap<String, Box<dyn KeyValueStore>>,
                     stats: &mut RebuildStats|
     -> Result<(), EngineError> {
        let record = InputRecord::from_message(m);
        for s in stores.values_mut() {
            s.begin_record();
        }
        let mut outputs: Vec<OutputRecord> = Vec::new();
        let mut log = ReadLog::scripted(reads);
        let result = {
            let mut ctx = ProcessorContext::new(partition, stores, &mut outputs, &globals);
            if journaled {
                ctx = ctx.with_reads(&mut log);
            }
            process_guarded(processor.as_mut(), &mut ctx, &record)
        };
        match result {
            Ok(()) => {}
            Err(ProcessError::Poison { .. }) => {
                stats.poison += 1;
                for s in stores.values_mut() {
                    s.discard_record()?;
                }
            }
            Err(ProcessError::Store(e)) => return Err(e.into()),
            Err(e) => {
                return Err(EngineError::Fatal(format!(
                    "rebuild of {}[{partition}]@{}: {e}",
                    record.topic, record.offset
                )));
            }
        }
        stream_time = stream_time.max(record.timestamp);
        let due: usize = schedules
            .iter_mut()
            .map(|s| usize::from(s.due(PunctuationType::StreamTime, stream_time)))
            .sum();
        for _ in 0..due {
            let mut ctx = ProcessorContext::new(partition, stores, &mut outputs, &globals);
            punctuate_traced(
                processor.as_mut(),
                &mut ctx,
                PunctuationType::StreamTime,
                stream_time,
            )
            .map_err(|e| EngineError::Fatal(format!("punctuation: {e}")))?;
        }
        stats.records += 1;
        if stats.records.is_multiple_of(1000) {
            for s in stores.values_mut() {
                s.commit(None)?;
            }
        }
        Ok(())
    };

    let position = |topic: &str| {
        topology
            .source_topics
            .iter()
            .position(|t| t == topic)
            .unwrap_or(0)
    };
    let mut last_progress = std::time::Instant::now();
    while !done.iter().all(|d| *d) || follower.as_ref().is_some_and(|f| f.buffered_total() > 0) {
        if last_progress.elapsed() > Duration::from_secs(60) {
            return Err(EngineError::Kafka(format!(
                "rebuild of {app}[{partition}]: no record for 60 s before reaching the committed offsets {until:?}"
            )));
        }
        let polled = consumer.poll(Duration::from_millis(200));
        if polled.is_some() {
            last_progress = std::time::Instant::now();
        }
        match polled {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {
                // One partition per topic here: find which topic reached its end.
                mark_ends(&consumer, topology, partition, until, &mut done);
            }
            Some(Err(e)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) => {
                mark_ends(&consumer, topology, partition, until, &mut done);
            }
            Some(Err(e)) if super::restore::transient(&e) => {
                tracing::warn!(error = %e, "rebuild: broker unreachable for now; librdkafka retries")
            }
            Some(Err(e)) => return Err(EngineError::Kafka(format!("rebuild consumer: {e}"))),
            Some(Ok(m)) => {
                let i = position(m.topic());
                if m.offset() + 1 >= until[i] {
                    done[i] = true;
                }
                if m.offset() >= until[i] {
                    continue;
                }
                let m = m.detach();
                match follower.as_mut() {
                    Some(f) => f.push(i as u8, m),
                    None => apply(&m, Vec::new(), &mut stores, &mut stats)?,
                }
            }
        }
        if let Some(f) = follower.as_mut() {
            loop {
                match f.release() {
                    Step::Process(m, reads) => apply(&m, reads, &mut stores, &mut stats)?,
                    Step::Wait(input) if done[input as usize] => f.skip_current(),
                    Step::Wait(_) | Step::Idle => break,
                }
            }
        }
        progress(stats.records);
    }
    for s in stores.values_mut() {
        s.commit(None)?;
    }
    if let Some(f) = &follower {
        stats.journal_skipped = f.skipped;
        stats.journal_unscripted = f.unscripted;
    }
    Ok((backends, stats))
}

/// After an end-of-partition event: every input whose position reached `until` (or the
/// end of its log) is done.
fn mark_ends(
    consumer: &BaseConsumer<EofIsNotAnError>,
    topology: &Topology,
    partition: i32,
    until: &[i64],
    done: &mut [bool],
) {
    let Ok(positions) = consumer.position() else {
        return;
    };
    for (i, topic) in topology.source_topics.iter().enumerate() {
        let at = positions
            .find_partition(topic, partition)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        let end = consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map(|(_, h)| h)
            .ok();
        if let (Some(at), Some(end)) = (at, end)
            && (at >= until[i] || at >= end)
        {
            done[i] = true;
        }
    }
}

/// The topology's global stores, restored in full under `base` (the journal serves the
/// reads it recorded; these answer the rest).
fn global_stores(
    bootstrap: &str,
    topology: &Topology,
    base: &Path,
    options: &RocksDbOptions,
) -> Result<GlobalStores, EngineError> {
    let mut globals = GlobalStores::default();
    let metrics = EngineMetrics::new(&prometheus::Registry::new())
        .map_err(|e| EngineError::Config(e.to_string()))?;
    let probe = restore_consumer(bootstrap)?;
    let mut by_store: HashMap<String, Vec<Arc<dyn StoreBackend>>> = HashMap::new();
    let mut targets = Vec::new();
    for spec in &topology.global_stores {
        let md = probe
            .fetch_metadata(Some(&spec.topic), Duration::from_secs(10))
            .map_err(|e| EngineError::Kafka(format!("metadata of {}: {e}", spec.topic)))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let backend: Arc<dyn StoreBackend> = open(
                &base
                    .join("global")
                    .join(&spec.name)
                    .join(p.id().to_string()),
                &spec.name,
                options,
            )?;
            by_store
                .entry(spec.name.clone())
                .or_default()
                .push(backend.clone());
            targets.push(RestoreTarget {
                store: spec.name.clone(),
                topic: spec.topic.clone(),
                partition: p.id(),
                backend,
            });
        }
    }
    restore(bootstrap, &topology.application_id, &targets, &metrics)?;
    for (name, backends) in by_store {
        globals.insert(&name, backends);
    }
    Ok(globals)
}
