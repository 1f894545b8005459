//! The analytics sink: event topics (read_committed) into PostgreSQL, exactly once.
//!
//! The consumer is assigned (not subscribed) every partition of the event topics at the
//! offsets stored in `sink_offsets`; each batch is one PostgreSQL transaction holding its
//! rows and the next offsets, so a crash anywhere resumes exactly after the last batch
//! that committed — nothing lost, nothing doubled, whatever Kafka's group offsets say.
//! Events are decoded with their writer's schema into JSON: a field added to a schema
//! lands in `event_store.event_data` without a code change. A value that cannot be
//! decoded goes to `sink_dead_letters` (with its bytes and the reason) in the same
//! transaction — exactly once — and the sink goes on. It is also sent to the Kafka
//! dead-letter topic (`erp-analytics-sink-dlq`) with Kafka Connect's `__connect.errors.*`
//! headers before the transaction commits: at least once there, like Connect's DLQ (a
//! crash between the two sends it again, with the same source coordinates).
//!
//! Each event becomes a few SQL statements planned up front ([`plan_event`], no I/O); a
//! batch's statements go to PostgreSQL pipelined (sent back to back, answered in
//! order), so a batch costs a handful of round trips instead of several per event.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use std::future::{Future, poll_fn};
use std::task::Poll;

use futures_util::future::{maybe_done, try_join_all};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, NoTls, Statement};

use erp_schemas::AvroSerde;
use erp_schemas::topics::Topics;

/// The schema, in order; each applied once (recorded in `sink_schema_migrations`).
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_analytics",
    include_str!("../migrations/0001_analytics.sql"),
)];

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Registry(String),
    #[error("runtime: {0}")]
    Io(#[from] std::io::Error),
    #[error("dead-letter topic: {0}")]
    DeadLetters(#[from] crate::PublishError),
}

impl SinkError {
    /// PostgreSQL refused the data: SQLSTATE class 22 (data exception) or 23 (integrity
    /// constraint). Anything else — a timeout, a deadlock, a missing table, a lost
    /// connection — is not the record's fault and must not turn it into a dead letter.
    fn is_refusal(&self) -> bool {
        matches!(self, SinkError::Postgres(e)
        if e.as_db_error().is_some_and(|d| {
            let code = d.code().code();
            code.starts_with("22") || code.starts_with("23")
        }))
    }
}

/// A schema name the sink can put in SQL unquoted (it is never taken from a record).
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

/// Applies the migrations not applied yet, each in its own transaction.
async fn migrate(pg: &mut Client) -> Result<Vec<&'static str>, SinkError> {
    pg.batch_execute(
        "SET client_min_messages TO warning;
         CREATE TABLE IF NOT EXISTS sink_schema_migrations (
             name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS sink_dead_letters (
             topic TEXT NOT NULL, partition INTEGER NOT NULL, kafka_offset BIGINT NOT NULL,
             reason TEXT NOT NULL, raw BYTEA, PRIMARY KEY (topic, partition, kafka_offset));",
    )
    .await?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let tx = pg.transaction().await?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM sink_schema_migrations WHERE name = $1",
                &[name],
            )
            .await?
            .is_some();
        if !done {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO sink_schema_migrations (name) VALUES ($1)",
                &[name],
            )
            .await?;
            applied.push(*name);
        }
        tx.commit().await?;
    }
    Ok(applied)
}

/// What the sink has written since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkStats {
    pub records: u64,
    pub batches: u64,
    pub dead_letters: u64,
}

pub struct AnalyticsSink {
    /// Drives the PostgreSQL connection; every database call is `block_on` here.
    rt: tokio::runtime::Runtime,
    pg: Client,
    consumer: BaseConsumer,
    /// The Kafka dead-letter topic's producer: its flush fails if a record was not
    /// acknowledged, so a batch never commits past a lost dead letter.
    dlq: crate::CommandPublisher,
    serde: Arc<AvroSerde>,
    topics: Topics,
    pub max_batch: usize,
    pub stats: SinkStats,
    /// The next offset to write per partition (stored in PostgreSQL, or the log's start).
    positions: HashMap<(String, i32), i64>,
    /// Prepared statements by SQL text: parsed once per connection.
    statements: HashMap<Cow<'static, str>, Statement>,
    /// Test hook (`ERP_SINK_HOLD_BATCH=N`): batch N writes its rows, then waits forever
    /// before committing, so a test can `kill -9` the sink inside an open transaction.
    hold_batch: Option<u64>,
}

/// The event topics the sink reads.
pub fn event_topics(topics: &Topics) -> Vec<String> {
    sources(topics).into_iter().map(|(t, _)| t).collect()
}

/// The topics the sink reads, and the aggregate each keys.
fn sources(topics: &Topics) -> Vec<(String, &'static str)> {
    vec![
        (topics.order_events(), "order"),
        (topics.payment_events(), "payment"),
        (topics.shipping_events(), "shipment"),
        (topics.inventory_events(), "product"),
        (topics.customer_events(), "customer"),
    ]
}

/// One SQL statement with its parameters, planned before any I/O.
pub struct Op {
    pub sql: Cow<'static, str>,
    pub params: Vec<Box<dyn ToSql + Sync + Send>>,
}

fn op(sql: &'static str, params: Vec<Box<dyn ToSql + Sync + Send>>) -> Op {
    Op {
        sql: Cow::Borrowed(sql),
        params,
    }
}

/// Prepares what `ops` need and not yet prepared, then runs them pipelined, in order.
async fn run_ops<C: GenericClient + Sync>(
    client: &C,
    statements: &mut HashMap<Cow<'static, str>, Statement>,
    ops: &[&Op],
) -> Result<(), SinkError> {
    let mut missing: Vec<&Cow<'static, str>> = ops
        .iter()
        .map(|o| &o.sql)
        .filter(|sql| !statements.contains_key(*sql))
        .collect();
    missing.sort();
    missing.dedup();
    let prepared = try_join_all(missing.iter().map(|sql| client.prepare(sql))).await?;
    for (sql, statement) in missing.into_iter().zip(prepared) {
        statements.insert(sql.clone(), statement);
    }
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = ops
        .iter()
        .map(|o| {
            o.params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect()
        })
        .collect();
    let statements = &*statements;
    // Every future is polled in plan order on each wake-up, so the requests leave in plan
    // order (PostgreSQL runs them in arrival order: an order's row before its lines and
    // its status); `MaybeDone` keeps a finished one's result until all are done.
    let mut pending: Vec<_> = ops
        .iter()
        .zip(&params)
        .map(|(o, p)| Box::pin(maybe_done(client.execute(&statements[&o.sql], p))))
        .collect();
    poll_fn(|cx| {
        let mut done = true;
        for f in pending.iter_mut() {
            done &= f.as_mut().poll(cx).is_ready();
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    for f in pending.iter_mut() {
        if let Some(Err(e)) = f.as_mut().take_output() {
            return Err(e.into());
        }
    }
    Ok(())
}

impl AnalyticsSink {
    /// Connects to PostgreSQL, works in `schema` (created if missing; with `fresh`,
    /// dropped first with every table in it), applies the migrations and assigns the
    /// event topics' partitions at the stored offsets.
    pub fn connect(
        bootstrap: &str,
        postgres_url: &str,
        schema: &str,
        fresh: bool,
        serde: Arc<AvroSerde>,
        topics: Topics,
    ) -> Result<Self, SinkError> {
        if !valid_schema_name(schema) {
            return Err(SinkError::Config(format!(
                "{schema:?} is not a schema name this sink uses (a-z, 0-9, _)"
            )));
        }
        if fresh && schema == "public" {
            return Err(SinkError::Config(
                "--fresh drops the whole schema: refused for `public`, which other things share"
                    .into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (pg, stored) = rt.block_on(async {
            let (mut pg, connection) = tokio_postgres::connect(postgres_url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "PostgreSQL connection lost");
                }
            });
            // One sink per schema: a second one would interleave batches, move offsets
            // back and miss the other's uncommitted rows. The lock goes with the session,
            // so a killed sink releases it.
            // A sink killed a moment ago may still hold it until PostgreSQL notices the
            // closed connection: wait a little before refusing.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let locked: bool = pg
                    .query_one(
                        "SELECT pg_try_advisory_lock(hashtext('erp-analytics-sink:' || $1::text))",
                        &[&schema],
                    )
                    .await?
                    .get(0);
                if locked {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(SinkError::Config(format!(
                        "another sink is writing schema {schema:?}; stop it first"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            if fresh {
                pg.batch_execute(&format!(
                    "SET client_min_messages TO warning; DROP SCHEMA IF EXISTS {schema} CASCADE"
                ))
                .await?;
            }
            pg.batch_execute(&format!(
                "SET client_min_messages TO warning;
                 CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
            ))
            .await?;
            let applied = migrate(&mut pg).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "migrations applied");
            }
            let stored: HashMap<(String, i32), i64> = pg
                .query(
                    "SELECT topic, partition, next_offset FROM sink_offsets",
                    &[],
                )
                .await?
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            Ok::<_, SinkError>((pg, stored))
        })?;
        let consumer: BaseConsumer = crate::kafka::client()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{}erp-analytics-sink", topics.prefix))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            // Never jump silently: a position outside the log is an error (below).
            .set("auto.offset.reset", "error")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut positions = HashMap::new();
        for (topic, _) in sources(&topics) {
            let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let partitions: Vec<i32> = md
                .topics()
                .iter()
                .flat_map(|t| t.partitions())
                .map(|p| p.id())
                .collect();
            if partitions.is_empty() {
                return Err(SinkError::Config(format!(
                    "event topic {topic} does not exist: run `erp setup` first"
                )));
            }
            for p in partitions {
                let key = (topic.clone(), p);
                let (low, high) = consumer.fetch_watermarks(&topic, p, Duration::from_secs(10))?;
                let at = match stored.get(&key) {
                    Some(o) if *o < low => {
                        return Err(SinkError::Config(format!(
                            "{topic}[{p}]: the sink stopped at offset {o} but the log now starts at {low} \
                             (retention deleted events it never wrote); run with --fresh to rebuild"
                        )));
                    }
                    Some(o) if *o > high => {
                        return Err(SinkError::Config(format!(
                            "{topic}[{p}]: the sink stopped at offset {o} but the log ends at {high} \
                             (the topic was recreated?); run with --fresh to rebuild"
                        )));
                    }
                    Some(o) => *o,
                    None => low,
                };
                tpl.add_partition_offset(&topic, p, Offset::Offset(at))?;
                positions.insert(key, at);
            }
        }
        consumer.assign(&tpl)?;
        let dlq = crate::CommandPublisher::new(bootstrap, serde.clone(), topics.clone())?;
        Ok(Self {
            rt,
            pg,
            consumer,
            dlq,
            serde,
            topics,
            max_batch: 500,
            stats: SinkStats::default(),
            positions,
            statements: HashMap::new(),
            hold_batch: std::env::var("ERP_SINK_HOLD_BATCH")
                .ok()
                .and_then(|v| v.parse().ok()),
        })
    }

    /// Every partition the sink reads.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        let mut v: Vec<_> = self.positions.keys().cloned().collect();
        v.sort();
        v
    }

    /// The next offset the sink will write for a partition: everything before it is in
    /// PostgreSQL.
    pub fn position(&self, topic: &str, partition: i32) -> i64 {
        self.positions
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Polls and writes batches until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), SinkError> {
        while !stop.load(Ordering::Relaxed) {
            self.poll_batch(Duration::from_millis(200))?;
        }
        Ok(())
    }

    /// Collects up to `max_batch` records for at most `linger`, then writes them (and
    /// their offsets) in one transaction. Returns how many records it wrote.
    pub fn poll_batch(&mut self, linger: Duration) -> Result<usize, SinkError> {
        let deadline = Instant::now() + linger;
        let mut batch: Vec<OwnedMessage> = Vec::new();
        while batch.len() < self.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.consumer.poll(left) {
                Some(Ok(m)) => batch.push(m.detach()),
                Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))) => {
                    return Err(SinkError::Config(
                        "a stored offset is outside its partition's log; run with --fresh to rebuild".into(),
                    ));
                }
                Some(Err(e)) => tracing::warn!(error = %e, "sink consumer"),
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        // The registry being away is not the records' fault: the batch waits for it
        // (nothing was committed), for up to 5 minutes.
        let mut backoff = Duration::from_millis(250);
        let gave_up = Instant::now() + Duration::from_secs(300);
        let dead = loop {
            let written = self.write_batch(&batch);
            if written.is_err() {
                // Nothing of the batch committed: the next poll must read it again.
                self.rewind(&batch);
            }
            match written {
                Err(SinkError::Registry(e)) if Instant::now() < gave_up => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "schema registry unavailable");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                other => break other?,
            }
        };
        self.stats.records += batch.len() as u64;
        self.stats.batches += 1;
        self.stats.dead_letters += dead;
        Ok(batch.len())
    }

    /// Seeks every partition of `batch` back to the last committed position.
    fn rewind(&self, batch: &[OwnedMessage]) {
        let mut seen = std::collections::HashSet::new();
        for m in batch {
            if seen.insert((m.topic(), m.partition())) {
                let at = self.position(m.topic(), m.partition());
                if let Err(e) = self.consumer.seek(
                    m.topic(),
                    m.partition(),
                    Offset::Offset(at),
                    Duration::from_secs(10),
                ) {
                    tracing::warn!(error = %e, topic = m.topic(), "seek back failed");
                }
            }
        }
    }

    /// One PostgreSQL transaction: the batch's rows, its dead letters and the next
    /// offsets. Returns the number of dead letters.
    fn write_batch(&mut self, batch: &[OwnedMessage]) -> Result<u64, SinkError> {
        let aggregates: HashMap<String, &'static str> = sources(&self.topics).into_iter().collect();
        // Decode and plan every record first: no I/O but the registry's (cached) schemas.
        let mut planned: Vec<(&OwnedMessage, Result<Plan, String>)> = Vec::new();
        for m in batch {
            let aggregate = aggregates.get(m.topic()).copied().unwrap_or("unknown");
            let plan = match m.payload().map(|b| self.serde.decode_json(b)) {
                None => Err("undecodable: no value (a tombstone)".to_string()),
                Some(Ok((_, _, value))) => {
                    plan_event(aggregate, m.topic(), m.partition(), m.offset(), &value).ok_or_else(
                        || "no payload: none of the envelope's event fields is set".into(),
                    )
                }
                Some(Err(e)) if e.is_retriable() => return Err(SinkError::Registry(e.to_string())),
                Some(Err(e)) => Err(format!("undecodable: {e}")),
            };
            planned.push((m, plan));
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for m in batch {
            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
        }
        let offsets: Vec<Op> = next
            .iter()
            .map(|((topic, partition), offset)| {
                op(
                    "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
                     ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                    vec![Box::new(topic.clone()), Box::new(*partition), Box::new(*offset)],
                )
            })
            .collect();
        let dead_letter = |m: &OwnedMessage, reason: &str| {
            op(
                "INSERT INTO sink_dead_letters (topic, partition, kafka_offset, reason, raw)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                vec![
                    Box::new(m.topic().to_string()),
                    Box::new(m.partition()),
                    Box::new(m.offset()),
                    Box::new(reason.to_string()),
                    Box::new(m.payload().map(<[u8]>::to_vec)),
                ],
            )
        };
        // Dead letters found while decoding, as rows.
        let undecodable: Vec<(&OwnedMessage, String, Op)> = planned
            .iter()
            .filter_map(|(m, plan)| {
                plan.as_ref()
                    .err()
                    .map(|r| (*m, r.clone(), dead_letter(m, r)))
            })
            .collect();
        let offsets: Vec<&Op> = offsets.iter().collect();
        let (pg, statements, dlq, topics) =
            (&mut self.pg, &mut self.statements, &self.dlq, &self.topics);
        let hold = self.hold_batch == Some(self.stats.batches + 1);
        let dead: Vec<(&OwnedMessage, String)> = self.rt.block_on(async {
            // Fast path: the whole batch in one transaction: the event rows and the
            // order statuses set-based, the other rows pipelined.
            let plans: Vec<&Plan> = planned
                .iter()
                .filter_map(|(_, plan)| plan.as_ref().ok())
                .collect();
            let events = (!plans.is_empty()).then(|| insert_events(&plans));
            let statuses = update_statuses(&plans);
            let ops: Vec<&Op> = events
                .iter()
                .chain(plans.iter().flat_map(|p| &p.ops))
                .chain(statuses.iter())
                .chain(undecodable.iter().map(|(_, _, o)| o))
                .collect();
            let tx = pg.transaction().await?;
            match run_ops(&tx, statements, &ops).await {
                Ok(()) if hold => {
                    eprintln!("sink: holding a batch of {} statements open (ERP_SINK_HOLD_BATCH)", ops.len());
                    loop {
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
                Ok(()) => {
                    let dead: Vec<(&OwnedMessage, String)> =
                        undecodable.iter().map(|(m, r, _)| (*m, r.clone())).collect();
                    send_dead_letters(dlq, topics, &dead)?;
                    run_ops(&tx, statements, &offsets).await?;
                    tx.commit().await?;
                    return Ok::<_, SinkError>(dead);
                }
                Err(e) if e.is_refusal() => {
                    tracing::warn!(error = %e, "a row was refused: writing the batch record by record");
                    tx.rollback().await?;
                }
                Err(e) => return Err(e),
            }
            // Careful path: each record in a savepoint; a refused one becomes a dead
            // letter and the rest of the batch goes on.
            let mut tx = pg.transaction().await?;
            let mut dead = Vec::new();
            for (m, plan) in &planned {
                let refused = match plan {
                    Ok(plan) => {
                        let sp = tx.savepoint("record").await?;
                        let single = plan.single();
                        let record: Vec<&Op> = single.iter().chain(&plan.ops).collect();
                        match run_ops(&sp, statements, &record).await {
                            Ok(()) => {
                                sp.commit().await?;
                                None
                            }
                            Err(e) if e.is_refusal() => {
                                sp.rollback().await?;
                                Some(format!("refused by PostgreSQL: {e}"))
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Err(reason) => Some(reason.clone()),
                };
                if let Some(reason) = refused {
                    run_ops(&tx, statements, &[&dead_letter(m, &reason)]).await?;
                    dead.push((*m, reason));
                }
            }
            send_dead_letters(dlq, topics, &dead)?;
            run_ops(&tx, statements, &offsets).await?;
            tx.commit().await?;
            Ok(dead)
        })?;
        self.positions.extend(next);
        Ok(dead.len() as u64)
    }
}

/// Sends the batch's dead letters to the Kafka DLQ and waits for them: they are in
/// Kafka before the offsets move past them. Only a batch PostgreSQL took sends them, so
/// a fast path that failed halfway does not send them twice.
fn send_dead_letters(
    dlq: &crate::CommandPublisher,
    topics: &Topics,
    dead: &[(&OwnedMessage, String)],
) -> Result<(), SinkError> {
    let topic = topics.analytics_sink_dlq();
    for (m, reason) in dead {
        tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "dead letter");
        let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
        dlq.send_record(
            &topic,
            m.key(),
            m.payload(),
            Utc::now().timestamp_millis(),
            &[
                ("__connect.errors.topic", m.topic()),
                ("__connect.errors.partition", &partition),
                ("__connect.errors.offset", &offset),
                ("__connect.errors.exception.message", reason),
            ],
        )?;
    }
    if !dead.is_empty() {
        dlq.flush()?;
    }
    Ok(())
}

const ENVELOPE: &[&str] = &[
    "event_id",
    "order_id",
    "sku",
    "customer_id",
    "version",
    "occurred_at",
    "correlation_id",
    "causation_id",
    "status",
];

/// The event's type: the one payload field of the envelope that is set (payloads are
/// records; a scalar field a newer schema added to the envelope is not one).
fn event_type(value: &Value) -> Option<(&str, &Value)> {
    value
        .as_object()?
        .iter()
        .find(|(k, v)| !ENVELOPE.contains(&k.as_str()) && v.is_object())
        .map(|(k, v)| (k.as_str(), v))
}

/// Envelope fields this sink does not know (added by a newer schema): kept in the
/// event's metadata, so nothing a producer sent is dropped.
fn unknown_fields(value: &Value) -> serde_json::Map<String, Value> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, v)| !ENVELOPE.contains(&k.as_str()) && !v.is_object() && !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn text<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get(field).and_then(Value::as_str)
}

fn money(v: &Value, field: &str) -> Option<Decimal> {
    text(v, field).and_then(|s| s.parse().ok())
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn uuid(s: Option<&str>) -> Option<uuid::Uuid> {
    s.and_then(|s| uuid::Uuid::parse_str(s).ok())
}

/// Boxes one statement parameter.
fn b<T: ToSql + Sync + Send + 'static>(v: T) -> Box<dyn ToSql + Sync + Send> {
    Box::new(v)
}

fn s(v: Option<&str>) -> Option<String> {
    v.map(str::to_string)
}

fn line_ops(order_id: Option<uuid::Uuid>, payload: &Value, first_line_no: i64) -> Vec<Op> {
    let lines = payload.get("lines").and_then(Value::as_array);
    lines
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, line)| {
            op(
                "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                vec![
                    b(order_id),
                    b((first_line_no + i as i64) as i32),
                    b(s(text(line, "sku"))),
                    b(line.get("quantity").and_then(Value::as_i64).unwrap_or(0) as i32),
                    b(money(line, "unit_price")),
                ],
            )
        })
        .collect()
}

/// An event's `event_store` row.
pub struct EventRow {
    id: Option<uuid::Uuid>,
    aggregate_type: String,
    aggregate_id: String,
    event_type: String,
    data: Value,
    metadata: Value,
    version: i64,
    occurred: DateTime<Utc>,
}

/// An order event's new status (the latest version wins).
pub struct StatusUpdate {
    order_id: Option<uuid::Uuid>,
    status: String,
    version: i64,
    at: DateTime<Utc>,
}

/// How one decoded event is stored: its `event_store` row, an order's new status, and
/// the other statements (rows of the analytics tables). A batch writes the rows and the
/// statuses set-based (one statement each) and the rest pipelined; a record on its own
/// (the careful path) as single statements.
pub struct Plan {
    pub event: EventRow,
    pub status: Option<StatusUpdate>,
    pub ops: Vec<Op>,
}

// A replay sends events again with the same ids: the first copy stays. An event that
// changed nothing (a refusal) carries the version its aggregate already had; the version
// column is the aggregate's history, so such an event is kept with a null version (the
// metadata keeps aggregate_version).
const INSERT_EVENT: &str = "INSERT INTO event_store (id, aggregate_type, aggregate_id, event_type,
                                  event_data, metadata, version, occurred_at)
         SELECT $1, $2, $3, $4, $5, $6,
                CASE WHEN EXISTS (SELECT 1 FROM event_store
                                  WHERE aggregate_type = $2 AND aggregate_id = $3 AND version = $7)
                     THEN NULL ELSE $7 END,
                $8
         ON CONFLICT DO NOTHING";

/// [`INSERT_EVENT`] for a whole batch; `dup` marks an event whose (aggregate, version)
/// an earlier event of the same batch already has.
const INSERT_EVENTS: &str = "INSERT INTO event_store (id, aggregate_type, aggregate_id, event_type,
                                  event_data, metadata, version, occurred_at)
         SELECT e.id, e.aggregate_type, e.aggregate_id, e.event_type, e.event_data, e.metadata,
                CASE WHEN e.dup OR EXISTS (SELECT 1 FROM event_store s
                                           WHERE s.aggregate_type = e.aggregate_type
                                             AND s.aggregate_id = e.aggregate_id
                                             AND s.version = e.version)
                     THEN NULL ELSE e.version END,
                e.occurred_at
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[],
                     $7::int8[], $8::timestamptz[], $9::bool[]) WITH ORDINALITY
              AS e(id, aggregate_type, aggregate_id, event_type, event_data, metadata, version,
                   occurred_at, dup, n)
         ORDER BY e.n
         ON CONFLICT DO NOTHING";

const UPDATE_STATUS: &str = "UPDATE orders SET status = $2, version = $3, updated_at = $4
                     WHERE id = $1 AND version < $3";

const UPDATE_STATUSES: &str = "UPDATE orders o SET status = u.status, version = u.version, updated_at = u.at
         FROM unnest($1::uuid[], $2::text[], $3::int8[], $4::timestamptz[]) AS u(id, status, version, at)
         WHERE o.id = u.id AND o.version < u.version";

impl Plan {
    /// The record's statements on their own (the careful path).
    pub fn single(&self) -> Vec<Op> {
        let e = &self.event;
        let mut ops = vec![op(
            INSERT_EVENT,
            vec![
                b(e.id),
                b(e.aggregate_type.clone()),
                b(e.aggregate_id.clone()),
                b(e.event_type.clone()),
                b(e.data.clone()),
                b(e.metadata.clone()),
                b(e.version),
                b(e.occurred),
            ],
        )];
        if let Some(u) = &self.status {
            ops.push(op(
                UPDATE_STATUS,
                vec![b(u.order_id), b(u.status.clone()), b(u.version), b(u.at)],
            ));
        }
        ops
    }
}

/// A batch's event rows in one statement.
fn insert_events(plans: &[&Plan]) -> Op {
    let mut seen: HashMap<(&str, &str, i64), Option<uuid::Uuid>> = HashMap::new();
    let dup: Vec<bool> = plans
        .iter()
        .map(|p| {
            let e = &p.event;
            let key = (
                e.aggregate_type.as_str(),
                e.aggregate_id.as_str(),
                e.version,
            );
            match seen.get(&key) {
                Some(first) => *first != e.id,
                None => {
                    seen.insert(key, e.id);
                    false
                }
            }
        })
        .collect();
    op(
        INSERT_EVENTS,
        vec![
            b(plans.iter().map(|p| p.event.id).collect::<Vec<_>>()),
            b(plans
                .iter()
                .map(|p| p.event.aggregate_type.clone())
                .collect::<Vec<_>>()),
            b(plans
                .iter()
                .map(|p| p.event.aggregate_id.clone())
                .collect::<Vec<_>>()),
            b(plans
                .iter()
                .map(|p| p.event.event_type.clone())
                .collect::<Vec<_>>()),
            b(plans
                .iter()
                .map(|p| p.event.data.clone())
                .collect::<Vec<_>>()),
            b(plans
                .iter()
                .map(|p| p.event.metadata.clone())
                .collect::<Vec<_>>()),
            b(plans.iter().map(|p| p.event.version).collect::<Vec<_>>()),
            b(plans.iter().map(|p| p.event.occurred).collect::<Vec<_>>()),
            b(dup),
        ],
    )
}

/// A batch's order statuses in one statement: per order, the latest version's.
fn update_statuses(plans: &[&Plan]) -> Option<Op> {
    let mut latest: HashMap<Option<uuid::Uuid>, &StatusUpdate> = HashMap::new();
    for u in plans.iter().filter_map(|p| p.status.as_ref()) {
        let entry = latest.entry(u.order_id).or_insert(u);
        if u.version > entry.version {
            *entry = u;
        }
    }
    if latest.is_empty() {
        return None;
    }
    let updates: Vec<&StatusUpdate> = latest.into_values().collect();
    Some(op(
        UPDATE_STATUSES,
        vec![
            b(updates.iter().map(|u| u.order_id).collect::<Vec<_>>()),
            b(updates.iter().map(|u| u.status.clone()).collect::<Vec<_>>()),
            b(updates.iter().map(|u| u.version).collect::<Vec<_>>()),
            b(updates.iter().map(|u| u.at).collect::<Vec<_>>()),
        ],
    ))
}

/// How one decoded event is stored. Pure: no I/O, so a batch's plans can be sent
/// pipelined. `None` for a value with no payload.
pub fn plan_event(
    aggregate: &'static str,
    topic: &str,
    partition: i32,
    offset: i64,
    value: &Value,
) -> Option<Plan> {
    let (kind, payload) = event_type(value)?;
    let kind = kind.to_string();
    let event_id = uuid(text(value, "event_id"));
    let aggregate_id = text(value, "order_id")
        .or_else(|| text(value, "sku"))
        .or_else(|| text(value, "customer_id"))
        .unwrap_or_default()
        .to_string();
    let version = value.get("version").and_then(Value::as_i64).unwrap_or(0);
    let occurred = at(value
        .get("occurred_at")
        .and_then(Value::as_i64)
        .unwrap_or(0));
    let mut metadata = json!({
        "correlation_id": value.get("correlation_id"),
        "causation_id": value.get("causation_id"),
        "topic": topic, "partition": partition, "offset": offset,
        "aggregate_version": version,
    });
    let extra = unknown_fields(value);
    if !extra.is_empty() {
        metadata["extra"] = Value::Object(extra);
    }
    let event = EventRow {
        id: event_id,
        aggregate_type: aggregate.to_string(),
        aggregate_id: aggregate_id.clone(),
        event_type: kind.clone(),
        data: payload.clone(),
        metadata,
        version,
        occurred,
    };
    let mut status = None;
    let mut ops = Vec::new();
    let id = uuid(Some(&aggregate_id));
    match (aggregate, kind.as_str()) {
        ("order", "order_created") => {
            ops.push(op(
                "INSERT INTO orders (id, customer_id, customer_tier, status, currency, subtotal,
                                     discount, tax, shipping_cost, total, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)
                 ON CONFLICT (id) DO NOTHING",
                vec![
                    b(id),
                    b(uuid(text(payload, "customer_id"))),
                    b(s(text(payload, "customer_tier"))),
                    b(text(value, "status").unwrap_or("CREATED").to_string()),
                    b(s(text(payload, "currency"))),
                    b(money(payload, "subtotal")),
                    b(money(payload, "discount")),
                    b(money(payload, "tax")),
                    b(money(payload, "shipping_cost")),
                    b(money(payload, "total")),
                    b(occurred),
                    b(version),
                ],
            ));
            ops.extend(line_ops(id, payload, 0));
        }
        ("order", kind) => {
            status = text(value, "status").map(|s| StatusUpdate {
                order_id: id,
                status: s.to_string(),
                version,
                at: occurred,
            });
            match kind {
                "order_updated" => {
                    // New lines and a new price replace the old ones.
                    ops.push(op(
                        "UPDATE orders SET subtotal = $2, discount = $3, tax = $4,
                                shipping_cost = $5, total = $6 WHERE id = $1",
                        vec![
                            b(id),
                            b(money(payload, "subtotal")),
                            b(money(payload, "discount")),
                            b(money(payload, "tax")),
                            b(money(payload, "shipping_cost")),
                            b(money(payload, "total")),
                        ],
                    ));
                    ops.push(op(
                        "DELETE FROM order_lines WHERE order_id = $1",
                        vec![b(id)],
                    ));
                    let first = payload
                        .get("first_line_no")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    ops.extend(line_ops(id, payload, first));
                }
                "order_completed" => ops.push(op(
                    "UPDATE orders SET completed_at = $2, total = coalesce($3, total) WHERE id = $1",
                    vec![b(id), b(occurred), b(money(payload, "total"))],
                )),
                "order_cancelled" => ops.push(op(
                    "UPDATE orders SET cancel_reason = $2 WHERE id = $1",
                    vec![b(id), b(s(text(payload, "reason")))],
                )),
                _ => {}
            }
        }
        ("payment", kind) => {
            let (status, amount_sql) = match kind {
                "payment_authorized" => (
                    "AUTHORIZED",
                    Some("UPDATE payments SET authorized = $2 WHERE order_id = $1"),
                ),
                "payment_captured" => (
                    "CAPTURED",
                    Some("UPDATE payments SET captured = $2 WHERE order_id = $1"),
                ),
                "payment_refunded" => (
                    "REFUNDED",
                    Some("UPDATE payments SET refunded = $2 WHERE order_id = $1"),
                ),
                "payment_voided" => ("VOIDED", None),
                "payment_failed" => ("DECLINED", None),
                "payment_capture_failed" => ("CAPTURE_FAILED", None),
                _ => return Some(Plan { event, status, ops }),
            };
            let amount = if kind == "payment_refunded" {
                money(payload, "total_refunded")
            } else {
                money(payload, "amount")
            };
            ops.push(op(
                "INSERT INTO payments (order_id, status, currency, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (order_id) DO UPDATE SET status = $2, updated_at = $4",
                vec![
                    b(id),
                    b(status.to_string()),
                    b(text(payload, "currency").unwrap_or("USD").to_string()),
                    b(occurred),
                ],
            ));
            if let (Some(sql), Some(amount)) = (amount_sql, amount) {
                ops.push(op(sql, vec![b(id), b(amount)]));
            }
        }
        ("shipment", kind) => {
            let status = match kind {
                "shipment_created" => "CREATED",
                "shipment_dispatched" => "DISPATCHED",
                "shipment_delivered" => "DELIVERED",
                "shipment_failed" => "FAILED",
                "shipment_cancelled" => "CANCELLED",
                _ => return Some(Plan { event, status, ops }),
            };
            ops.push(op(
                "INSERT INTO shipments (order_id, status, carrier, tracking, cost, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (order_id) DO UPDATE SET status = $2, updated_at = $6,
                   carrier = coalesce(EXCLUDED.carrier, shipments.carrier),
                   tracking = coalesce(EXCLUDED.tracking, shipments.tracking),
                   cost = coalesce(EXCLUDED.cost, shipments.cost)",
                vec![
                    b(id),
                    b(status.to_string()),
                    b(s(text(payload, "carrier"))),
                    b(s(text(payload, "tracking_number"))),
                    b(money(payload, "cost")),
                    b(occurred),
                ],
            ));
        }
        ("product", kind) => {
            let int = |f: &str| payload.get(f).and_then(Value::as_i64);
            let quantity = match kind {
                "stock_adjusted" => {
                    int("to_quantity").unwrap_or(0) - int("from_quantity").unwrap_or(0)
                }
                "stock_restocked"
                | "stock_reserved"
                | "stock_released"
                | "stock_committed"
                | "stock_returned"
                | "reservation_expired" => int("quantity").unwrap_or(0),
                _ => return Some(Plan { event, status, ops }),
            };
            ops.push(op(
                "INSERT INTO stock_movements (event_id, sku, warehouse, kind, quantity, order_id, occurred_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                vec![
                    b(event_id),
                    b(aggregate_id),
                    b(s(text(payload, "warehouse"))),
                    b(kind.to_string()),
                    b(quantity as i32),
                    b(uuid(text(payload, "order_id"))),
                    b(occurred),
                ],
            ));
        }
        _ => {}
    }
    Some(Plan { event, status, ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_created_event_plans_its_row_its_order_and_its_lines() {
        let v = json!({
            "event_id": "6f1c1b1e-0000-4000-8000-000000000009",
            "order_id": "6f1c1b1e-0000-4000-8000-000000000001",
            "version": 1, "occurred_at": 1_700_000_000_000_i64, "status": "CREATED",
            "channel": "web",
            "order_created": {"customer_id": "6f1c1b1e-0000-4000-8000-000000000002",
                "customer_tier": "GOLD", "currency": "USD", "total": "10.00",
                "lines": [{"sku": "A", "quantity": 1, "unit_price": "5.00"},
                          {"sku": "B", "quantity": 1, "unit_price": "5.00"}]}
        });
        let plan = plan_event("order", "t", 0, 7, &v).unwrap();
        assert_eq!(plan.event.event_type, "order_created");
        assert_eq!(plan.event.metadata["aggregate_version"], 1);
        let ops = &plan.ops;
        assert_eq!(ops.len(), 3, "order row, two lines");
        assert!(ops[0].sql.contains("INSERT INTO orders"));
        assert!(ops[1].sql.contains("order_lines") && ops[2].sql.contains("order_lines"));
        assert_eq!(
            plan.single().len(),
            1,
            "the event row (a new order has no status update)"
        );
        assert_eq!(
            event_type(&v).unwrap().0,
            "order_created",
            "a scalar field is not the payload"
        );
        assert_eq!(unknown_fields(&v)["channel"], "web");
    }

    #[test]
    fn events_the_tables_do_not_track_still_get_their_event_row() {
        let v = json!({"event_id": "6f1c1b1e-0000-4000-8000-000000000009", "customer_id": "c",
                       "version": 3, "occurred_at": 0, "customer_spend_recorded": {"total": "1.00"}});
        let plan = plan_event("customer", "t", 0, 0, &v).unwrap();
        assert!(plan.ops.is_empty() && plan.status.is_none());
        assert!(plan_event("order", "t", 0, 0, &json!({"event_id": "x"})).is_none());
    }

    #[test]
    fn a_batch_writes_each_orders_latest_status_once_and_marks_version_clashes() {
        let ev = |id: &str, version: i64, status: &str| {
            json!({"event_id": id, "order_id": "6f1c1b1e-0000-4000-8000-000000000001",
                   "version": version, "occurred_at": version, "status": status,
                   "order_paid": {"amount": "1.00"}})
        };
        let plans: Vec<Plan> = [
            ev("6f1c1b1e-0000-4000-8000-00000000000a", 3, "PAID"),
            ev("6f1c1b1e-0000-4000-8000-00000000000b", 5, "SHIPPED"),
            ev("6f1c1b1e-0000-4000-8000-00000000000c", 4, "CONFIRMED"),
            // A refusal carries the version the order already had.
            ev("6f1c1b1e-0000-4000-8000-00000000000d", 5, "SHIPPED"),
        ]
        .iter()
        .map(|v| plan_event("order", "t", 0, 0, v).unwrap())
        .collect();
        let refs: Vec<&Plan> = plans.iter().collect();
        let statuses = update_statuses(&refs).unwrap();
        assert_eq!(format!("{:?}", statuses.params[1]), r#"["SHIPPED"]"#);
        assert_eq!(format!("{:?}", statuses.params[2]), "[5]");
        let events = insert_events(&refs);
        assert_eq!(
            format!("{:?}", events.params[8]),
            "[false, false, false, true]"
        );
    }
}
