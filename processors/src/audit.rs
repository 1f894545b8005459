//! The saga's invariants, checked the way any downstream consumer sees the system: by
//! reading the event topics with `read_committed` from the beginning.
//!
//! - every order that was created ends in exactly one terminal event (Completed or
//!   Cancelled), and its status never changes after it;
//! - no event id appears twice on a topic, and an order's versions increase by one;
//! - money: per order, captured − refunded = the total of a completed order, 0 otherwise;
//! - stock: per SKU, no hold is left open (Σ reserved = Σ released + expired + sold),
//!   units sold − returned = the units of completed orders, and on hand never goes
//!   negative.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("kafka: {0}")]
    Kafka(String),
    #[error("{topic}@{partition}:{offset} does not decode: {reason}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
}

/// What the audit counted, and every invariant it found broken.
#[derive(Debug, Default, Clone)]
pub struct AuditReport {
    pub orders: usize,
    pub completed: usize,
    pub cancelled: usize,
    /// Orders without a terminal event yet.
    pub open: usize,
    pub cancel_reasons: BTreeMap<String, usize>,
    pub order_events: usize,
    pub payment_events: usize,
    pub inventory_events: usize,
    pub captured: Decimal,
    pub refunded: Decimal,
    pub completed_total: Decimal,
    pub units_sold: i64,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty() && self.open == 0
    }
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "orders {} = completed {} + cancelled {} + open {}",
            self.orders, self.completed, self.cancelled, self.open
        )?;
        for (reason, n) in &self.cancel_reasons {
            writeln!(f, "  cancelled {n:>6}  {reason}")?;
        }
        writeln!(
            f,
            "events: order {}, payment {}, inventory {}",
            self.order_events, self.payment_events, self.inventory_events
        )?;
        writeln!(
            f,
            "money: captured {} − refunded {} = {} (completed orders total {})",
            self.captured,
            self.refunded,
            self.captured - self.refunded,
            self.completed_total
        )?;
        writeln!(
            f,
            "stock: {} units sold to completed orders",
            self.units_sold
        )?;
        if self.violations.is_empty() {
            write!(f, "invariants: all hold")
        } else {
            writeln!(f, "invariants: {} violation(s)", self.violations.len())?;
            for v in self.violations.iter().take(20) {
                writeln!(f, "  - {v}")?;
            }
            Ok(())
        }
    }
}

/// Reaching a partition's end is how the reader knows it is done, not an error worth
/// logging (librdkafka also reports it as a global error).
pub struct EndIsNotAnError;

impl ClientContext for EndIsNotAnError {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(error, KafkaError::PartitionEOF(_))
            || matches!(error, KafkaError::Global(RDKafkaErrorCode::PartitionEOF));
        if !end {
            tracing::error!(%error, reason, "kafka client error");
        }
    }
}
impl ConsumerContext for EndIsNotAnError {}

fn read_all<T: DeserializeOwned>(
    bootstrap: &str,
    serde: &AvroSerde,
    topic: &str,
    kind: SchemaKind,
) -> Result<Vec<(String, T)>, AuditError> {
    let mut out = Vec::new();
    let mut undecodable = None;
    crate::check::read_topic(
        bootstrap,
        "erp-audit",
        topic,
        Duration::from_secs(120),
        |r| {
            if undecodable.is_some() {
                return;
            }
            match serde.decode(kind, r.value.as_deref().unwrap_or_default()) {
                Ok(value) => {
                    let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default());
                    out.push((key.into_owned(), value));
                }
                Err(e) => {
                    undecodable = Some(AuditError::Decode {
                        topic: topic.to_string(),
                        partition: r.partition,
                        offset: r.offset,
                        reason: e.to_string(),
                    })
                }
            }
        },
    )?;
    undecodable.map_or(Ok(out), Err)
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

/// Reads the topics once and checks every invariant.
pub fn audit(
    bootstrap: &str,
    serde: &AvroSerde,
    topics: &Topics,
) -> Result<AuditReport, AuditError> {
    let orders: Vec<(String, wire::OrderEvent)> = read_all(
        bootstrap,
        serde,
        &topics.order_events(),
        SchemaKind::OrderEvent,
    )?;
    let payments: Vec<(String, wire::PaymentEvent)> = read_all(
        bootstrap,
        serde,
        &topics.payment_events(),
        SchemaKind::PaymentEvent,
    )?;
    let inventory: Vec<(String, wire::InventoryEvent)> = read_all(
        bootstrap,
        serde,
        &topics.inventory_events(),
        SchemaKind::InventoryEvent,
    )?;
    let mut r = AuditReport {
        order_events: orders.len(),
        payment_events: payments.len(),
        inventory_events: inventory.len(),
        ..AuditReport::default()
    };
    let mut duplicates = |what: &str, ids: &mut dyn Iterator<Item = &String>| {
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id.clone()) {
                r.violations
                    .push(format!("{what} event {id} appears twice"));
            }
        }
    };
    duplicates("order", &mut orders.iter().map(|(_, e)| &e.event_id));
    duplicates("payment", &mut payments.iter().map(|(_, e)| &e.event_id));
    duplicates("inventory", &mut inventory.iter().map(|(_, e)| &e.event_id));

    struct OrderFacts {
        total: Decimal,
        lines: Vec<(String, i64)>,
        terminal: Option<&'static str>,
        terminals: usize,
        last_version: i64,
    }
    let mut facts: BTreeMap<String, OrderFacts> = BTreeMap::new();
    for (_, e) in &orders {
        if e.command_rejected.is_some() {
            continue; // rejections do not change the order
        }
        if let Some(c) = &e.order_created {
            facts.insert(
                e.order_id.clone(),
                OrderFacts {
                    total: dec(&c.total),
                    lines: c
                        .lines
                        .iter()
                        .map(|l| (l.sku.clone(), i64::from(l.quantity)))
                        .collect(),
                    terminal: None,
                    terminals: 0,
                    last_version: 0,
                },
            );
        }
        let Some(f) = facts.get_mut(&e.order_id) else {
            r.violations.push(format!(
                "order {} has events before OrderCreated",
                e.order_id
            ));
            continue;
        };
        if e.version != f.last_version + 1 {
            r.violations.push(format!(
                "order {} jumps from version {} to {}",
                e.order_id, f.last_version, e.version
            ));
        }
        f.last_version = e.version;
        if let Some(u) = &e.order_updated {
            f.total = dec(&u.total);
            f.lines = u
                .lines
                .iter()
                .map(|l| (l.sku.clone(), i64::from(l.quantity)))
                .collect();
        }
        let terminal = if e.order_completed.is_some() {
            Some("COMPLETED")
        } else if let Some(c) = &e.order_cancelled {
            let kind = c.reason.split([':', '(']).next().unwrap_or("").trim();
            *r.cancel_reasons.entry(kind.to_string()).or_default() += 1;
            Some("CANCELLED")
        } else {
            None
        };
        if let Some(t) = terminal {
            f.terminals += 1;
            f.terminal.get_or_insert(t);
        }
        if let (Some(t), Some(status)) = (f.terminal, &e.status)
            && status != t
        {
            r.violations.push(format!(
                "order {} changed status from {t} to {status}",
                e.order_id
            ));
        }
    }
    r.orders = facts.len();
    for (id, f) in &facts {
        match f.terminal {
            Some("COMPLETED") => r.completed += 1,
            Some(_) => r.cancelled += 1,
            None => r.open += 1,
        }
        if f.terminals > 1 {
            r.violations
                .push(format!("order {id} has {} terminal events", f.terminals));
        }
    }

    // Money per order.
    let mut net: HashMap<String, (Decimal, Decimal)> = HashMap::new();
    for (_, e) in &payments {
        let entry = net.entry(e.order_id.clone()).or_default();
        if let Some(c) = &e.payment_captured {
            entry.0 += dec(&c.amount);
        }
        if let Some(rf) = &e.payment_refunded {
            entry.1 += dec(&rf.amount);
        }
    }
    for (id, f) in &facts {
        let (captured, refunded) = net.get(id).copied().unwrap_or_default();
        r.captured += captured;
        r.refunded += refunded;
        let expected = match f.terminal {
            Some("COMPLETED") => {
                r.completed_total += f.total;
                f.total
            }
            Some(_) => Decimal::ZERO,
            None => continue,
        };
        if captured - refunded != expected {
            r.violations.push(format!(
                "order {id}: captured {captured} − refunded {refunded} ≠ {expected}"
            ));
        }
    }

    // Stock per SKU.
    #[derive(Default)]
    struct Sku {
        on_hand: i64,
        holds: i64,
        sold: i64,
    }
    let mut skus: BTreeMap<String, Sku> = BTreeMap::new();
    for (key, e) in &inventory {
        let s = skus.entry(key.clone()).or_default();
        if let Some(p) = &e.product_registered {
            s.on_hand += i64::from(p.on_hand);
        }
        if let Some(p) = &e.stock_restocked {
            s.on_hand += i64::from(p.quantity);
        }
        if let Some(p) = &e.stock_adjusted {
            s.on_hand += i64::from(p.to_quantity) - i64::from(p.from_quantity);
        }
        if let Some(p) = &e.stock_reserved {
            s.holds += i64::from(p.quantity);
        }
        if let Some(p) = &e.stock_released {
            s.holds -= i64::from(p.quantity);
        }
        if let Some(p) = &e.reservation_expired {
            s.holds -= i64::from(p.quantity);
        }
        if let Some(p) = &e.stock_committed {
            s.holds -= i64::from(p.quantity);
            s.sold += i64::from(p.quantity);
            s.on_hand -= i64::from(p.quantity);
        }
        if let Some(p) = &e.stock_returned {
            s.sold -= i64::from(p.quantity);
            s.on_hand += i64::from(p.quantity);
        }
        if s.on_hand < 0 || s.holds > s.on_hand {
            r.violations.push(format!(
                "{key} oversold: on hand {}, held {}",
                s.on_hand, s.holds
            ));
        }
    }
    let mut expected_sold: BTreeMap<String, i64> = BTreeMap::new();
    for f in facts.values().filter(|f| f.terminal == Some("COMPLETED")) {
        for (sku, q) in &f.lines {
            *expected_sold.entry(sku.clone()).or_default() += q;
        }
    }
    let settled = r.open == 0;
    for (key, s) in &skus {
        r.units_sold += s.sold;
        if settled && s.holds != 0 {
            r.violations.push(format!(
                "{key}: {} units still held after every order ended",
                s.holds
            ));
        }
        let want = expected_sold.get(key).copied().unwrap_or(0);
        if settled && s.sold != want {
            r.violations.push(format!(
                "{key}: {} units sold net of returns, completed orders bought {want}",
                s.sold
            ));
        }
    }
    Ok(r)
}

/// Audits until every order has ended and the compensations have settled (they follow
/// the terminal events asynchronously), or `timeout` passes; returns the last report.
pub fn audit_until_settled(
    bootstrap: &str,
    serde: &AvroSerde,
    topics: &Topics,
    timeout: Duration,
) -> Result<AuditReport, AuditError> {
    let deadline = Instant::now() + timeout;
    loop {
        let report = audit(bootstrap, serde, topics)?;
        if report.is_clean() || Instant::now() > deadline {
            return Ok(report);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
