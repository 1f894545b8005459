//! A broker-free driver for topology tests, like Kafka Streams' `TopologyTestDriver`:
//! records piped in are partitioned as Kafka would (murmur2), processed by the task of
//! their partition over in-memory stores with the same layering (change-logging over
//! transactional), and each record is its own transaction: committed when processing
//! succeeds, rolled back when it fails. Outputs, changelog records and dead letters are
//! collected for assertions.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use erp_state_stores::{
    ChangeLoggingStore, ChangelogCollector, KeyValueStore, MemoryBackend, StoreBackend,
    TransactionalStore,
};

use super::config::PoisonPolicy;
use super::dlq::dead_letter;
use super::global::GlobalStores;
use super::partitioner::partition_for;
use super::processor::{
    Header, InputRecord, OutputRecord, ProcessError, Processor, ProcessorContext, PunctuationType,
    Schedule, Topology, process_guarded, punctuate_traced,
};

/// A changelog record as the driver captured it.
pub type ChangelogRecord = (String, i32, Vec<u8>, Option<Vec<u8>>);

#[derive(Default)]
struct Capture(Mutex<Vec<ChangelogRecord>>);

impl ChangelogCollector for Capture {
    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), String> {
        self.0.lock().expect("poisoned").push((
            topic.to_string(),
            partition,
            key.to_vec(),
            value.map(<[u8]>::to_vec),
        ));
        Ok(())
    }
}

struct DriverTask {
    stores: BTreeMap<String, Box<dyn KeyValueStore>>,
    processor: Box<dyn Processor>,
    schedules: Vec<Schedule>,
    stream_time: i64,
}

pub struct TopologyTestDriver {
    topology: Topology,
    partitions: i32,
    policy: PoisonPolicy,
    tasks: BTreeMap<i32, DriverTask>,
    backends: BTreeMap<(String, i32), Arc<MemoryBackend>>,
    changelog: Arc<Capture>,
    outputs: Vec<OutputRecord>,
    offsets: HashMap<(String, i32), i64>,
    /// The driver's own wall clock (ms), moved only by `advance_wall_clock`.
    wall_clock: i64,
    globals: GlobalStores,
    global_backends: BTreeMap<String, Arc<MemoryBackend>>,
}

impl TopologyTestDriver {
    pub fn new(topology: Topology, partitions: i32) -> Self {
        let changelog = Arc::new(Capture::default());
        let mut tasks = BTreeMap::new();
        let mut backends = BTreeMap::new();
        for p in 0..partitions {
            let mut stores: BTreeMap<String, Box<dyn KeyValueStore>> = BTreeMap::new();
            for name in &topology.stores {
                let backend = Arc::new(MemoryBackend::new(name.clone()));
                backends.insert((name.clone(), p), backend.clone());
                let logged = ChangeLoggingStore::new(
                    Box::new(TransactionalStore::new(backend)),
                    erp_state_stores::changelog_topic(&topology.application_id, name),
                    p,
                    changelog.clone(),
                );
                stores.insert(name.clone(), Box::new(logged));
            }
            let processor = (topology.processor)(p);
            let schedules = Schedule::for_processor(processor.as_ref(), 0);
            tasks.insert(
                p,
                DriverTask {
                    stores,
                    processor,
                    schedules,
                    stream_time: -1,
                },
            );
        }
        let mut globals = GlobalStores::default();
        let mut global_backends = BTreeMap::new();
        for spec in &topology.global_stores {
            let backend = Arc::new(MemoryBackend::new(spec.name.clone()));
            global_backends.insert(spec.name.clone(), backend.clone());
            globals.insert(&spec.name, vec![backend]);
        }
        Self {
            topology,
            partitions,
            policy: PoisonPolicy::DeadLetter,
            tasks,
            backends,
            changelog,
            outputs: Vec::new(),
            offsets: HashMap::new(),
            wall_clock: 0,
            globals,
            global_backends,
        }
    }

    /// Writes a record of a global store's topic (a `None` value deletes the key).
    pub fn pipe_global(&mut self, store: &str, key: &[u8], value: Option<&[u8]>) {
        let backend = self
            .global_backends
            .get(store)
            .unwrap_or_else(|| panic!("global store {store} is not declared by the topology"));
        backend
            .write_batch(&[(key.to_vec(), value.map(<[u8]>::to_vec))], None)
            .expect("memory backend");
    }

    /// Moves the driver's wall clock forward and fires the wall-clock timers that fall
    /// due, each as its own transaction.
    pub fn advance_wall_clock(&mut self, by_ms: i64) -> Result<(), ProcessError> {
        self.wall_clock += by_ms;
        let now = self.wall_clock;
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for p in partitions {
            let task = self.tasks.get_mut(&p).expect("task");
            let mut due = 0;
            for s in task.schedules.iter_mut() {
                due += usize::from(s.due(PunctuationType::WallClockTime, now));
            }
            for _ in 0..due {
                let mut outputs = Vec::new();
                let task = self.tasks.get_mut(&p).expect("task");
                let result = {
                    let mut ctx =
                        ProcessorContext::new(p, &mut task.stores, &mut outputs, &self.globals);
                    punctuate_traced(
                        task.processor.as_mut(),
                        &mut ctx,
                        PunctuationType::WallClockTime,
                        now,
                    )
                };
                if let Err(e) = result {
                    for store in task.stores.values_mut() {
                        store.abort();
                    }
                    return Err(e);
                }
                for store in task.stores.values_mut() {
                    store.commit(None)?;
                }
                self.outputs.extend(outputs);
            }
        }
        Ok(())
    }

    pub fn with_poison_policy(mut self, policy: PoisonPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Processes one record as one transaction. Poison follows the poison policy;
    /// other failures roll the record's effects back and are returned.
    pub fn pipe(
        &mut self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        timestamp: i64,
    ) -> Result<(), ProcessError> {
        self.pipe_with_headers(topic, key, value, timestamp, vec![])
    }

    pub fn pipe_with_headers(
        &mut self,
        topic: &str,
        key: &[u8],
        value: &[u8],
        timestamp: i64,
        headers: Vec<Header>,
    ) -> Result<(), ProcessError> {
        assert!(
            self.topology.source_topics.iter().any(|t| t == topic),
            "{topic} is not a source of the topology"
        );
        let partition = partition_for(key, self.partitions);
        let offset = {
            let next = self
                .offsets
                .entry((topic.to_string(), partition))
                .or_insert(0);
            *next += 1;
            *next - 1
        };
        let record = InputRecord {
            topic,
            partition,
            offset,
            timestamp,
            key: Some(key),
            value: Some(value),
            headers,
        };
        let logged_before = self.changelog.0.lock().expect("poisoned").len();
        let task = self
            .tasks
            .get_mut(&partition)
            .expect("a task per partition");
        for store in task.stores.values_mut() {
            store.begin_record();
        }
        let mut outputs = Vec::new();
        let result = {
            let mut ctx =
                ProcessorContext::new(partition, &mut task.stores, &mut outputs, &self.globals);
            process_guarded(task.processor.as_mut(), &mut ctx, &record).and_then(|()| {
                // Stream-time timers fire inside the record's transaction, as in the engine.
                task.stream_time = task.stream_time.max(timestamp);
                let now = task.stream_time;
                let mut due = 0;
                for s in task.schedules.iter_mut() {
                    due += usize::from(s.due(PunctuationType::StreamTime, now));
                }
                (0..due).try_for_each(|_| {
                    punctuate_traced(
                        task.processor.as_mut(),
                        &mut ctx,
                        PunctuationType::StreamTime,
                        now,
                    )
                })
            })
        };
        let rollback = |task: &mut DriverTask, capture: &Capture| {
            for store in task.stores.values_mut() {
                store.abort();
            }
            capture.0.lock().expect("poisoned").truncate(logged_before);
        };
        match result {
            Ok(()) => {}
            Err(ProcessError::Poison { class, reason }) => {
                outputs.clear();
                for store in task.stores.values_mut() {
                    store.discard_record()?;
                }
                match self.policy {
                    PoisonPolicy::DeadLetter => outputs.push(dead_letter(
                        &self.topology.dlq_topic(),
                        &self.topology.application_id,
                        &record,
                        class,
                        &reason,
                    )),
                    PoisonPolicy::Skip => {}
                    PoisonPolicy::Fail => {
                        rollback(task, &self.changelog);
                        return Err(ProcessError::Poison { class, reason });
                    }
                }
            }
            Err(e) => {
                rollback(task, &self.changelog);
                return Err(e);
            }
        }
        for store in task.stores.values_mut() {
            store.commit(None)?;
        }
        self.outputs.extend(outputs);
        Ok(())
    }

    /// Drains the records produced to `topic` so far.
    pub fn read_output(&mut self, topic: &str) -> Vec<OutputRecord> {
        let (taken, kept) = std::mem::take(&mut self.outputs)
            .into_iter()
            .partition(|r| r.topic == topic);
        self.outputs = kept;
        taken
    }

    /// The committed value of `key` in `store`, from whichever partition holds it.
    pub fn store_get(&self, store: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.backends
            .iter()
            .filter(|((name, _), _)| name == store)
            .find_map(|(_, b)| b.get(key).expect("memory backend"))
    }

    /// Every changelog record written so far (rolled-back ones excluded).
    pub fn changelog(&self) -> Vec<ChangelogRecord> {
        self.changelog.0.lock().expect("poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts records per key; poison on value "bad"; a transient failure on "flaky".
    struct Counter;

    impl Processor for Counter {
        fn process(
            &mut self,
            ctx: &mut ProcessorContext<'_>,
            record: &InputRecord<'_>,
        ) -> Result<(), ProcessError> {
            let key = record.key.unwrap_or_default();
            let n = ctx
                .store("counts")
                .get(key)?
                .map(|v| String::from_utf8(v).unwrap().parse::<u32>().unwrap())
                .unwrap_or(0)
                + 1;
            ctx.store("counts").put(key, n.to_string().as_bytes())?;
            match record.value {
                Some(b"bad") => {
                    return Err(ProcessError::Poison {
                        class: "test",
                        reason: "bad value".into(),
                    });
                }
                Some(b"panic") => panic!("processor bug on this record"),
                Some(b"flaky") => return Err(ProcessError::Transient("try later".into())),
                _ => {}
            }
            ctx.forward(OutputRecord {
                topic: "out".into(),
                key: key.to_vec(),
                value: n.to_string().into_bytes(),
                timestamp: record.timestamp,
                headers: vec![],
            });
            Ok(())
        }
    }

    /// Emits the total count every second of wall clock and every 10 ms of stream time.
    struct Ticker;

    impl Processor for Ticker {
        fn process(
            &mut self,
            ctx: &mut ProcessorContext<'_>,
            _: &InputRecord<'_>,
        ) -> Result<(), ProcessError> {
            let n = ctx.store("counts").get(b"n")?.map_or(0, |v| v[0]) + 1;
            ctx.store("counts").put(b"n", &[n])?;
            Ok(())
        }

        fn punctuations(&self) -> Vec<(PunctuationType, std::time::Duration)> {
            vec![
                (
                    PunctuationType::WallClockTime,
                    std::time::Duration::from_secs(1),
                ),
                (
                    PunctuationType::StreamTime,
                    std::time::Duration::from_millis(10),
                ),
            ]
        }

        fn punctuate(
            &mut self,
            ctx: &mut ProcessorContext<'_>,
            kind: PunctuationType,
            ts: i64,
        ) -> Result<(), ProcessError> {
            let n = ctx.store("counts").get(b"n")?.map_or(0, |v| v[0]);
            ctx.forward(OutputRecord {
                topic: "out".into(),
                key: b"tick".to_vec(),
                value: format!("{kind:?}@{ts}:{n}").into_bytes(),
                timestamp: ts,
                headers: vec![],
            });
            Ok(())
        }
    }

    #[test]
    fn wall_clock_and_stream_time_punctuations_fire_per_interval() {
        let topology = Topology {
            application_id: "ticker".into(),
            source_topics: vec!["in".into()],
            sink_topics: vec!["out".into()],
            stores: vec!["counts".into()],
            global_stores: vec![],
            processor: Arc::new(|_| Box::new(Ticker)),
        };
        let mut d = TopologyTestDriver::new(topology, 1);
        d.pipe("in", b"k", b"x", 3).unwrap(); // stream time starts: next tick at 10
        d.pipe("in", b"k", b"x", 9).unwrap();
        d.pipe("in", b"k", b"x", 25).unwrap(); // passes 10 (and 20): one tick
        d.advance_wall_clock(500).unwrap();
        d.advance_wall_clock(600).unwrap(); // passes 1000
        let ticks: Vec<String> = d
            .read_output("out")
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect();
        assert_eq!(ticks, ["StreamTime@25:3", "WallClockTime@1100:3"]);
    }

    fn topology() -> Topology {
        Topology {
            application_id: "counter".into(),
            source_topics: vec!["in".into()],
            sink_topics: vec!["out".into()],
            stores: vec!["counts".into()],
            global_stores: vec![],
            processor: Arc::new(|_| Box::new(Counter)),
        }
    }

    #[test]
    fn records_flow_through_stores_and_changelogs() {
        let mut d = TopologyTestDriver::new(topology(), 4);
        for _ in 0..3 {
            d.pipe("in", b"a", b"x", 1).unwrap();
        }
        d.pipe("in", b"b", b"x", 1).unwrap();
        let out: Vec<_> = d
            .read_output("out")
            .into_iter()
            .map(|r| String::from_utf8(r.value).unwrap())
            .collect();
        assert_eq!(out, ["1", "2", "3", "1"]);
        assert_eq!(
            d.store_get("counts", b"a").as_deref(),
            Some(b"3".as_slice())
        );
        let log = d.changelog();
        assert_eq!(log.len(), 4);
        let (pa, pb) = (partition_for(b"a", 4), partition_for(b"b", 4));
        assert!(
            log.iter()
                .all(|(t, p, _, _)| t == "counter-counts-changelog" && [pa, pb].contains(p))
        );
    }

    #[test]
    fn a_failure_rolls_the_record_back_and_poison_is_dead_lettered() {
        let mut d = TopologyTestDriver::new(topology(), 2);
        d.pipe("in", b"a", b"x", 1).unwrap();
        assert!(matches!(
            d.pipe("in", b"a", b"flaky", 2),
            Err(ProcessError::Transient(_))
        ));
        assert_eq!(
            d.store_get("counts", b"a").as_deref(),
            Some(b"1".as_slice()),
            "rolled back"
        );
        assert_eq!(
            d.changelog().len(),
            1,
            "rolled-back changelog record dropped"
        );
        d.pipe("in", b"a", b"bad", 3).unwrap();
        let dlq = d.read_output("counter-dlq");
        assert_eq!(dlq.len(), 1);
        assert_eq!(dlq[0].value, b"bad");
        assert!(
            dlq[0]
                .headers
                .iter()
                .any(|(k, v)| k == "__dlq.errors.exception.message" && v == b"bad value")
        );
        assert!(d.read_output("out").len() == 1, "poison produced no output");
        // A panicking processor does not take the partition down: the record is
        // dead-lettered with the panic message and its store writes are undone.
        d.pipe("in", b"a", b"panic", 4).unwrap();
        let dlq = d.read_output("counter-dlq");
        assert_eq!(dlq.len(), 1);
        assert!(dlq[0].headers.iter().any(|(k, v)| {
            k == "__dlq.errors.exception.message" && v == b"processor bug on this record"
        }));
        assert_eq!(
            d.store_get("counts", b"a").as_deref(),
            Some(b"1".as_slice())
        );
        d.pipe("in", b"a", b"x", 5).unwrap();
        assert_eq!(
            d.store_get("counts", b"a").as_deref(),
            Some(b"2".as_slice())
        );
    }

    #[test]
    fn skip_and_fail_policies() {
        let mut d = TopologyTestDriver::new(topology(), 1).with_poison_policy(PoisonPolicy::Skip);
        d.pipe("in", b"a", b"x", 1).unwrap();
        d.pipe("in", b"a", b"bad", 2).unwrap();
        assert!(d.read_output("counter-dlq").is_empty());
        // The poison record's own store write (its count) is undone, and the changelog
        // says so too.
        assert_eq!(
            d.store_get("counts", b"a").as_deref(),
            Some(b"1".as_slice())
        );
        assert_eq!(
            d.changelog().last().unwrap().3.as_deref(),
            Some(b"1".as_slice())
        );
        let mut d = TopologyTestDriver::new(topology(), 1).with_poison_policy(PoisonPolicy::Fail);
        assert!(matches!(
            d.pipe("in", b"a", b"bad", 1),
            Err(ProcessError::Poison { .. })
        ));
        assert_eq!(d.store_get("counts", b"a"), None);
    }
}
