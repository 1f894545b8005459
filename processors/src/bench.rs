//! Building blocks of the benchmarks under `bench/` (the hidden `erp bench …`
//! commands): the limits ladder (a plain and a transactional producer, the engine as a
//! passthrough with and without a store write), the step loads fed both to our
//! processors and to the Kafka Streams peer (`bench/peer/`), and the latency probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::engine::{
    InputRecord, OutputRecord, ProcessError, Processor, ProcessorContext, Topology,
};

/// The store of the L3 passthrough.
pub const PASSTHROUGH_STORE: &str = "bench";

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Ops(#[from] crate::ops::OpsError),
    #[error("{0}")]
    Other(String),
}

/// L2 (and with a store, L3): forwards every record unchanged, so the engine's own
/// cost — consume, produce, transactions, changelog — is all there is.
struct Passthrough {
    output: String,
    store: bool,
}

impl Processor for Passthrough {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let key = record.key.unwrap_or_default();
        let value = record.value.unwrap_or_default();
        if self.store {
            ctx.store(PASSTHROUGH_STORE).put(key, value)?;
        }
        ctx.forward(OutputRecord {
            topic: self.output.clone(),
            key: key.to_vec(),
            value: value.to_vec(),
            timestamp: record.timestamp,
            headers: Vec::new(),
        });
        Ok(())
    }
}

/// The passthrough application: `inputs` (co-partitioned) to `output`.
pub fn passthrough_topology(
    application_id: String,
    inputs: Vec<String>,
    output: String,
    store: bool,
) -> Topology {
    let out = output.clone();
    Topology {
        application_id,
        source_topics: inputs,
        sink_topics: vec![output],
        stores: if store {
            vec![PASSTHROUGH_STORE.to_string()]
        } else {
            Vec::new()
        },
        global_stores: Vec::new(),
        processor: Arc::new(move |_| {
            Box::new(Passthrough {
                output: out.clone(),
                store,
            })
        }),
    }
}

/// CPU seconds (user + system) and peak resident memory of a process, from /proc.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
}

pub fn usage(pid: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 here.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    // CLK_TCK is 100 on every Linux this runs on.
    Some(Usage {
        cpu_seconds: ticks / 100.0,
        peak_rss_mib: hwm_kib / 1024.0,
    })
}

/// What a producer run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProduceReport {
    pub records: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    pub cpu_seconds: f64,
    pub transactions: u64,
}

/// L0 / L1: `records` records of `size` bytes to `topic`, keyed 0..n (spread by Kafka's
/// murmur2 like the Java clients), as fast as the producer goes. Transactional: the
/// engine's producer settings and commit rhythm (every `commit_interval` or
/// `max_records` records), so L1 is the ceiling of any EOS application on this broker.
pub fn produce(
    bootstrap: &str,
    topic: &str,
    records: u64,
    size: usize,
    transactional: Option<(Duration, u64)>,
) -> Result<ProduceReport, BenchError> {
    let mut config = erp_connectors::kafka::client();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random");
    if transactional.is_some() {
        config
            .set(
                "transactional.id",
                format!("erp-bench-produce-{}", std::process::id()),
            )
            .set("retry.backoff.ms", "5")
            .set("retry.backoff.max.ms", "50");
    }
    let producer: BaseProducer = config.create()?;
    if transactional.is_some() {
        producer.init_transactions(Duration::from_secs(30))?;
    }
    let before = usage("self").unwrap_or_default();
    let value = vec![b'x'; size];
    let started = Instant::now();
    let mut transactions = 0;
    let mut open: Option<(Instant, u64)> = None;
    let commit = |p: &BaseProducer| -> Result<(), BenchError> {
        while p.in_flight_count() > 0 {
            p.poll(Duration::from_millis(1));
        }
        p.commit_transaction(Duration::from_secs(30))?;
        Ok(())
    };
    for i in 0..records {
        if let Some((interval, max)) = transactional {
            match open {
                Some((since, n)) if since.elapsed() >= interval || n >= max => {
                    commit(&producer)?;
                    transactions += 1;
                    open = None;
                }
                _ => {}
            }
            if open.is_none() {
                producer.begin_transaction()?;
                open = Some((Instant::now(), 0));
            }
            if let Some((_, n)) = open.as_mut() {
                *n += 1;
            }
        }
        let key = i.to_string();
        let mut record = BaseRecord::to(topic)
            .key(key.as_bytes())
            .payload(&value[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    if open.is_some() {
        commit(&producer)?;
        transactions += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    let seconds = started.elapsed().as_secs_f64();
    let after = usage("self").unwrap_or_default();
    Ok(ProduceReport {
        records,
        bytes: records * size as u64,
        seconds,
        records_per_s: records as f64 / seconds,
        cpu_seconds: after.cpu_seconds - before.cpu_seconds,
        transactions,
    })
}

/// Wall-clock milliseconds since the epoch.
pub fn now_ms() -> i64 {
    crate::engine::wall_clock_ms()
}

/// How a consumer group worked through what was in its input.
#[derive(Debug, Clone)]
pub struct CatchUp {
    /// Records committed between the group's first commit and the last.
    pub records: u64,
    /// From the first commit (after start-up, restore and the first batch) to the last.
    pub window: Duration,
    pub to_first_commit: Duration,
    /// CPU of the watched process over the window.
    pub cpu_seconds: Option<f64>,
    /// Its peak RSS at the end (start-up included).
    pub peak_rss_mib: Option<f64>,
}

/// Waits until consumer group `group` has committed every partition of `topics` up to
/// the last record there when called, sampling the CPU of process `pid` at the group's
/// first commit and at the last.
pub fn wait_caught_up(
    bootstrap: &str,
    group: &str,
    topics: &[String],
    pid: Option<&str>,
    timeout: Duration,
) -> Result<CatchUp, BenchError> {
    let started = Instant::now();
    let partitions = partitions_of(bootstrap, topics)?;
    let ends = crate::ops::data_ends(bootstrap, &partitions)?;
    let total: i64 = ends.iter().sum();
    // A consumer that never subscribes does not join the group: it only fetches the
    // group's committed offsets.
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &partitions {
        tpl.add_partition(t, *p);
    }
    let mut first: Option<(Instant, i64, Option<Usage>)> = None;
    loop {
        let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
        let at: Vec<i64> = partitions
            .iter()
            .map(|(t, p)| {
                committed
                    .find_partition(t, *p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(0)
            })
            .collect();
        let done: i64 = at.iter().zip(&ends).map(|(a, e)| (*a).min(*e)).sum();
        if first.is_none() && done > 0 {
            first = Some((Instant::now(), done, pid.and_then(usage)));
        }
        if done >= total {
            let (t0, done0, u0) = first.unwrap_or((Instant::now(), 0, None));
            let u1 = pid.and_then(usage);
            return Ok(CatchUp {
                records: (total - done0) as u64,
                window: t0.elapsed(),
                to_first_commit: t0 - started,
                cpu_seconds: u0.zip(u1).map(|(a, b)| b.cpu_seconds - a.cpu_seconds),
                peak_rss_mib: u1.map(|u| u.peak_rss_mib),
            });
        }
        if started.elapsed() > timeout {
            return Err(BenchError::Other(format!(
                "group {group} at {done} of {total} records of {topics:?} after {timeout:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A read_committed consumer (no group membership) assigned to every partition of
/// `topics` at its current end: it sees what is committed from now on, promptly.
pub fn reader_at_end(bootstrap: &str, topics: &[String]) -> Result<BaseConsumer, BenchError> {
    let partitions = partitions_of(bootstrap, topics)?;
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "erp-bench-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for (t, p) in &partitions {
        let (_, high) = consumer.fetch_watermarks(t, *p, Duration::from_secs(10))?;
        tpl.add_partition_offset(t, *p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

fn partitions_of(bootstrap: &str, topics: &[String]) -> Result<Vec<(String, i32)>, BenchError> {
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut out = Vec::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        for p in md.topics().iter().flat_map(|m| m.partitions()) {
            out.push((t.clone(), p.id()));
        }
    }
    if out.is_empty() {
        return Err(BenchError::Other(format!("no partitions in {topics:?}")));
    }
    Ok(out)
}

/// Latency percentiles (ms) of a sample.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    pub fn of(mut sample: Vec<f64>) -> Self {
        if sample.is_empty() {
            return Self::default();
        }
        sample.sort_by(f64::total_cmp);
        let at = |q: f64| {
            // Nearest rank: the smallest value with at least q of the sample at or below.
            let rank = ((q * sample.len() as f64).ceil() as usize).clamp(1, sample.len());
            sample[rank - 1]
        };
        Self {
            count: sample.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: at(1.0),
            mean_ms: sample.iter().sum::<f64>() / sample.len() as f64,
        }
    }
}

/// Reads `topics` (read_committed, from their ends at start) in a thread and records,
/// per record, the wall-clock time of its arrival minus its record timestamp. Every
/// processor here and in Kafka Streams stamps an output with its cause's timestamp, so
/// on an output topic this is input-published → output-committed-and-read.
pub struct LatencyProbe {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<Vec<f64>, BenchError>>>,
    seen: Arc<std::sync::atomic::AtomicU64>,
}

impl LatencyProbe {
    pub fn start(bootstrap: &str, topics: &[String]) -> Result<Self, BenchError> {
        let consumer = reader_at_end(bootstrap, topics)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (flag, count) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut sample = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(50)) {
                    Some(Ok(m)) => {
                        let now = now_ms();
                        if let Some(ts) = m.timestamp().to_millis() {
                            sample.push((now - ts) as f64);
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "latency probe"),
                    None => {}
                }
            }
            Ok(sample)
        });
        Ok(Self {
            stop,
            thread: Some(thread),
            seen,
        })
    }

    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Waits until `expected` records arrived or none came for `quiet`; returns the
    /// latencies.
    pub fn finish(mut self, expected: u64, quiet: Duration) -> Result<Vec<f64>, BenchError> {
        let mut last = (self.seen(), Instant::now());
        while self.seen() < expected {
            std::thread::sleep(Duration::from_millis(20));
            let n = self.seen();
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > quiet {
                break;
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined once");
        thread
            .join()
            .map_err(|_| BenchError::Other("latency probe panicked".into()))?
    }
}

/// Open-loop pacing: sleeps until the `i`-th event of a `rate`/s schedule is due and
/// returns its scheduled wall-clock time (ms), so latency counts any producer lag.
pub struct Schedule {
    started: Instant,
    epoch_ms: i64,
    rate: Option<f64>,
}

impl Schedule {
    pub fn new(rate: Option<f64>) -> Self {
        Self {
            started: Instant::now(),
            epoch_ms: now_ms(),
            rate,
        }
    }

    pub fn due(&self, i: u64) -> i64 {
        match self.rate {
            None => now_ms(),
            Some(r) => {
                let due = Duration::from_secs_f64(i as f64 / r.max(0.001));
                let now = self.started.elapsed();
                if due > now {
                    std::thread::sleep(due - now);
                }
                self.epoch_ms + due.as_millis() as i64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=1000).map(f64::from).collect());
        assert_eq!(
            (p.p50_ms, p.p99_ms, p.p999_ms, p.max_ms),
            (500.0, 990.0, 999.0, 1000.0)
        );
        assert_eq!(p.count, 1000);
        assert_eq!(Percentiles::of(vec![]).count, 0);
        let one = Percentiles::of(vec![7.0]);
        assert_eq!((one.p50_ms, one.p999_ms), (7.0, 7.0));
    }

    #[test]
    fn usage_of_this_process_is_read_from_proc() {
        let u = usage("self").expect("/proc/self");
        assert!(u.peak_rss_mib > 1.0, "{u:?}");
        assert!(u.cpu_seconds >= 0.0);
        assert!(usage("0").is_none());
    }
}
