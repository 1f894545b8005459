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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement, Transaction};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use erp_schemas::AvroSerde;
use erp_schemas::topics::Topics;

/// The schema, in order; each applied once (recorded in `schema_migrations`).
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_analytics",
    include_str!("../migrations/0001_analytics.sql"),
)];

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] postgres::Error),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Registry(String),
}

/// A schema name the sink can put in SQL unquoted (it is never taken from a record).
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

/// Applies the migrations not applied yet, each in its own transaction.
pub fn migrate(pg: &mut Client) -> Result<Vec<&'static str>, SinkError> {
    pg.batch_execute(
        "SET client_min_messages TO warning;
         CREATE TABLE IF NOT EXISTS schema_migrations (
             name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS sink_dead_letters (
             topic TEXT NOT NULL, partition INTEGER NOT NULL, kafka_offset BIGINT NOT NULL,
             reason TEXT NOT NULL, raw BYTEA, PRIMARY KEY (topic, partition, kafka_offset));",
    )?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let mut tx = pg.transaction()?;
        let done = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE name = $1", &[name])?
            .is_some();
        if !done {
            tx.batch_execute(sql)?;
            tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name])?;
            applied.push(*name);
        }
        tx.commit()?;
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
    pg: Client,
    consumer: BaseConsumer,
    dlq: BaseProducer,
    serde: Arc<AvroSerde>,
    topics: Topics,
    pub max_batch: usize,
    pub stats: SinkStats,
    /// The next offset to write per partition (stored in PostgreSQL, or the log's start).
    positions: HashMap<(String, i32), i64>,
    statements: HashMap<String, Statement>,
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
        let mut pg = Client::connect(postgres_url, NoTls)?;
        if fresh {
            pg.batch_execute(&format!(
                "SET client_min_messages TO warning; DROP SCHEMA IF EXISTS {schema} CASCADE"
            ))?;
        }
        pg.batch_execute(&format!(
            "SET client_min_messages TO warning;
             CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
        ))?;
        let applied = migrate(&mut pg)?;
        if !applied.is_empty() {
            tracing::info!(?applied, "migrations applied");
        }
        let stored: HashMap<(String, i32), i64> = pg
            .query(
                "SELECT topic, partition, next_offset FROM sink_offsets",
                &[],
            )?
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("{}erp-analytics-sink", topics.prefix))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut positions = HashMap::new();
        for (topic, _) in sources(&topics) {
            let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                let key = (topic.clone(), p.id());
                let at = match stored.get(&key) {
                    Some(o) => *o,
                    None => {
                        consumer
                            .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?
                            .0
                    }
                };
                tpl.add_partition_offset(&topic, p.id(), Offset::Offset(at))?;
                positions.insert(key, at);
            }
        }
        if tpl.count() == 0 {
            return Err(SinkError::Config(
                "no event topic exists yet: run `erp setup` first".into(),
            ));
        }
        consumer.assign(&tpl)?;
        let dlq: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        Ok(Self {
            pg,
            consumer,
            dlq,
            serde,
            topics,
            max_batch: 500,
            stats: SinkStats::default(),
            positions,
            statements: HashMap::new(),
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
                Some(Err(e)) => tracing::warn!(error = %e, "sink consumer"),
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(0);
        }
        // The fast path writes the batch in one go; a row PostgreSQL refuses (a
        // constraint) sends the batch again record by record, each in a savepoint, so
        // only the refused record becomes a dead letter.
        // The registry being away is not the records' fault: the batch waits for it
        // (nothing was committed), for up to 5 minutes.
        let mut backoff = Duration::from_millis(250);
        let gave_up = Instant::now() + Duration::from_secs(300);
        let dead = loop {
            let written = match self.write_batch(&batch, false) {
                Err(SinkError::Postgres(e)) if e.as_db_error().is_some() => {
                    tracing::warn!(error = %e, "a row was refused: writing the batch record by record");
                    self.write_batch(&batch, true)
                }
                other => other,
            };
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

    /// One PostgreSQL transaction: the batch's rows, its dead letters and the next
    /// offsets. Returns the number of dead letters.
    fn write_batch(&mut self, batch: &[OwnedMessage], careful: bool) -> Result<u64, SinkError> {
        let aggregates: HashMap<String, &'static str> = sources(&self.topics).into_iter().collect();
        let dlq_topic = self.topics.analytics_sink_dlq();
        let mut tx = self.pg.transaction()?;
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        let mut dead = Vec::new();
        for m in batch {
            next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
            let aggregate = aggregates.get(m.topic()).copied().unwrap_or("unknown");
            let decoded = match m.payload().map(|b| self.serde.decode_json(b)) {
                None => Err("no value (a tombstone)".to_string()),
                Some(Ok(v)) => Ok(v),
                Some(Err(e)) if e.is_retriable() => return Err(SinkError::Registry(e.to_string())),
                Some(Err(e)) => Err(e.to_string()),
            };
            let refused = match decoded {
                Ok((_, _, value)) if careful => {
                    let mut sp = tx.savepoint("record")?;
                    let mut w = Writer {
                        tx: &mut sp,
                        statements: &mut self.statements,
                    };
                    match write_event(&mut w, aggregate, m, &value) {
                        Ok(()) => {
                            sp.commit()?;
                            None
                        }
                        Err(SinkError::Postgres(e)) if e.as_db_error().is_some() => {
                            sp.rollback()?;
                            Some(format!("refused by PostgreSQL: {e}"))
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok((_, _, value)) => {
                    let mut w = Writer {
                        tx: &mut tx,
                        statements: &mut self.statements,
                    };
                    write_event(&mut w, aggregate, m, &value)?;
                    None
                }
                Err(reason) => Some(format!("undecodable: {reason}")),
            };
            if let Some(reason) = refused {
                tx.execute(
                    "INSERT INTO sink_dead_letters (topic, partition, kafka_offset, reason, raw)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[
                        &m.topic(),
                        &m.partition(),
                        &m.offset(),
                        &reason,
                        &m.payload(),
                    ],
                )?;
                dead.push((m, reason));
            }
        }
        // Only a batch PostgreSQL took sends its dead letters (a fast path that failed
        // halfway must not send them twice); they are in Kafka before the offsets move
        // past them.
        for (m, reason) in &dead {
            tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), %reason, "dead letter");
            send_dead_letter(&self.dlq, &dlq_topic, m, reason)?;
        }
        if !dead.is_empty() {
            self.dlq.flush(Duration::from_secs(30))?;
        }
        for ((topic, partition), offset) in &next {
            tx.execute(
                "INSERT INTO sink_offsets (topic, partition, next_offset) VALUES ($1, $2, $3)
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                &[topic, partition, offset],
            )?;
        }
        tx.commit()?;
        self.positions.extend(next);
        Ok(dead.len() as u64)
    }
}

fn send_dead_letter(
    dlq: &BaseProducer,
    topic: &str,
    m: &OwnedMessage,
    reason: &str,
) -> Result<(), SinkError> {
    let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "__connect.errors.topic",
            value: Some(m.topic()),
        })
        .insert(Header {
            key: "__connect.errors.partition",
            value: Some(&partition),
        })
        .insert(Header {
            key: "__connect.errors.offset",
            value: Some(&offset),
        })
        .insert(Header {
            key: "__connect.errors.exception.message",
            value: Some(reason),
        });
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).headers(headers);
    if let Some(k) = m.key() {
        record = record.key(k);
    }
    if let Some(v) = m.payload() {
        record = record.payload(v);
    }
    loop {
        match dlq.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                dlq.poll(Duration::from_millis(20));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
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

/// A transaction with prepared statements: each SQL text is parsed once per
/// connection, not once per row (a round trip saved per statement).
struct Writer<'a, 'b> {
    tx: &'a mut Transaction<'b>,
    statements: &'a mut HashMap<String, Statement>,
}

impl Writer<'_, '_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, SinkError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, SinkError> {
        let s = self.statement(sql)?;
        Ok(self.tx.execute(&s, params)?)
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<postgres::Row>, SinkError> {
        let s = self.statement(sql)?;
        Ok(self.tx.query_opt(&s, params)?)
    }
}

fn insert_lines(
    tx: &mut Writer<'_, '_>,
    order_id: Option<uuid::Uuid>,
    payload: &Value,
    first_line_no: i64,
) -> Result<(), SinkError> {
    let lines = payload.get("lines").and_then(Value::as_array);
    for (i, line) in lines.into_iter().flatten().enumerate() {
        tx.execute(
            "INSERT INTO order_lines (order_id, line_no, sku, quantity, unit_price)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                &order_id,
                &((first_line_no + i as i64) as i32),
                &text(line, "sku"),
                &(line.get("quantity").and_then(Value::as_i64).unwrap_or(0) as i32),
                &money(line, "unit_price"),
            ],
        )?;
    }
    Ok(())
}

fn write_event(
    tx: &mut Writer<'_, '_>,
    aggregate: &str,
    m: &OwnedMessage,
    value: &Value,
) -> Result<(), SinkError> {
    let Some((kind, payload)) = event_type(value) else {
        return Ok(());
    };
    let event_id = uuid(text(value, "event_id"));
    let aggregate_id = text(value, "order_id")
        .or_else(|| text(value, "sku"))
        .or_else(|| text(value, "customer_id"))
        .unwrap_or_default();
    let version = value.get("version").and_then(Value::as_i64).unwrap_or(0);
    let occurred = at(value
        .get("occurred_at")
        .and_then(Value::as_i64)
        .unwrap_or(0));
    let mut metadata = json!({
        "correlation_id": value.get("correlation_id"),
        "causation_id": value.get("causation_id"),
        "topic": m.topic(), "partition": m.partition(), "offset": m.offset(),
    });
    let extra = unknown_fields(value);
    if !extra.is_empty() {
        metadata["extra"] = Value::Object(extra);
    }
    // A replay sends events again with the same ids: the first copy stays. An event
    // that changed nothing (a refusal) carries the version its aggregate already had;
    // the version column is the aggregate's history, so such an event is kept with a
    // null version (its aggregate_version is in the metadata).
    let insert = "INSERT INTO event_store (id, aggregate_type, aggregate_id, event_type,
                                  event_data, metadata, version, occurred_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING";
    let inserted = tx.execute(
        insert,
        &[
            &event_id,
            &aggregate,
            &aggregate_id,
            &kind,
            payload,
            &metadata,
            &version,
            &occurred,
        ],
    )?;
    if inserted == 0
        && tx
            .query_opt("SELECT 1 FROM event_store WHERE id = $1", &[&event_id])?
            .is_none()
    {
        let mut metadata = metadata;
        metadata["aggregate_version"] = version.into();
        tx.execute(
            insert,
            &[
                &event_id,
                &aggregate,
                &aggregate_id,
                &kind,
                payload,
                &metadata,
                &None::<i64>,
                &occurred,
            ],
        )?;
    }
    let id = uuid(Some(aggregate_id));
    match (aggregate, kind) {
        ("order", "order_created") => {
            tx.execute(
                "INSERT INTO orders (id, customer_id, customer_tier, status, currency, subtotal,
                                     discount, tax, shipping_cost, total, created_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12)
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &uuid(text(payload, "customer_id")),
                    &text(payload, "customer_tier"),
                    &text(value, "status").unwrap_or("CREATED"),
                    &text(payload, "currency"),
                    &money(payload, "subtotal"),
                    &money(payload, "discount"),
                    &money(payload, "tax"),
                    &money(payload, "shipping_cost"),
                    &money(payload, "total"),
                    &occurred,
                    &version,
                ],
            )?;
            insert_lines(tx, id, payload, 0)?;
        }
        ("order", _) => {
            if let Some(status) = text(value, "status") {
                tx.execute(
                    "UPDATE orders SET status = $2, version = $3, updated_at = $4
                     WHERE id = $1 AND version < $3",
                    &[&id, &status, &version, &occurred],
                )?;
            }
            match kind {
                "order_updated" => {
                    // New lines and a new price replace the old ones.
                    tx.execute(
                        "UPDATE orders SET subtotal = $2, discount = $3, tax = $4,
                                shipping_cost = $5, total = $6 WHERE id = $1",
                        &[
                            &id,
                            &money(payload, "subtotal"),
                            &money(payload, "discount"),
                            &money(payload, "tax"),
                            &money(payload, "shipping_cost"),
                            &money(payload, "total"),
                        ],
                    )?;
                    tx.execute("DELETE FROM order_lines WHERE order_id = $1", &[&id])?;
                    let first = payload
                        .get("first_line_no")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    insert_lines(tx, id, payload, first)?;
                }
                "order_completed" => {
                    tx.execute(
                        "UPDATE orders SET completed_at = $2, total = coalesce($3, total) WHERE id = $1",
                        &[&id, &occurred, &money(payload, "total")],
                    )?;
                }
                "order_cancelled" => {
                    tx.execute(
                        "UPDATE orders SET cancel_reason = $2 WHERE id = $1",
                        &[&id, &text(payload, "reason")],
                    )?;
                }
                _ => {}
            }
        }
        ("payment", kind) => {
            let (status, column) = match kind {
                "payment_authorized" => ("AUTHORIZED", Some("authorized")),
                "payment_captured" => ("CAPTURED", Some("captured")),
                "payment_refunded" => ("REFUNDED", Some("refunded")),
                "payment_voided" => ("VOIDED", None),
                "payment_failed" => ("DECLINED", None),
                "payment_capture_failed" => ("CAPTURE_FAILED", None),
                _ => return Ok(()),
            };
            let amount = if kind == "payment_refunded" {
                money(payload, "total_refunded")
            } else {
                money(payload, "amount")
            };
            let currency = text(payload, "currency").unwrap_or("USD");
            tx.execute(
                "INSERT INTO payments (order_id, status, currency, updated_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (order_id) DO UPDATE SET status = $2, updated_at = $4",
                &[&id, &status, &currency, &occurred],
            )?;
            if let (Some(column), Some(amount)) = (column, amount) {
                // The column name comes from the match above, never from the input.
                tx.execute(
                    &format!("UPDATE payments SET {column} = $2 WHERE order_id = $1"),
                    &[&id, &amount],
                )?;
            }
        }
        ("shipment", kind) => {
            let status = match kind {
                "shipment_created" => "CREATED",
                "shipment_dispatched" => "DISPATCHED",
                "shipment_delivered" => "DELIVERED",
                "shipment_failed" => "FAILED",
                "shipment_cancelled" => "CANCELLED",
                _ => return Ok(()),
            };
            tx.execute(
                "INSERT INTO shipments (order_id, status, carrier, tracking, cost, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (order_id) DO UPDATE SET status = $2, updated_at = $6,
                   carrier = coalesce(EXCLUDED.carrier, shipments.carrier),
                   tracking = coalesce(EXCLUDED.tracking, shipments.tracking),
                   cost = coalesce(EXCLUDED.cost, shipments.cost)",
                &[
                    &id,
                    &status,
                    &text(payload, "carrier"),
                    &text(payload, "tracking_number"),
                    &money(payload, "cost"),
                    &occurred,
                ],
            )?;
        }
        ("product", kind) => {
            let quantity = payload.get("quantity").and_then(Value::as_i64);
            let (quantity, warehouse) = match kind {
                "stock_adjusted" => (
                    payload
                        .get("to_quantity")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                        - payload
                            .get("from_quantity")
                            .and_then(Value::as_i64)
                            .unwrap_or(0),
                    text(payload, "warehouse"),
                ),
                "stock_restocked"
                | "stock_reserved"
                | "stock_released"
                | "stock_committed"
                | "stock_returned"
                | "reservation_expired" => (quantity.unwrap_or(0), text(payload, "warehouse")),
                _ => return Ok(()),
            };
            tx.execute(
                "INSERT INTO stock_movements (event_id, sku, warehouse, kind, quantity, order_id, occurred_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                &[
                    &event_id,
                    &aggregate_id,
                    &warehouse,
                    &kind,
                    &(quantity as i32),
                    &uuid(text(payload, "order_id")),
                    &occurred,
                ],
            )?;
        }
        _ => {}
    }
    Ok(())
}
