//! The analytics sink on the real broker and PostgreSQL:
//! - `kill -9` in the middle of a load, restart, and every event of the event topics is
//!   a row exactly once; the payment reconciliation balances for every order;
//! - README's analytics queries give the numbers the event topics give;
//! - poison records go to the dead letters (table and Kafka topic) and an event written
//!   with a newer schema (an added optional field) is stored like any other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;

use erp_connectors::generator::{Generator, Shape};
use erp_connectors::sample::{self, Mix};
use erp_schemas::{SchemaKind, wire};
use erp_tests::process::{Instance, erp_command, seed_customers};
use erp_tests::{TestApp, eventually};

fn postgres_url() -> String {
    std::env::var("ERP_POSTGRES_URL").unwrap_or_else(|_| "postgres://erp@127.0.0.1:5433/erp".into())
}

/// Each test writes in its own PostgreSQL schema, named after its topic prefix.
fn schema(app: &TestApp) -> String {
    app.topics.prefix.replace('-', "_")
}

fn sink(app: &TestApp, args: &[&str]) -> Command {
    let mut c = erp_command(app, &[]);
    c.arg("sink")
        .args(args)
        .env("ERP_POSTGRES_URL", postgres_url())
        .env("ERP_POSTGRES_SCHEMA", schema(app));
    c
}

/// A sink whose batch number `batch` writes its rows and then waits, uncommitted, inside
/// its transaction (holding the schema's lock); returns once it is there.
fn held_sink(app: &TestApp, args: &[&str], batch: u32) -> std::process::Child {
    let mut child = sink(app, args)
        .env("ERP_SINK_HOLD_BATCH", batch.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("holding a batch") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("the sink did not reach batch {batch} within 60 s"));
    child
}

fn run_sink_until_caught_up(app: &TestApp) {
    let out = sink(app, &["--until-caught-up"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pg(app: &TestApp) -> postgres::Client {
    let mut pg = postgres::Client::connect(&postgres_url(), postgres::NoTls).unwrap();
    pg.batch_execute(&format!("SET search_path TO {}", schema(app)))
        .unwrap();
    pg
}

fn event_topics(app: &TestApp) -> [String; 5] {
    [
        app.topics.order_events(),
        app.topics.payment_events(),
        app.topics.shipping_events(),
        app.topics.inventory_events(),
        app.topics.customer_events(),
    ]
}

#[test]
fn kill_dash_nine_of_the_sink_neither_loses_nor_doubles_a_row() {
    let app = TestApp::new("sink");
    let state = app.state_path();
    let instance = Instance::spawn(&app, "i1", &state);
    instance.wait_ready();
    let mut rng = sample::Rng::new(5);
    let customers = seed_customers(&app, &[&instance], &mut rng, 10);
    let p = app.publisher();
    for cmd in sample::products(&mut rng, 6, 1000, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    let carrier = app.carrier();
    let orders: Vec<_> = (0..150)
        .map(|i| sample::order(&mut rng, 6, &customers, Mix::ACCEPTANCE, 1000 + i).command)
        .collect();
    for o in &orders {
        p.order(o).unwrap();
    }
    p.flush().unwrap();
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    carrier.stop().unwrap();
    instance.stop();

    // Every event, per aggregate, and the stock movements among them.
    let aggregates = ["order", "payment", "shipment", "product", "customer"];
    let per_aggregate: BTreeMap<String, i64> = event_topics(&app)
        .iter()
        .zip(aggregates)
        .map(|(t, a)| (a.to_string(), app.read_raw(t).len() as i64))
        .collect();
    let events: i64 = per_aggregate.values().sum();
    let movements = app
        .read::<wire::InventoryEvent>(&app.topics.inventory_events(), SchemaKind::InventoryEvent)
        .iter()
        .filter(|r| {
            let e = &r.value;
            e.stock_restocked.is_some()
                || e.stock_reserved.is_some()
                || e.stock_released.is_some()
                || e.stock_committed.is_some()
                || e.stock_returned.is_some()
                || e.reservation_expired.is_some()
                || e.stock_adjusted.is_some()
        })
        .count() as i64;

    // Batches of 100; the third writes its rows and waits before committing: the kill
    // lands inside an open transaction, with two batches committed.
    let mut first = held_sink(&app, &["--batch-size", "100"], 3);
    first.kill().unwrap();
    first.wait().unwrap();
    let mut pg = pg(&app);
    let count =
        |pg: &mut postgres::Client, sql: &str| -> i64 { pg.query_one(sql, &[]).unwrap().get(0) };
    let after_kill = count(&mut pg, "SELECT count(*) FROM event_store");
    assert!(
        (1..=200).contains(&after_kill) && after_kill < events,
        "two committed batches of at most 100, the held one rolled back: {after_kill} of {events}"
    );
    let stored_next: i64 = count(
        &mut pg,
        "SELECT coalesce(sum(next_offset), 0)::bigint FROM sink_offsets",
    );
    assert!(stored_next > 0, "offsets committed with the rows");

    run_sink_until_caught_up(&app);
    let rows: BTreeMap<String, i64> = pg
        .query(
            "SELECT aggregate_type, count(*) FROM event_store GROUP BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows, per_aggregate, "one row per event, per aggregate");
    assert_eq!(
        count(&mut pg, "SELECT count(*) FROM stock_movements"),
        movements,
        "one stock movement per stock-moving event"
    );
    assert_eq!(count(&mut pg, "SELECT count(*) FROM sink_dead_letters"), 0);

    let ids: Vec<uuid::Uuid> = orders
        .iter()
        .map(|o| uuid::Uuid::parse_str(&o.order_id).unwrap())
        .collect();
    let r = pg
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE balanced) FROM payment_reconciliation
             WHERE order_id = ANY($1)",
            &[&ids],
        )
        .unwrap();
    let (orders_seen, balanced): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(orders_seen as usize, orders.len());
    assert_eq!(
        balanced, orders_seen,
        "captured − refunded = total for every order"
    );
    let statuses: HashSet<String> = pg
        .query(
            "SELECT DISTINCT status FROM orders WHERE id = ANY($1)",
            &[&ids],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s == "COMPLETED" || s == "CANCELLED"),
        "{statuses:?}"
    );
}

/// README's ```sql blocks, by their first line (`-- title`).
fn readme_queries() -> BTreeMap<String, String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let mut out = BTreeMap::new();
    let mut block: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut block, line.trim_end()) {
            (None, "```sql") => block = Some(Vec::new()),
            (Some(b), "```") => {
                let title = b[0].trim_start_matches("-- ").to_string();
                out.insert(title, b[1..].join("\n"));
                block = None;
            }
            (Some(b), l) => b.push(l),
            _ => {}
        }
    }
    out
}

/// The word before any detail: "payment declined: card expired" → "payment declined".
fn reason_kind(reason: &str) -> String {
    reason
        .split([':', '('])
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

#[test]
fn readme_analytics_queries_match_the_event_topics() {
    let queries = readme_queries();
    let query = |prefix: &str| -> &String {
        queries
            .iter()
            .find(|(title, _)| title.starts_with(prefix))
            .map(|(_, q)| q)
            .unwrap_or_else(|| panic!("README has no query titled {prefix:?}: {queries:?}"))
    };
    let (by_tier, top_skus, reasons, reconciliation) = (
        query("revenue by tier"),
        query("top SKUs"),
        query("cancellation reasons"),
        query("payment reconciliation"),
    );

    let app = TestApp::new("sinksql");
    let instance = Instance::spawn(&app, "i1", &app.state_path());
    instance.wait_ready();
    let p = app.publisher();
    let mut generator = Generator::new(Shape {
        customers: 8,
        products: 6,
        stock: 400,
        orders: 160,
        seed: 23,
        mix: Mix::ACCEPTANCE,
        rate: Some(80.0),
        poison_pct: 0.0,
    });
    let catalogue = generator.catalogue(Some(&p), 1).unwrap();
    for id in &catalogue.customer_ids {
        let url = format!("http://127.0.0.1:{}/api/v1/customers/{id}", instance.port);
        eventually(Duration::from_secs(60), "customer visible", || {
            let v: serde_json::Value = reqwest::blocking::get(&url).ok()?.json().ok()?;
            (v["visible_to_orders"] == true).then_some(())
        });
    }
    let carrier = app.carrier();
    generator.orders(&p, &catalogue, |_| {}).unwrap();
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    carrier.stop().unwrap();
    run_sink_until_caught_up(&app);

    // The expected numbers, from the committed order events alone.
    let mut tier: HashMap<String, String> = HashMap::new();
    let mut lines: HashMap<String, Vec<wire::OrderLine>> = HashMap::new();
    let mut completed: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut cancelled: BTreeMap<String, String> = BTreeMap::new();
    for r in app.read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent) {
        let e = r.value;
        if let Some(c) = &e.order_created {
            tier.insert(e.order_id.clone(), c.customer_tier.clone());
            lines.insert(e.order_id.clone(), c.lines.clone());
        }
        if let Some(u) = &e.order_updated {
            lines.insert(e.order_id.clone(), u.lines.clone());
        }
        if let Some(c) = &e.order_completed {
            completed.insert(e.order_id.clone(), Decimal::from_str(&c.total).unwrap());
        }
        if let Some(c) = &e.order_cancelled {
            cancelled.insert(e.order_id.clone(), c.reason.clone());
        }
    }
    assert!(completed.len() > 50 && cancelled.len() > 10, "a mixed load");

    let mut pg = pg(&app);
    // Revenue by tier.
    let mut expected: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for (id, total) in &completed {
        let e = expected.entry(tier[id].clone()).or_default();
        e.0 += Decimal::ONE;
        e.1 += total;
    }
    let got: BTreeMap<String, (Decimal, Decimal)> = pg
        .query(by_tier.as_str(), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(got, expected, "revenue by tier");

    // Top SKUs.
    let mut units: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    for id in completed.keys() {
        for l in &lines[id] {
            let u = units.entry(l.sku.clone()).or_default();
            u.0 += i64::from(l.quantity);
            u.1 += Decimal::from(l.quantity) * Decimal::from_str(&l.unit_price).unwrap();
        }
    }
    let mut ranked: Vec<(String, i64, Decimal)> =
        units.into_iter().map(|(s, (u, v))| (s, u, v)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(5);
    let got: Vec<(String, i64, Decimal)> = pg
        .query(top_skus.as_str(), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got, ranked, "top SKUs");

    // Cancellation reasons.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for reason in cancelled.values() {
        *expected.entry(reason_kind(reason)).or_default() += 1;
    }
    let got: BTreeMap<String, i64> = pg
        .query(reasons.as_str(), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(got, expected, "cancellation reasons");
    assert!(got.len() >= 3, "several kinds of cancellation: {got:?}");

    // Reconciliation: every order balances.
    let got: BTreeMap<String, (i64, i64)> = pg
        .query(reconciliation.as_str(), &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let (c, x) = (completed.len() as i64, cancelled.len() as i64);
    assert_eq!(
        got,
        BTreeMap::from([
            ("CANCELLED".to_string(), (x, x)),
            ("COMPLETED".to_string(), (c, c))
        ]),
        "payment reconciliation"
    );
}

/// Registers `kind`'s schema with one more optional field at the end of the envelope
/// (a compatible evolution) under `topic`, and returns the new schema id.
fn register_evolved(app: &TestApp, topic: &str, kind: SchemaKind, field: &str) -> u32 {
    let mut schema: serde_json::Value = serde_json::from_str(kind.schema_json()).unwrap();
    schema["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": field, "type": ["null", "string"], "default": null}));
    let url = format!(
        "{}/subjects/{topic}-value/versions",
        app.settings.schema_registry_url
    );
    let body = serde_json::json!({ "schema": schema.to_string() });
    let resp = reqwest::blocking::Client::new()
        .post(&url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json")
        .json(&body)
        .send()
        .unwrap();
    let status = resp.status();
    let v: serde_json::Value = resp.json().unwrap();
    assert!(status.is_success(), "{status}: {v}");
    v["id"].as_u64().unwrap() as u32
}

/// Avro's zig-zag varint.
fn varint(n: i64, out: &mut Vec<u8>) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

#[test]
fn poison_records_go_to_the_dead_letters_and_a_newer_schema_keeps_working() {
    let app = TestApp::new("sinkpoison");
    let topic = app.topics.order_events();
    let order = uuid::Uuid::new_v4().to_string();
    let bad_order = uuid::Uuid::new_v4().to_string();
    let line = |quantity| wire::OrderLine {
        sku: "SKU-1".into(),
        product_name: "One".into(),
        quantity,
        unit_price: "10.00".into(),
        unit_weight_kg: None,
    };
    let created = |order_id: &str, quantity| {
        let mut e = wire::OrderEvent::empty(
            uuid::Uuid::new_v4().to_string(),
            order_id.to_string(),
            1,
            1_700_000_000_000,
        );
        e.status = Some("CREATED".into());
        e.order_created = Some(wire::OrderCreated {
            customer_id: uuid::Uuid::new_v4().to_string(),
            customer_tier: "BRONZE".into(),
            currency: "USD".into(),
            lines: vec![line(quantity)],
            shipping_address: wire::Address {
                street: "1 Main".into(),
                city: "X".into(),
                postal_code: "12345".into(),
                country: "US".into(),
            },
            subtotal: "20.00".into(),
            discount: "0.00".into(),
            tax: "2.00".into(),
            shipping_cost: "5.00".into(),
            total: "27.00".into(),
            payment_method: None,
            shipping_method: None,
            manual_confirmation: None,
        });
        app.serde
            .encode(&topic, SchemaKind::OrderEvent, &e)
            .unwrap()
    };
    let good = created(&order, 2);
    // Completed, written with a newer schema: the same datum plus the added field.
    let evolved_id = register_evolved(&app, &topic, SchemaKind::OrderEvent, "channel");
    let mut completed = wire::OrderEvent::empty(
        uuid::Uuid::new_v4().to_string(),
        order.clone(),
        2,
        1_700_000_001_000,
    );
    completed.status = Some("COMPLETED".into());
    completed.order_completed = Some(wire::OrderCompleted {
        total: "27.00".into(),
        customer_id: None,
        currency: Some("USD".into()),
    });
    let v1 = app
        .serde
        .encode(&topic, SchemaKind::OrderEvent, &completed)
        .unwrap();
    let mut evolved = vec![0];
    evolved.extend(evolved_id.to_be_bytes());
    evolved.extend(&v1[5..]);
    evolved.push(2); // union branch 1: string
    varint(3, &mut evolved);
    evolved.extend(b"web");

    let mut unknown_id = vec![0, 0x7f, 0xff, 0xff, 0x00];
    unknown_id.extend(&v1[5..]);
    let records: Vec<(&str, Vec<u8>)> = vec![
        ("good", good.clone()),
        ("bad magic", b"\x01not avro at all".to_vec()),
        ("unknown schema id", unknown_id),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("refused by a CHECK", created(&bad_order, 0)),
        ("evolved", evolved),
    ];
    let p = app.publisher();
    for (_, value) in &records {
        // One key: one partition, in this order.
        p.send_raw(&topic, order.as_bytes(), value, 1_700_000_000_000, &[])
            .unwrap();
    }
    p.flush().unwrap();
    run_sink_until_caught_up(&app);

    let mut pg = pg(&app);
    let dead: Vec<(i64, String)> = pg
        .query(
            "SELECT kafka_offset, reason FROM sink_dead_letters WHERE topic = $1 ORDER BY 1",
            &[&topic],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let offsets: Vec<i64> = dead.iter().map(|d| d.0).collect();
    assert_eq!(offsets, vec![1, 2, 3, 4], "{dead:#?}");
    assert!(dead[0].1.contains("magic byte"), "{}", dead[0].1);
    assert!(dead[1].1.contains("unknown schema id"), "{}", dead[1].1);
    assert!(dead[2].1.starts_with("undecodable"), "{}", dead[2].1);
    assert!(
        dead[3].1.starts_with("refused by PostgreSQL"),
        "{}",
        dead[3].1
    );

    // The Kafka DLQ holds the same records, raw, with Connect's headers.
    let dlq = app.read_raw(&app.topics.analytics_sink_dlq());
    let mut got: Vec<(i64, Vec<u8>)> = dlq
        .iter()
        .map(|r| {
            assert_eq!(r.headers["__connect.errors.topic"], topic);
            assert!(!r.headers["__connect.errors.exception.message"].is_empty());
            (
                r.headers["__connect.errors.offset"].parse().unwrap(),
                r.value.clone(),
            )
        })
        .collect();
    got.sort();
    let expected: Vec<(i64, Vec<u8>)> = (1..=4)
        .map(|o| (o, records[o as usize].1.clone()))
        .collect();
    assert_eq!(got, expected);

    // The good order: created, then completed through the newer schema.
    let order_id = uuid::Uuid::parse_str(&order).unwrap();
    let events: Vec<(String, Option<i64>, serde_json::Value)> = pg
        .query(
            "SELECT event_type, version, metadata FROM event_store WHERE aggregate_id = $1 ORDER BY version",
            &[&order],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1].0, "order_completed");
    assert_eq!(events[1].2["extra"]["channel"], "web");
    let status: String = pg
        .query_one("SELECT status FROM orders WHERE id = $1", &[&order_id])
        .unwrap()
        .get(0);
    assert_eq!(status, "COMPLETED");
    // The refused record left nothing behind.
    let n: i64 = pg
        .query_one(
            "SELECT count(*) FROM event_store WHERE aggregate_id = $1",
            &[&bad_order],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // An event topic holding poison by design must not outlive the test: other readers
    // (the third-party interop test) read every event topic on the broker.
    erp_processors::ops::delete_topics(&app.settings.bootstrap_servers, &[&topic]).unwrap();
}

#[test]
fn a_second_sink_on_the_same_schema_and_an_offset_outside_the_log_are_refused() {
    let app = TestApp::new("sinkguard");
    // A first sink holds its first batch open (and the schema's lock) …
    let p = app.publisher();
    let mut e = wire::OrderEvent::empty(
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
        1,
        1,
    );
    e.order_cancelled = Some(wire::OrderCancelled {
        reason: "test".into(),
        released_skus: vec![],
        compensations: None,
    });
    let topic = app.topics.order_events();
    let bytes = app
        .serde
        .encode(&topic, SchemaKind::OrderEvent, &e)
        .unwrap();
    p.send_raw(&topic, e.order_id.as_bytes(), &bytes, 1, &[])
        .unwrap();
    p.flush().unwrap();
    let mut first = held_sink(&app, &[], 1);
    // … so a second one refuses to start.
    let out = sink(&app, &["--until-caught-up"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another sink is writing schema"),
        "{stderr}"
    );
    first.kill().unwrap();
    first.wait().unwrap();

    // The first sink's batch never committed; once it is gone a sink writes the event.
    run_sink_until_caught_up(&app);
    let mut db = pg(&app);
    let n: i64 = db
        .query_one("SELECT count(*) FROM event_store", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);

    // A stored offset beyond the log (the topic was recreated, say) stops the sink
    // instead of skipping to wherever the consumer would land.
    db.execute(
        "UPDATE sink_offsets SET next_offset = next_offset + 1000",
        &[],
    )
    .unwrap();
    let out = sink(&app, &["--until-caught-up"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run with --fresh to rebuild"), "{stderr}");
    // --fresh rebuilds from the start.
    let out = sink(&app, &["--until-caught-up", "--fresh"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: i64 = pg(&app)
        .query_one("SELECT count(*) FROM event_store", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}
