//! Operator tools behind `erp reset`, `erp replay`, `erp verify`, `erp inspect` and
//! `erp tail`: plans first (printed by `--dry-run`), then the same plan executed.
//!
//! A reset only moves the group's input offsets, as `kafka-consumer-groups
//! --reset-offsets` does. A replay is what Kafka's StreamsResetter plus
//! `KafkaStreams#cleanUp()` do — input offsets to the start, changelogs deleted, local
//! state wiped — with two differences: the input journal is kept, so reprocessing
//! repeats the original order and global reads (same state, byte for byte); and a replay
//! from a point in time rebuilds the state before that point silently (offset-commit
//! metadata `erp-replay:emit-from=<offset>`) instead of dropping it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use erp_state_stores::{Entry, RocksDbBackend, StoreBackend, StoreError};

use crate::engine::{EngineError, ReplayMarks, Topology, journal, shadow};

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("Kafka at {bootstrap}: {reason}")]
    Kafka { bootstrap: String, reason: String },
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Input(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// Reaching the end of a partition is how these tools stop, not an error to log.
pub struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::PartitionEOF) {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// A read_committed reader that reports the ends of partitions (quietly).
pub fn reader(bootstrap: &str) -> Result<BaseConsumer<Quiet>, OpsError> {
    erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "erp-ops-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .create_with_context(Quiet)
        .map_err(kafka(bootstrap))
}

fn kafka(bootstrap: &str) -> impl Fn(rdkafka::error::KafkaError) -> OpsError + '_ {
    move |e| OpsError::Kafka {
        bootstrap: bootstrap.to_string(),
        reason: e.to_string(),
    }
}

fn client(bootstrap: &str, group: Option<&str>) -> Result<BaseConsumer, OpsError> {
    let mut config = erp_connectors::kafka::client();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        // Fail fast with a clear message when nobody answers.
        .set("socket.connection.setup.timeout.ms", "5000");
    if let Some(g) = group {
        config.set("group.id", g);
    }
    config.create().map_err(kafka(bootstrap))
}

/// Fails with a clear message if the broker does not answer.
pub fn check_broker(bootstrap: &str) -> Result<(), OpsError> {
    client(bootstrap, None)?
        .fetch_metadata(None, TIMEOUT)
        .map(|_| ())
        .map_err(|e| OpsError::Kafka {
            bootstrap: bootstrap.to_string(),
            reason: format!("unreachable ({e}); is the broker running (scripts/stack.sh up)?"),
        })
}

/// Fails with a clear message if the schema registry does not answer.
pub fn check_registry(url: &str) -> Result<(), OpsError> {
    let unreachable = |reason: String| {
        OpsError::Input(format!(
            "schema registry at {url} is unreachable ({reason}); is it running (scripts/stack.sh up)?"
        ))
    };
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    match client.get(format!("{url}/subjects")).send() {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(unreachable(format!("HTTP {}", r.status()))),
        Err(e) => Err(unreachable(e.to_string())),
    }
}

/// A partition's low and high watermarks. Right after a client starts (or a topic is
/// created) the broker may not know it yet: retry for a few seconds before failing.
fn watermarks<C: rdkafka::consumer::ConsumerContext>(
    c: &BaseConsumer<C>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), OpsError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match c.fetch_watermarks(topic, partition, TIMEOUT) {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(topic, partition, error = %e, "watermarks not available yet");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(OpsError::Kafka {
                    bootstrap: bootstrap.to_string(),
                    reason: format!("watermarks of {topic}[{partition}]: {e}"),
                });
            }
        }
    }
}

fn partitions_of(c: &BaseConsumer, bootstrap: &str, topic: &str) -> Result<Vec<i32>, OpsError> {
    let md = c
        .fetch_metadata(Some(topic), TIMEOUT)
        .map_err(kafka(bootstrap))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

fn topic_exists(c: &BaseConsumer, bootstrap: &str, topic: &str) -> Result<bool, OpsError> {
    Ok(!partitions_of(c, bootstrap, topic)?.is_empty())
}

// ---------------------------------------------------------------------------------
// Consumer groups

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub client_id: String,
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub state: String,
    pub members: Vec<GroupMember>,
}

pub fn describe_group(bootstrap: &str, group: &str) -> Result<GroupState, OpsError> {
    let c = client(bootstrap, None)?;
    let list = c
        .fetch_group_list(Some(group), TIMEOUT)
        .map_err(kafka(bootstrap))?;
    let Some(g) = list.groups().first() else {
        return Ok(GroupState {
            state: "Dead".into(),
            members: vec![],
        });
    };
    Ok(GroupState {
        state: g.state().to_string(),
        members: g
            .members()
            .iter()
            .map(|m| GroupMember {
                client_id: m.client_id().to_string(),
                host: m.client_host().to_string(),
            })
            .collect(),
    })
}

/// Waits up to `wait` for the group to have no members; refuses otherwise. A cleanly
/// stopped static member stays listed for the session timeout (10 s by default).
pub fn require_inactive(bootstrap: &str, group: &str, wait: Duration) -> Result<(), OpsError> {
    let deadline = Instant::now() + wait;
    loop {
        let g = describe_group(bootstrap, group)?;
        if g.members.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let who: Vec<String> = g
                .members
                .iter()
                .map(|m| format!("{} ({})", m.client_id, m.host))
                .collect();
            return Err(OpsError::Refused(format!(
                "group {group} is {} with {} active member(s): {}. Stop every instance of \
                 the application first (a stopped instance stays listed for the session \
                 timeout; --wait-secs waits for that)",
                g.state,
                who.len(),
                who.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The group's committed offset (and metadata) per partition of `topic`.
pub fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, (Option<i64>, String)>, OpsError> {
    let c = client(bootstrap, Some(group))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(&c, bootstrap, topic)? {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, TIMEOUT)
        .map_err(kafka(bootstrap))?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            let at = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), (at, e.metadata().to_string()))
        })
        .collect())
}

// ---------------------------------------------------------------------------------
// Reset and replay plans

/// Where to move the input offsets (Kafka's `--to-*` / `--by-duration` / `--shift-by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// Milliseconds since the epoch: the first record at or after it.
    Datetime(i64),
    /// `now - duration`.
    ByDuration(Duration),
    /// The same offset for every partition.
    Offset(i64),
    /// Explicit `(topic, partition, offset)`; partitions not named keep their position.
    Offsets(Vec<(String, i32, i64)>),
    ShiftBy(i64),
}

impl ResetTo {
    /// Parses `2026-11-27T10:00:00Z` (or with an offset) into epoch ms.
    pub fn datetime(s: &str) -> Result<Self, OpsError> {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| ResetTo::Datetime(d.timestamp_millis()))
            .map_err(|e| {
                OpsError::Input(format!(
                    "--to-datetime {s:?}: {e} (use RFC 3339, e.g. 2026-11-27T10:00:00Z)"
                ))
            })
    }

    /// Parses an ISO-8601 duration as Kafka's tool takes it (`PT10M`, `P1DT2H`) or a
    /// plain `90s` / `10m` / `2h` / `1d`.
    pub fn duration(s: &str) -> Result<Self, OpsError> {
        parse_duration(s).map(ResetTo::ByDuration).ok_or_else(|| {
            OpsError::Input(format!(
                "--by-duration {s:?}: use ISO 8601 (PT10M, P1DT2H) or 90s, 10m, 2h, 1d"
            ))
        })
    }

    /// Parses `topic:partition=offset`.
    pub fn explicit(specs: &[String]) -> Result<Self, OpsError> {
        let mut out = Vec::new();
        for s in specs {
            let parsed = s.rsplit_once('=').and_then(|(tp, o)| {
                let (t, p) = tp.rsplit_once(':')?;
                Some((t.to_string(), p.parse().ok()?, o.parse().ok()?))
            });
            out.push(parsed.ok_or_else(|| {
                OpsError::Input(format!("--to-offset {s:?}: use topic:partition=offset"))
            })?);
        }
        Ok(ResetTo::Offsets(out))
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(iso) = s.strip_prefix('P') {
        let (days, time) = match iso.split_once('T') {
            Some((d, t)) => (d, t),
            None => (iso, ""),
        };
        let mut secs = 0f64;
        let mut take = |part: &str, units: &[(char, f64)]| -> Option<()> {
            let mut num = String::new();
            for c in part.chars() {
                if c.is_ascii_digit() || c == '.' {
                    num.push(c);
                } else {
                    let mult = units.iter().find(|(u, _)| *u == c)?.1;
                    secs += num.parse::<f64>().ok()? * mult;
                    num.clear();
                }
            }
            num.is_empty().then_some(())
        };
        take(days, &[('D', 86400.0), ('W', 7.0 * 86400.0)])?;
        take(time, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
        return (secs > 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten();
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => return Some(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(mult).map(Duration::from_secs)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetKind {
    /// Offsets only; state is kept (kafka-consumer-groups --reset-offsets).
    Offsets,
    /// Rebuild: offsets to the start (emitting from the target), changelogs deleted,
    /// local state wiped (StreamsResetter + cleanUp, journal kept).
    Replay,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub low: i64,
    pub high: i64,
    /// The offset the group will restart from.
    pub target: i64,
    /// Replay: records from here on send their outputs again.
    pub emit_from: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    pub application_id: String,
    pub kind: ResetKind,
    pub group: GroupState,
    pub partitions: Vec<PartitionPlan>,
    /// Internal topics to delete, with their current record span.
    pub delete_topics: Vec<(String, i64)>,
    /// Topics kept on purpose (journal, DLQ), with why.
    pub keep_topics: Vec<(String, &'static str)>,
    pub wipe: Vec<(PathBuf, u64)>,
    /// The topology journals its inputs: the new offsets carry the `follow` mark, so a
    /// restart reads the whole journal even if the reprocessing is killed before its
    /// first commit (then the journal's tail holds only aborted records and would say
    /// nothing is left to follow).
    pub follow_journal: bool,
}

impl ResetPlan {
    /// Records to reprocess, and how many of them send outputs again.
    pub fn totals(&self) -> (i64, i64) {
        let mut reprocess = 0;
        let mut emit = 0;
        for p in &self.partitions {
            reprocess += (p.high - p.target).max(0);
            emit += (p.high - p.emit_from.unwrap_or(p.target)).max(0);
        }
        (reprocess, emit)
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub fn plan_reset(
    bootstrap: &str,
    topology: &Topology,
    to: &ResetTo,
    kind: ResetKind,
    state_dir: &Path,
) -> Result<ResetPlan, OpsError> {
    let app = &topology.application_id;
    let c = client(bootstrap, Some(app))?;
    let group = describe_group(bootstrap, app)?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut partitions = Vec::new();
    for topic in &topology.source_topics {
        let current = committed(bootstrap, app, topic)?;
        let ids = partitions_of(&c, bootstrap, topic)?;
        if ids.is_empty() {
            return Err(OpsError::Input(format!(
                "input topic {topic} does not exist"
            )));
        }
        // Offsets for a point in time, all partitions in one request.
        let at_time = match to {
            ResetTo::Datetime(t) => Some(*t),
            ResetTo::ByDuration(d) => {
                Some(now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
            }
            _ => None,
        };
        let by_time = match at_time {
            Some(t) => {
                let mut tpl = TopicPartitionList::new();
                for p in &ids {
                    tpl.add_partition_offset(topic, *p, Offset::Offset(t))
                        .map_err(kafka(bootstrap))?;
                }
                Some(
                    c.offsets_for_times(tpl, TIMEOUT)
                        .map_err(kafka(bootstrap))?,
                )
            }
            None => None,
        };
        for p in ids {
            let (low, high) = watermarks(&c, bootstrap, topic, p)?;
            let cur = current.get(&p).and_then(|(o, _)| *o);
            let wanted = match to {
                ResetTo::Earliest => low,
                ResetTo::Latest => high,
                ResetTo::Datetime(_) | ResetTo::ByDuration(_) => {
                    match by_time
                        .as_ref()
                        .and_then(|t| t.find_partition(topic, p))
                        .map(|e| e.offset())
                    {
                        Some(Offset::Offset(o)) => o,
                        // No record at or after the time: the end.
                        _ => high,
                    }
                }
                ResetTo::Offset(o) => *o,
                ResetTo::Offsets(list) => list
                    .iter()
                    .find(|(t, q, _)| t == topic && *q == p)
                    .map(|(_, _, o)| *o)
                    .unwrap_or(cur.unwrap_or(low)),
                ResetTo::ShiftBy(n) => cur.unwrap_or(low).saturating_add(*n),
            }
            .clamp(low, high);
            let (target, emit_from) = match kind {
                ResetKind::Offsets => (wanted, None),
                // Records the group never processed must send their outputs: the silent
                // part ends at the group's position at the latest.
                ResetKind::Replay => (low, Some(wanted.min(cur.unwrap_or(low)).max(low))),
            };
            partitions.push(PartitionPlan {
                topic: topic.clone(),
                partition: p,
                current: cur,
                low,
                high,
                target,
                emit_from,
            });
        }
    }
    let mut delete_topics = Vec::new();
    let mut keep_topics = Vec::new();
    let mut wipe = Vec::new();
    if kind == ResetKind::Replay {
        for topic in topology.internal_topics() {
            if topic_exists(&c, bootstrap, &topic)? {
                let mut span = 0;
                for p in partitions_of(&c, bootstrap, &topic)? {
                    let (low, high) = watermarks(&c, bootstrap, &topic, p)?;
                    span += high - low;
                }
                delete_topics.push((topic, span));
            }
        }
        if topology.journaled() {
            keep_topics.push((
                topology.journal_topic(),
                "the order to reprocess in (and the global reads)",
            ));
        }
        keep_topics.push((topology.dlq_topic(), "an output: dead letters stay"));
        let dir = state_dir.join(app);
        if dir.exists() {
            let size = dir_size(&dir);
            wipe.push((dir, size));
        }
    }
    Ok(ResetPlan {
        application_id: app.clone(),
        kind,
        group,
        partitions,
        delete_topics,
        keep_topics,
        wipe,
        follow_journal: topology.journaled(),
    })
}

impl fmt::Display for ResetPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ResetKind::Offsets => "reset offsets (state kept)",
            ResetKind::Replay => "replay (rebuild state from the inputs)",
        };
        writeln!(
            f,
            "application {}: {what}; group {} with {} member(s)",
            self.application_id,
            self.group.state,
            self.group.members.len()
        )?;
        let w = self
            .partitions
            .iter()
            .map(|p| p.topic.len())
            .max()
            .unwrap_or(5)
            .max(5);
        match self.kind {
            ResetKind::Offsets => writeln!(
                f,
                "  {:<w$} {:>4} {:>9} {:>9} {:>9} {:>9}",
                "TOPIC", "PART", "CURRENT", "NEW", "END", "TO-READ"
            )?,
            ResetKind::Replay => writeln!(
                f,
                "  {:<w$} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "TOPIC", "PART", "CURRENT", "RESTART", "EMIT-FROM", "END", "SILENT"
            )?,
        }
        for p in &self.partitions {
            let cur = p.current.map_or("-".to_string(), |o| o.to_string());
            match p.emit_from {
                None => writeln!(
                    f,
                    "  {:<w$} {:>4} {:>9} {:>9} {:>9} {:>9}",
                    p.topic,
                    p.partition,
                    cur,
                    p.target,
                    p.high,
                    (p.high - p.target).max(0)
                )?,
                Some(e) => writeln!(
                    f,
                    "  {:<w$} {:>4} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    p.topic,
                    p.partition,
                    cur,
                    p.target,
                    e,
                    p.high,
                    (e - p.target).max(0)
                )?,
            }
        }
        let (reprocess, emit) = self.totals();
        match self.kind {
            ResetKind::Offsets => {
                writeln!(f, "  offsets to read from the new positions: {reprocess}")?;
                writeln!(
                    f,
                    "  note: stores are kept; records read again meet state that already saw them"
                )?;
            }
            ResetKind::Replay => {
                writeln!(
                    f,
                    "  offsets to reprocess: {reprocess} ({} silently, rebuilding state; {emit} sending outputs again)",
                    reprocess - emit
                )?;
                for (t, span) in &self.delete_topics {
                    writeln!(f, "  delete internal topic {t} ({span} offsets)")?;
                }
                for (t, why) in &self.keep_topics {
                    writeln!(f, "  keep {t}: {why}")?;
                }
                for (d, size) in &self.wipe {
                    writeln!(
                        f,
                        "  wipe local state {} ({:.1} MiB)",
                        d.display(),
                        *size as f64 / (1 << 20) as f64
                    )?;
                }
                if self.wipe.is_empty() {
                    writeln!(
                        f,
                        "  no local state here: wipe the state directory of every other host too"
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Executes a plan: refuses while the group has members (waiting up to `wait`), commits
/// the new offsets, deletes the internal topics, wipes the local state.
pub fn execute_reset(bootstrap: &str, plan: &ResetPlan, wait: Duration) -> Result<(), OpsError> {
    let app = &plan.application_id;
    require_inactive(bootstrap, app, wait)?;
    let c = client(bootstrap, Some(app))?;
    let mut tpl = TopicPartitionList::new();
    for p in &plan.partitions {
        tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.target))
            .map_err(kafka(bootstrap))?;
        let marks = ReplayMarks {
            emit_from: p.emit_from.filter(|e| *e > p.target),
            follow: plan.follow_journal && p.target < p.high,
        };
        if let Some(metadata) = marks.encode()
            && let Some(mut e) = tpl.find_partition(&p.topic, p.partition)
        {
            e.set_metadata(metadata);
        }
    }
    if !plan.partitions.is_empty() {
        c.commit(&tpl, CommitMode::Sync)
            .map_err(|e| OpsError::Kafka {
                bootstrap: bootstrap.to_string(),
                reason: format!("committing the new offsets of group {app}: {e}"),
            })?;
    }
    if !plan.delete_topics.is_empty() {
        let names: Vec<&str> = plan.delete_topics.iter().map(|(t, _)| t.as_str()).collect();
        delete_topics(bootstrap, &names)?;
    }
    for (dir, _) in &plan.wipe {
        std::fs::remove_dir_all(dir).map_err(|e| OpsError::Io {
            path: dir.display().to_string(),
            reason: format!("cannot wipe: {e}"),
        })?;
    }
    Ok(())
}

/// Deletes topics and waits until the broker no longer lists them.
pub fn delete_topics(bootstrap: &str, names: &[&str]) -> Result<(), OpsError> {
    let admin: AdminClient<DefaultClientContext> = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(kafka(bootstrap))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OpsError::Input(e.to_string()))?;
    let results = rt
        .block_on(admin.delete_topics(names, &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
        .map_err(kafka(bootstrap))?;
    for r in results {
        if let Err((t, code)) = r
            && code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition
        {
            return Err(OpsError::Kafka {
                bootstrap: bootstrap.to_string(),
                reason: format!("deleting {t}: {code}"),
            });
        }
    }
    let c = client(bootstrap, None)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in names {
        while topic_exists(&c, bootstrap, t)? {
            if Instant::now() > deadline {
                return Err(OpsError::Kafka {
                    bootstrap: bootstrap.to_string(),
                    reason: format!("{t} still listed 60 s after its deletion"),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Lag

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagRow {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    /// The offset after the last committed data record (markers excluded).
    pub end: i64,
    pub metadata: String,
}

impl LagRow {
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(0)).max(0)
    }
}

/// Offset after the last record a read_committed consumer can read (transaction markers
/// and aborted records are not records): what "caught up" means for an EOS input.
pub fn data_end(bootstrap: &str, topic: &str, partition: i32) -> Result<i64, OpsError> {
    let c = reader(bootstrap)?;
    data_end_with(&c, bootstrap, topic, partition)
}

/// [`data_end`] of many partitions through one client.
pub fn data_ends(bootstrap: &str, partitions: &[(String, i32)]) -> Result<Vec<i64>, OpsError> {
    let c = reader(bootstrap)?;
    partitions
        .iter()
        .map(|(t, p)| data_end_with(&c, bootstrap, t, *p))
        .collect()
}

fn data_end_with(
    c: &BaseConsumer<Quiet>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Result<i64, OpsError> {
    Ok(
        last_records(c, bootstrap, topic, partition, 1)?.map_or_else(
            || {
                c.fetch_watermarks(topic, partition, TIMEOUT)
                    .map_or(0, |(low, _)| low)
            },
            |first| first + 1,
        ),
    )
}

/// The offset of the n-th last record a read_committed consumer can read in
/// `topic[partition]` (None if it holds none). The last offsets of a transactional
/// topic are markers, so "the last n" means reading back until n records were seen.
fn last_records(
    c: &BaseConsumer<Quiet>,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    n: i64,
) -> Result<Option<i64>, OpsError> {
    let (low, high) = watermarks(c, bootstrap, topic, partition)?;
    if high <= low || n <= 0 {
        return Ok(None);
    }
    let mut window = n.saturating_mul(4).saturating_add(60);
    loop {
        let from = (high - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(kafka(bootstrap))?;
        c.assign(&tpl).map_err(kafka(bootstrap))?;
        let mut seen = std::collections::VecDeque::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                return Err(OpsError::Kafka {
                    bootstrap: bootstrap.to_string(),
                    reason: format!("reading the end of {topic}[{partition}] timed out"),
                });
            }
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    seen.push_back(m.offset());
                    if seen.len() as i64 > n {
                        seen.pop_front();
                    }
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(kafka(bootstrap)(e)),
                None => {}
            }
        }
        if seen.len() as i64 == n || from == low {
            return Ok(seen.front().copied());
        }
        window = window.saturating_mul(16);
    }
}

pub fn lag(bootstrap: &str, topology: &Topology) -> Result<Vec<LagRow>, OpsError> {
    let app = &topology.application_id;
    let mut rows = Vec::new();
    for topic in &topology.source_topics {
        for (p, (at, metadata)) in committed(bootstrap, app, topic)? {
            rows.push(LagRow {
                topic: topic.clone(),
                partition: p,
                committed: at,
                end: data_end(bootstrap, topic, p)?,
                metadata,
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------
// Local stores

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStore {
    pub application_id: String,
    pub partition: i32,
    pub store: String,
    pub path: PathBuf,
}

/// Every store partition under `state_dir` (`<app>/<partition>/<store>`), optionally of
/// one application.
pub fn local_stores(state_dir: &Path, app: Option<&str>) -> Vec<LocalStore> {
    let mut out = Vec::new();
    let Ok(apps) = std::fs::read_dir(state_dir) else {
        return out;
    };
    for a in apps.flatten() {
        let name = a.file_name().to_string_lossy().to_string();
        if app.is_some_and(|want| want != name) || !a.path().is_dir() {
            continue;
        }
        let Ok(parts) = std::fs::read_dir(a.path()) else {
            continue;
        };
        for p in parts.flatten() {
            let Ok(partition) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue; // "global", topology.json
            };
            let Ok(stores) = std::fs::read_dir(p.path()) else {
                continue;
            };
            for s in stores.flatten() {
                if s.path().is_dir() {
                    out.push(LocalStore {
                        application_id: name.clone(),
                        partition,
                        store: s.file_name().to_string_lossy().to_string(),
                        path: s.path(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.application_id, &a.store, a.partition).cmp(&(&b.application_id, &b.store, b.partition))
    });
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSummary {
    pub store: LocalStore,
    pub keys: u64,
    pub bytes: u64,
    pub checkpoint: Option<i64>,
    pub digest: Digest,
}

pub fn summarize(store: &LocalStore) -> Result<StoreSummary, OpsError> {
    let db = RocksDbBackend::open_read_only(&store.store, &store.path)?;
    let entries = db.entries()?;
    Ok(StoreSummary {
        store: store.clone(),
        keys: entries.len() as u64,
        bytes: dir_size(&store.path),
        checkpoint: db.checkpoint()?,
        digest: Digest::of(&entries),
    })
}

/// Looks `key` up in every local partition of `app`'s `store`.
pub fn get_key(
    state_dir: &Path,
    app: &str,
    store: &str,
    key: &[u8],
) -> Result<Vec<(i32, Vec<u8>)>, OpsError> {
    let mut found = Vec::new();
    for s in local_stores(state_dir, Some(app)) {
        if s.store != store {
            continue;
        }
        let db = RocksDbBackend::open_read_only(&s.store, &s.path)?;
        if let Some(v) = db.get(key)? {
            found.push((s.partition, v));
        }
    }
    Ok(found)
}

// ---------------------------------------------------------------------------------
// Digests and comparisons

/// A store's content in two numbers: its key count and a hash over its sorted (key,
/// value) pairs. Equal digests mean equal stores, byte for byte (up to 64-bit hash
/// collisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digest {
    pub keys: u64,
    pub hash: u64,
}

fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in (bytes.len() as u64).to_be_bytes().iter().chain(bytes) {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100000001b3);
    }
}

impl Digest {
    pub fn of(entries: &[Entry]) -> Self {
        let mut hash = 0xcbf29ce484222325;
        for (k, v) in entries {
            fnv(&mut hash, k);
            fnv(&mut hash, v);
        }
        Self {
            keys: entries.len() as u64,
            hash,
        }
    }

    /// Combines partition digests (in partition order) into the store's.
    pub fn combine(parts: &[Digest]) -> Self {
        let mut hash = 0xcbf29ce484222325;
        for d in parts {
            fnv(&mut hash, &d.hash.to_be_bytes());
        }
        Self {
            keys: parts.iter().map(|d| d.keys).sum(),
            hash,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x} ({} keys)", self.hash, self.keys)
    }
}

/// Per-key comparison of two views of one store partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    pub matching: u64,
    pub differing: u64,
    pub only_left: u64,
    pub only_right: u64,
    /// The first few keys that differ, with how.
    pub first_differences: Vec<String>,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.differing == 0 && self.only_left == 0 && self.only_right == 0
    }
}

fn key_hash(v: &[u8]) -> u64 {
    let mut h = 0xcbf29ce484222325;
    fnv(&mut h, v);
    h
}

pub fn compare(left: &[Entry], right: &[Entry]) -> Comparison {
    let l: BTreeMap<&[u8], u64> = left
        .iter()
        .map(|(k, v)| (k.as_slice(), key_hash(v)))
        .collect();
    let r: BTreeMap<&[u8], u64> = right
        .iter()
        .map(|(k, v)| (k.as_slice(), key_hash(v)))
        .collect();
    let mut c = Comparison::default();
    let note = |c: &mut Comparison, s: String| {
        if c.first_differences.len() < 5 {
            c.first_differences.push(s);
        }
    };
    for (k, lh) in &l {
        match r.get(k) {
            Some(rh) if rh == lh => c.matching += 1,
            Some(_) => {
                c.differing += 1;
                note(&mut c, format!("{} differs", String::from_utf8_lossy(k)));
            }
            None => {
                c.only_left += 1;
                note(
                    &mut c,
                    format!("{} only in the first", String::from_utf8_lossy(k)),
                );
            }
        }
    }
    for k in r.keys() {
        if !l.contains_key(k) {
            c.only_right += 1;
            note(
                &mut c,
                format!("{} only in the second", String::from_utf8_lossy(k)),
            );
        }
    }
    c
}

// ---------------------------------------------------------------------------------
// Verify

/// One store partition seen three ways.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub application_id: String,
    pub store: String,
    pub partition: i32,
    pub replayed: Digest,
    pub changelog: Digest,
    pub local: Option<Digest>,
    /// Replay (from the inputs) against the changelog (the committed state).
    pub replay_vs_changelog: Comparison,
    /// The local state directory against the changelog, where this host has it.
    pub local_vs_changelog: Option<Comparison>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.replay_vs_changelog.equal()
            && self
                .local_vs_changelog
                .as_ref()
                .is_none_or(Comparison::equal)
    }
}

/// Rebuilds every store of `topology` into `shadow_dir` — by reprocessing the inputs up
/// to the group's committed offsets, and from the changelogs — and compares both with
/// each other and with the local state, key by key. Refuses while the application runs
/// (its state would move under the comparison).
pub fn verify(
    bootstrap: &str,
    topology: &Topology,
    partitions: i32,
    state_dir: &Path,
    shadow_dir: &Path,
    progress: &mut dyn FnMut(&str, u64),
) -> Result<(Vec<Verdict>, shadow::RebuildStats), OpsError> {
    let app = &topology.application_id;
    require_inactive(bootstrap, app, Duration::ZERO)?;
    let mut committed_by_topic = Vec::new();
    for topic in &topology.source_topics {
        committed_by_topic.push(committed(bootstrap, app, topic)?);
    }
    let mut verdicts = Vec::new();
    let mut total = shadow::RebuildStats::default();
    for p in 0..partitions {
        let until: Vec<i64> = committed_by_topic
            .iter()
            .map(|c| c.get(&p).and_then(|(o, _)| *o).unwrap_or(0))
            .collect();
        let label = format!("{app}[{p}]");
        let (rebuilt, stats) =
            shadow::rebuild_from_inputs(bootstrap, topology, p, &until, shadow_dir, &mut |n| {
                progress(&label, n)
            })?;
        total.records += stats.records;
        total.poison += stats.poison;
        total.journal_skipped += stats.journal_skipped;
        total.journal_unscripted += stats.journal_unscripted;
        for store in &topology.stores {
            let replayed = rebuilt[store].entries()?;
            let from_changelog =
                shadow::rebuild_from_changelog(bootstrap, topology, store, p, shadow_dir)?
                    .entries()?;
            let local_path = state_dir.join(app).join(p.to_string()).join(store);
            let local = if local_path.exists() {
                Some(RocksDbBackend::open_read_only(store, &local_path)?.entries()?)
            } else {
                None
            };
            verdicts.push(Verdict {
                application_id: app.clone(),
                store: store.clone(),
                partition: p,
                replayed: Digest::of(&replayed),
                changelog: Digest::of(&from_changelog),
                local: local.as_deref().map(Digest::of),
                replay_vs_changelog: compare(&replayed, &from_changelog),
                local_vs_changelog: local.as_deref().map(|l| compare(l, &from_changelog)),
            });
        }
    }
    Ok((verdicts, total))
}

// ---------------------------------------------------------------------------------
// Tail

/// Where `tail` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    Beginning,
    End,
    /// The last n records of each partition.
    Last(i64),
}

/// How a topic's values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// Confluent wire-format Avro, decoded with the writer's schema from the registry.
    Avro,
    /// A store changelog: the stored JSON.
    Json,
    /// The input journal: entries (input, offset, global reads).
    Journal,
    /// Anything else (a DLQ's raw bytes): UTF-8 if it is, else hex.
    Raw,
}

pub fn value_format(topic: &str, avro_topics: &[String]) -> ValueFormat {
    if avro_topics.iter().any(|t| t == topic) {
        ValueFormat::Avro
    } else if topic.ends_with("-changelog") {
        ValueFormat::Json
    } else if topic.ends_with("-journal") {
        ValueFormat::Journal
    } else {
        ValueFormat::Raw
    }
}

fn raw_json(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => {
            serde_json::Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}

/// One record as a JSON line; a value that cannot be decoded is shown with the reason
/// (and its bytes), never dropped.
pub fn render<M: Message>(
    m: &M,
    format: ValueFormat,
    serde: &erp_schemas::AvroSerde,
) -> serde_json::Value {
    let headers: serde_json::Map<String, serde_json::Value> = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), raw_json(h.value.unwrap_or_default())))
                .collect()
        })
        .unwrap_or_default();
    let mut out = serde_json::json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": m.timestamp().to_millis(),
        "key": m.key().map(raw_json),
    });
    if !headers.is_empty() {
        out["headers"] = serde_json::Value::Object(headers);
    }
    let Some(bytes) = m.payload() else {
        out["value"] = serde_json::Value::Null;
        return out;
    };
    match format {
        ValueFormat::Avro => match serde.decode_json(bytes) {
            Ok((id, name, json)) => {
                out["schema_id"] = id.into();
                out["record"] = name.into();
                out["value"] = json;
            }
            Err(e) => {
                out["error"] = e.to_string().into();
                out["value"] = raw_json(bytes);
            }
        },
        ValueFormat::Json => {
            out["value"] = serde_json::from_slice(bytes).unwrap_or_else(|_| raw_json(bytes));
        }
        ValueFormat::Journal => match journal::decode(bytes) {
            Ok(entries) => {
                out["value"] = entries
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "input": e.input,
                            "offset": e.offset,
                            "global_reads": e.reads.iter().map(|r| serde_json::json!({
                                "store": r.store,
                                "key": raw_json(&r.key),
                                "found": r.value.is_some(),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
            }
            Err(e) => {
                out["error"] = e.to_string().into();
            }
        },
        ValueFormat::Raw => out["value"] = raw_json(bytes),
    }
    out
}

/// Reads `topic` (every partition, read_committed) from `from`, handing each record
/// to `each` as JSON; stops at the end unless `follow`, or after `max` records, or
/// when `each` returns false.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailOptions {
    pub format: ValueFormat,
    pub from: TailFrom,
    pub follow: bool,
    pub max: Option<u64>,
}

pub fn tail(
    bootstrap: &str,
    serde: &erp_schemas::AvroSerde,
    topic: &str,
    options: TailOptions,
    each: &mut dyn FnMut(serde_json::Value) -> bool,
) -> Result<u64, OpsError> {
    let TailOptions {
        format,
        from,
        follow,
        max,
    } = options;
    let c = reader(bootstrap)?;
    let ids = {
        let meta = client(bootstrap, None)?;
        partitions_of(&meta, bootstrap, topic)?
    };
    if ids.is_empty() {
        return Err(OpsError::Input(format!("topic {topic} does not exist")));
    }
    let mut tpl = TopicPartitionList::new();
    let mut open = std::collections::HashSet::new();
    for p in &ids {
        let (low, high) = watermarks(&c, bootstrap, topic, *p)?;
        let at = match from {
            TailFrom::Beginning => low,
            TailFrom::End => high,
            TailFrom::Last(n) => last_records(&c, bootstrap, topic, *p, n)?.unwrap_or(high),
        };
        if at < high {
            open.insert(*p);
        }
        tpl.add_partition_offset(topic, *p, Offset::Offset(at))
            .map_err(kafka(bootstrap))?;
    }
    c.assign(&tpl).map_err(kafka(bootstrap))?;
    let mut seen = 0u64;
    let mut at_end = std::collections::HashSet::new();
    loop {
        if max.is_some_and(|m| seen >= m) || (!follow && open.is_subset(&at_end)) {
            return Ok(seen);
        }
        match c.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Ok(m)) if follow => {
                // New records after an end: that partition is open again.
                at_end.remove(&m.partition());
                seen += 1;
                if !each(render(&m, format, serde)) {
                    return Ok(seen);
                }
            }
            Some(Err(e)) => return Err(kafka(bootstrap)(e)),
            Some(Ok(m)) => {
                seen += 1;
                if !each(render(&m, format, serde)) {
                    return Ok(seen);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_kafkas_tool_and_plainly() {
        let d = |s| parse_duration(s);
        assert_eq!(d("PT10M"), Some(Duration::from_secs(600)));
        assert_eq!(d("P1DT2H"), Some(Duration::from_secs(86400 + 7200)));
        assert_eq!(d("PT0.5S"), Some(Duration::from_millis(500)));
        assert_eq!(d("90s"), Some(Duration::from_secs(90)));
        assert_eq!(d("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(d("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(d("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(d("10x"), None);
        assert_eq!(d("PT"), None);
        assert_eq!(d("P1X"), None);
        // Absurd values are refused, not a panic.
        assert_eq!(d("99999999999999999999d"), None);
        assert_eq!(d("18446744073709551615d"), None);
        assert_eq!(d("P99999999999999999999999999D"), None);
    }

    #[test]
    fn explicit_offsets_and_datetimes_parse_or_say_why_not() {
        assert_eq!(
            ResetTo::explicit(&["orders:3=42".into(), "a:b:0=1".into()]).unwrap(),
            ResetTo::Offsets(vec![("orders".into(), 3, 42), ("a:b".into(), 0, 1)])
        );
        assert!(ResetTo::explicit(&["orders=1".into()]).is_err());
        assert_eq!(
            ResetTo::datetime("2026-11-27T10:00:00Z").unwrap(),
            ResetTo::Datetime(1_795_773_600_000)
        );
        let err = ResetTo::datetime("yesterday").unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn digests_see_every_byte_and_comparisons_name_the_keys() {
        let a: Vec<Entry> = vec![
            (b"k1".to_vec(), b"v".to_vec()),
            (b"k2".to_vec(), b"w".to_vec()),
        ];
        let mut b = a.clone();
        assert_eq!(Digest::of(&a), Digest::of(&b));
        b[1].1 = b"x".to_vec();
        b.push((b"k3".to_vec(), vec![]));
        assert_ne!(Digest::of(&a), Digest::of(&b));
        // Concatenation ambiguity: ("ab","c") vs ("a","bc") hash differently.
        assert_ne!(
            Digest::of(&[(b"ab".to_vec(), b"c".to_vec())]),
            Digest::of(&[(b"a".to_vec(), b"bc".to_vec())])
        );
        let c = compare(&a, &b);
        assert_eq!(
            (c.matching, c.differing, c.only_left, c.only_right),
            (1, 1, 0, 1)
        );
        assert_eq!(
            c.first_differences,
            vec!["k2 differs", "k3 only in the second"]
        );
        assert!(!c.equal());
        assert!(compare(&a, &a).equal());
    }

    #[test]
    fn topics_are_shown_by_what_they_hold() {
        let avro = vec!["order-events".to_string()];
        assert_eq!(value_format("order-events", &avro), ValueFormat::Avro);
        assert_eq!(
            value_format("erp-order-orders-changelog", &avro),
            ValueFormat::Json
        );
        assert_eq!(
            value_format("erp-order-journal", &avro),
            ValueFormat::Journal
        );
        assert_eq!(value_format("erp-order-dlq", &avro), ValueFormat::Raw);
    }
}
