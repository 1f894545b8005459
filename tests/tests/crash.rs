//! `kill -9` of the processor process in the middle of a load: after a restart, a
//! read_committed consumer sees exactly one terminal event per order, no event twice,
//! and stock is conserved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use erp_connectors::sample;
use erp_schemas::{SchemaKind, wire};
use erp_tests::{TestApp, eventually};

fn erp_binary() -> PathBuf {
    // target/<profile>/deps/crash-<hash> → target/<profile>/erp
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("erp");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bins`",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(app: &TestApp, port: u16) -> Child {
    Command::new(erp_binary())
        .arg("run")
        .env("ERP_BOOTSTRAP_SERVERS", &app.settings.bootstrap_servers)
        .env("ERP_SCHEMA_REGISTRY_URL", &app.settings.schema_registry_url)
        .env("ERP_STATE_DIR", app.state_path())
        .env("ERP_TOPIC_PREFIX", &app.topics.prefix)
        .env("ERP_PARTITIONS", app.settings.partitions.to_string())
        .env("ERP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn erp run")
}

fn wait_ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    eventually(Duration::from_secs(60), "the process to be ready", || {
        reqwest::blocking::get(&url)
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    });
}

/// Sum of a Prometheus counter across labels, from the process's /metrics.
fn metric_sum(port: u16, name: &str) -> f64 {
    let text = reqwest::blocking::get(format!("http://127.0.0.1:{port}/metrics"))
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn kill_dash_nine_mid_load_loses_nothing_and_duplicates_nothing() {
    let app = TestApp::new("crash");
    let n_products = 8;
    let stock = 60;
    let n_orders = 400;
    let port = free_port();
    let mut child = spawn(&app, port);
    wait_ready(port);

    let p = app.publisher();
    let mut rng = sample::Rng::new(99);
    for cmd in sample::products(&mut rng, n_products, stock, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    let orders: Vec<wire::OrderCommand> = (0..n_orders)
        .map(|i| sample::order(&mut rng, n_products, 1000 + i as i64))
        .collect();
    let (first, second) = orders.split_at(n_orders / 2);
    for o in first {
        p.order(o).unwrap();
    }
    p.flush().unwrap();

    // Kill once processing is visibly under way, mid-stream.
    let topic = app.topics.order_events();
    eventually(
        Duration::from_secs(60),
        "some outcomes before the kill",
        || {
            let n = app.read_raw(&topic).len();
            (n > 50).then_some(())
        },
    );
    for o in second {
        p.order(o).unwrap();
    }
    p.flush().unwrap();
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
    child.wait().unwrap();
    let done_at_kill = app
        .read::<wire::OrderEvent>(&topic, SchemaKind::OrderEvent)
        .iter()
        .filter(|r| r.value.order_confirmed.is_some() || r.value.order_cancelled.is_some())
        .count();
    assert!(
        done_at_kill < n_orders,
        "the kill must land mid-load ({done_at_kill} of {n_orders} done)"
    );

    let mut child = spawn(&app, port);
    wait_ready(port);
    // Crash-safe state: the restart restored only the changelog tail after the local
    // checkpoint, not the whole store (Kafka Streams under EOS would wipe and replay all).
    let restored = metric_sum(port, "erp_records_restored_total");
    let changelog_records: usize = ["order", "inventory"]
        .iter()
        .flat_map(|ctx| {
            let app_id = app.topics.application_id(ctx);
            let stores: &[&str] = if *ctx == "order" {
                &["orders", "processed-ids"]
            } else {
                &["products", "processed-ids"]
            };
            stores
                .iter()
                .map(move |s| format!("{app_id}-{s}-changelog"))
                .collect::<Vec<_>>()
        })
        .map(|t| app.read_raw(&t).len())
        .sum();
    eprintln!(
        "crash recovery: {restored} records restored; a full restore would read {changelog_records}"
    );
    assert!(changelog_records > 0);
    assert!(
        restored * 10.0 < changelog_records as f64,
        "restored {restored} of {changelog_records}"
    );
    let ids: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let events = eventually(
        Duration::from_secs(120),
        "every order to reach an outcome",
        || {
            let ev = app.read::<wire::OrderEvent>(&topic, SchemaKind::OrderEvent);
            let done: HashSet<String> = ev
                .iter()
                .filter(|r| r.value.order_confirmed.is_some() || r.value.order_cancelled.is_some())
                .map(|r| r.value.order_id.clone())
                .collect();
            ids.iter().all(|id| done.contains(*id)).then_some(ev)
        },
    );

    // Exactly one terminal event per order; no event id twice.
    let mut terminals: HashMap<&str, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for r in &events {
        assert!(
            seen.insert(r.value.event_id.clone()),
            "event {} appears twice",
            r.value.event_id
        );
        if r.value.order_confirmed.is_some() || r.value.order_cancelled.is_some() {
            *terminals.entry(r.value.order_id.as_str()).or_default() += 1;
        }
    }
    assert_eq!(
        terminals.len(),
        n_orders,
        "every order has a terminal event"
    );
    assert!(
        terminals.values().all(|n| *n == 1),
        "some order has more than one terminal event"
    );

    // Stock conserved: per SKU, reserved = Σ quantities of confirmed orders, on hand unchanged.
    let confirmed: HashSet<&str> = events
        .iter()
        .filter(|r| r.value.order_confirmed.is_some())
        .map(|r| r.value.order_id.as_str())
        .collect();
    let mut expected_reserved: BTreeMap<String, i64> = BTreeMap::new();
    for o in &orders {
        if confirmed.contains(o.order_id.as_str()) {
            for l in &o.place_order.as_ref().unwrap().lines {
                *expected_reserved.entry(l.sku.clone()).or_default() += i64::from(l.quantity);
            }
        }
    }
    let inventory = app
        .read::<wire::InventoryEvent>(&app.topics.inventory_events(), SchemaKind::InventoryEvent);
    let mut inv_ids = HashSet::new();
    for r in &inventory {
        assert!(
            inv_ids.insert(r.value.event_id.clone()),
            "inventory event {} twice",
            r.value.event_id
        );
    }
    for i in 0..n_products {
        let sku = sample::sku(i);
        let url = format!("http://127.0.0.1:{port}/api/v1/inventory/{sku}");
        let want = *expected_reserved.get(&sku).unwrap_or(&0);
        let product: serde_json::Value =
            eventually(Duration::from_secs(30), "stock to settle", || {
                let p: serde_json::Value = reqwest::blocking::get(&url).ok()?.json().ok()?;
                (p["reserved"].as_i64() == Some(want)).then_some(p)
            });
        assert_eq!(
            product["on_hand"].as_i64(),
            Some(i64::from(stock)),
            "{sku} on hand"
        );
        assert!(product["available"].as_i64().unwrap() >= 0);
        let reserved: i64 = inventory
            .iter()
            .filter(|r| r.key == sku)
            .filter_map(|r| r.value.stock_reserved.as_ref())
            .map(|s| i64::from(s.quantity))
            .sum();
        let released: i64 = inventory
            .iter()
            .filter(|r| r.key == sku)
            .filter_map(|r| r.value.stock_released.as_ref())
            .map(|s| i64::from(s.quantity))
            .sum();
        assert_eq!(
            reserved - released,
            want,
            "{sku}: events reserved − released = confirmed quantities"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
