//! Running the real `erp` binary as child processes, and the saga's invariants as a
//! read_committed consumer sees them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use erp_schemas::{SchemaKind, wire};

use crate::{TestApp, eventually};

pub fn erp_binary() -> PathBuf {
    // target/<profile>/deps/<test>-<hash> → target/<profile>/erp
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("erp");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build --bins`",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `erp run` process of the test's application.
pub struct Instance {
    pub id: String,
    pub port: u16,
    pub child: Child,
}

impl Instance {
    pub fn spawn(app: &TestApp, id: &str, state_dir: &Path) -> Self {
        Self::spawn_with(app, id, state_dir, &[])
    }

    /// Like `spawn`, with extra `ERP_*` settings.
    pub fn spawn_with(app: &TestApp, id: &str, state_dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = Command::new(erp_binary())
            .envs(env.iter().copied())
            .arg("run")
            .env("ERP_BOOTSTRAP_SERVERS", &app.settings.bootstrap_servers)
            .env("ERP_SCHEMA_REGISTRY_URL", &app.settings.schema_registry_url)
            .env("ERP_STATE_DIR", state_dir)
            .env("ERP_TOPIC_PREFIX", &app.topics.prefix)
            .env("ERP_PARTITIONS", app.settings.partitions.to_string())
            .env("ERP_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ERP_INSTANCE_ID", id)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn erp run");
        Self {
            id: id.to_string(),
            port,
            child,
        }
    }

    pub fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/health/ready", self.port);
        eventually(
            Duration::from_secs(90),
            &format!("instance {} ready", self.id),
            || {
                reqwest::blocking::get(&url)
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        );
    }

    /// SIGKILL: no commit, no leave-group, nothing flushed.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().unwrap();
    }

    /// SIGTERM: commit, leave the group, exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "instance {} exited with {status}",
            self.id
        );
    }

    /// Sum of a Prometheus metric across labels, from the instance's /metrics.
    pub fn metric_sum(&self, name: &str) -> f64 {
        let text = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.port))
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
}

/// What the invariant check counted.
#[derive(Debug)]
pub struct Outcome {
    pub confirmed: usize,
    pub cancelled: usize,
    pub order_events: usize,
    pub inventory_events: usize,
}

/// Waits until every order has a terminal event, then checks, on committed data only:
/// exactly one terminal event per order, no event id twice, and per SKU
/// Σ reserved − Σ released = the quantities of confirmed orders ≤ initial stock.
pub fn check_saga_invariants(
    app: &TestApp,
    orders: &[wire::OrderCommand],
    initial_stock: i64,
) -> Outcome {
    let topic = app.topics.order_events();
    let ids: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let events = eventually(
        Duration::from_secs(180),
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
    let mut terminals: HashMap<&str, usize> = HashMap::new();
    let mut seen = HashSet::new();
    for r in &events {
        assert!(
            seen.insert(r.value.event_id.clone()),
            "order event {} appears twice",
            r.value.event_id
        );
        if r.value.order_confirmed.is_some() || r.value.order_cancelled.is_some() {
            *terminals.entry(r.value.order_id.as_str()).or_default() += 1;
        }
    }
    assert_eq!(
        terminals.len(),
        orders.len(),
        "every order has a terminal event"
    );
    if let Some((id, n)) = terminals.iter().find(|(_, n)| **n != 1) {
        panic!("order {id} has {n} terminal events");
    }
    let confirmed: HashSet<&str> = events
        .iter()
        .filter(|r| r.value.order_confirmed.is_some())
        .map(|r| r.value.order_id.as_str())
        .collect();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for o in orders {
        if confirmed.contains(o.order_id.as_str()) {
            for l in &o.place_order.as_ref().unwrap().lines {
                *expected.entry(l.sku.clone()).or_default() += i64::from(l.quantity);
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
    // Releases follow cancellations asynchronously: wait for them to settle.
    let held = eventually(
        Duration::from_secs(60),
        "stock holds to match confirmed orders",
        || {
            let inventory = app.read::<wire::InventoryEvent>(
                &app.topics.inventory_events(),
                SchemaKind::InventoryEvent,
            );
            let mut h: BTreeMap<String, i64> = BTreeMap::new();
            for r in &inventory {
                if let Some(s) = &r.value.stock_reserved {
                    *h.entry(r.key.clone()).or_default() += i64::from(s.quantity);
                }
                if let Some(s) = &r.value.stock_released {
                    *h.entry(r.key.clone()).or_default() -= i64::from(s.quantity);
                }
            }
            h.retain(|_, v| *v != 0);
            (h == expected).then_some(h)
        },
    );
    for (sku, n) in &held {
        assert!(
            *n <= initial_stock,
            "{sku} oversold: {n} held of {initial_stock}"
        );
    }
    Outcome {
        confirmed: confirmed.len(),
        cancelled: orders.len() - confirmed.len(),
        order_events: events.len(),
        inventory_events: inventory.len(),
    }
}

/// A failing test must not leave its processes running (they would hold the test's
/// output open and keep polling a broker that is gone).
impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
