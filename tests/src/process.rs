//! Running the real `erp` binary as child processes, and the saga's invariants as a
//! read_committed consumer sees them.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use erp_connectors::sample::{self, Rng};
use erp_processors::app::Context;
use erp_processors::audit::AuditReport;
use erp_processors::ops;
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

/// Runs `command` (an `erp_command` for `args`) to the end and echoes its output into
/// the test's log.
pub fn run_echoed(mut command: Command, args: &[&str]) -> std::process::Output {
    let out = command.output().expect("run erp");
    eprintln!(
        "$ erp {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `erp <args>` with the test application's broker, registry, prefix and partitions.
pub fn erp_command(app: &TestApp, args: &[&str]) -> Command {
    let mut c = Command::new(erp_binary());
    c.args(args)
        .env("ERP_BOOTSTRAP_SERVERS", &app.settings.bootstrap_servers)
        .env("ERP_SCHEMA_REGISTRY_URL", &app.settings.schema_registry_url)
        .env("ERP_TOPIC_PREFIX", &app.topics.prefix)
        .env("ERP_PARTITIONS", app.settings.partitions.to_string())
        .env("RUST_LOG", "warn");
    c
}

pub fn topologies(app: &TestApp) -> Vec<erp_processors::engine::Topology> {
    Context::all_topologies(&Context::ALL, &app.topics, app.serde.clone(), app.saga)
}

/// Waits until every group committed past the last record of each of its inputs, twice
/// in a row a second apart (reprocessed outputs feed other groups).
pub fn wait_caught_up(app: &TestApp, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut quiet = 0;
    loop {
        let mut behind = 0;
        for t in topologies(app) {
            behind += ops::lag(&app.settings.bootstrap_servers, &t)
                .unwrap()
                .iter()
                .map(ops::LagRow::lag)
                .sum::<i64>();
        }
        quiet = if behind == 0 { quiet + 1 } else { 0 };
        if quiet >= 2 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {behind} records behind after {timeout:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
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
        Self::spawn_at(app, id, state_dir, env, free_port())
    }

    /// Like `spawn_with`, on a given HTTP port (a restarted instance keeps its address).
    pub fn spawn_at(
        app: &TestApp,
        id: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        port: u16,
    ) -> Self {
        Self::start(app, id, state_dir, env, port, "warn", Stdio::inherit())
    }

    /// Like `spawn_with`, logging at info into the file `log` (to be searched).
    pub fn spawn_logged(
        app: &TestApp,
        id: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let log = std::fs::File::create(log).expect("log file");
        Self::start(app, id, state_dir, env, free_port(), "info", log.into())
    }

    fn start(
        app: &TestApp,
        id: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        port: u16,
        log_level: &str,
        stderr: Stdio,
    ) -> Self {
        let child = Self::command(app, id, state_dir, env, port)
            .env("RUST_LOG", log_level)
            .stderr(stderr)
            .spawn()
            .expect("spawn erp run");
        Self {
            id: id.to_string(),
            port,
            child,
        }
    }

    fn command(
        app: &TestApp,
        id: &str,
        state_dir: &Path,
        env: &[(&str, &str)],
        port: u16,
    ) -> Command {
        let mut c = Command::new(erp_binary());
        c.envs(env.iter().copied())
            .arg("run")
            .env("ERP_BOOTSTRAP_SERVERS", &app.settings.bootstrap_servers)
            .env("ERP_SCHEMA_REGISTRY_URL", &app.settings.schema_registry_url)
            .env("ERP_STATE_DIR", state_dir)
            .env("ERP_TOPIC_PREFIX", &app.topics.prefix)
            .env("ERP_PARTITIONS", app.settings.partitions.to_string())
            .env("ERP_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ERP_INSTANCE_ID", id)
            .stdout(Stdio::null());
        c
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

/// The acceptance load's setup: `n_customers` customers every instance's order processor
/// knows, `n_products` products of `stock` units published, and `n_orders` PlaceOrder
/// commands of the acceptance mix, not yet published.
pub fn acceptance_load(
    app: &TestApp,
    instances: &[&Instance],
    rng: &mut Rng,
    n_customers: usize,
    (n_products, stock): (usize, i32),
    n_orders: usize,
) -> Vec<wire::OrderCommand> {
    let customers = seed_customers(app, instances, rng, n_customers);
    let p = app.publisher();
    for cmd in sample::products(rng, n_products, stock, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    (0..n_orders)
        .map(|i| {
            sample::order(
                rng,
                n_products,
                &customers,
                sample::Mix::ACCEPTANCE,
                1000 + i as i64,
            )
            .command
        })
        .collect()
}

/// Registers `n` customers and waits until every instance's order processor knows them
/// (its customer table), so the load is priced rather than refused.
pub fn seed_customers(
    app: &TestApp,
    instances: &[&Instance],
    rng: &mut Rng,
    n: usize,
) -> Vec<String> {
    let p = app.publisher();
    let cmds = sample::customers(rng, n, 1);
    for c in &cmds {
        p.customer(c).unwrap();
    }
    p.flush().unwrap();
    let ids: Vec<String> = cmds.into_iter().map(|c| c.customer_id).collect();
    for i in instances {
        for id in &ids {
            let url = format!("http://127.0.0.1:{}/api/v1/customers/{id}", i.port);
            eventually(
                Duration::from_secs(60),
                "customer visible to orders",
                || {
                    let v: serde_json::Value = reqwest::blocking::get(&url).ok()?.json().ok()?;
                    (v["visible_to_orders"] == true).then_some(())
                },
            );
        }
    }
    ids
}

/// Waits until every order of `orders` ended and compensations settled, then checks the
/// saga's invariants on committed data (`erp_processors::audit`, then the chaos suite's
/// `erp_processors::check`).
pub fn check_saga_invariants(app: &TestApp, orders: &[wire::OrderCommand]) -> AuditReport {
    let ids: HashSet<&str> = orders.iter().map(|o| o.order_id.as_str()).collect();
    let report = app.audit();
    assert!(report.is_clean(), "saga invariants:\n{report}");
    let created: HashSet<String> = app
        .read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent)
        .into_iter()
        .filter(|r| r.value.order_created.is_some())
        .map(|r| r.value.order_id)
        .collect();
    let missing = ids.iter().filter(|id| !created.contains(**id)).count();
    assert_eq!(missing, 0, "{missing} orders were never created");
    // The stricter checker of the chaos suite over the same history: every command,
    // event and dead letter.
    let full = erp_processors::check::check(
        &app.settings.bootstrap_servers,
        &app.serde,
        &app.topics,
        Duration::from_secs(300),
    )
    .expect("erp check reads every topic");
    assert!(full.is_clean(), "erp check:\n{full}");
    report
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
