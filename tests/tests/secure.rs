//! The secured stack (`ERP_STACK=secure scripts/stack.sh up`): SASL SCRAM-SHA-256 on
//! the broker, Kafka's StandardAuthorizer, and one least-privilege principal per
//! bounded context (`erp acls`). These tests need that stack, not the plaintext one the
//! rest of the suite uses, so they are ignored by default; `scripts/test.sh` swaps the
//! secured node in and runs them with `cargo test --workspace --test secure -- --ignored`.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use erp_processors::acls;
use erp_processors::app::Context;
use erp_processors::engine::{Replication, TopicSpec, ensure_topics};
use erp_tests::process::{erp_command, free_port, run_echoed};
use erp_tests::{TestApp, bootstrap, eventually};

const NEEDS: &str = "needs the secured stack: ERP_STACK=secure scripts/stack.sh up";

fn credentials_dir() -> PathBuf {
    let cache = std::env::var("ERP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/erp-saga")
        });
    cache.join("run/secure/credentials")
}

/// The `ERP_KAFKA_*` settings of one principal, as `scripts/stack.sh` wrote them.
fn credentials(principal: &str) -> HashMap<String, String> {
    let file = credentials_dir().join(format!("{principal}.env"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} ({NEEDS})", file.display()));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn password(principal: &str) -> String {
    credentials(principal)["ERP_KAFKA_SASL_PASSWORD"].clone()
}

/// This test process is the operator: the super user, for setup and reading back.
fn as_admin() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let c = credentials("admin");
        erp_connectors::kafka::use_security(erp_connectors::kafka::KafkaSecurity {
            protocol: c["ERP_KAFKA_SECURITY_PROTOCOL"].clone(),
            sasl_mechanism: Some(c["ERP_KAFKA_SASL_MECHANISM"].clone()),
            sasl_username: Some(c["ERP_KAFKA_SASL_USERNAME"].clone()),
            sasl_password: Some(c["ERP_KAFKA_SASL_PASSWORD"].clone()),
            ssl_ca_location: None,
        })
        .expect("admin credentials");
    });
}

/// A client of `principal` with `password`, built by hand (not the process-wide one).
fn client_as(principal: &str, password: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanism", "SCRAM-SHA-256")
        .set("sasl.username", principal)
        .set("sasl.password", password);
    c
}

/// `erp acls` for the app's prefix, applied by `scripts/stack.sh acls` as the super user.
fn grant_acls(app: &TestApp) {
    let out = run_echoed(erp_command(app, &["acls"]), &["acls"]);
    assert!(out.status.success(), "erp acls failed");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    let mut apply = Command::new("bash")
        .arg(script)
        .arg("acls")
        .stdin(Stdio::piped())
        .spawn()
        .expect("stack.sh acls");
    apply.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    assert!(apply.wait().unwrap().success(), "stack.sh acls failed");
}

/// `erp <args>` as `principal`.
fn erp_as(app: &TestApp, principal: &str, args: &[&str]) -> Command {
    let mut c = erp_command(app, args);
    c.envs(credentials(principal));
    c
}

/// One `erp processor --context X`, logging at info into `log`.
struct Processor {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Processor {
    fn spawn(app: &TestApp, context: Context, dir: &Path) -> Self {
        let port = free_port();
        let name = acls::principal(context);
        let log = dir.join(format!("{name}.log"));
        let child = erp_as(
            app,
            &name,
            &["processor", "--context", &context_arg(context)],
        )
        .env("ERP_STATE_DIR", dir.join(&name))
        .env("ERP_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("ERP_INSTANCE_ID", "i1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .expect("spawn erp processor");
        Self { child, port, log }
    }

    fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/health/ready", self.port);
        let log = self.log.clone();
        eventually(
            Duration::from_secs(120),
            &format!("{} ready", log.display()),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "{} exited ({status}):\n{}",
                        log.display(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                reqwest::blocking::get(&url)
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            },
        );
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The warnings and errors of every process of the run, into the test's output; the
/// whole logs stay in `dir`, which is kept.
fn dump_logs(dir: &Path) {
    eprintln!("logs kept in {}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            eprintln!("==== {}", path.display());
            for line in text
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            {
                eprintln!("{line}");
            }
        }
    }
}

fn context_arg(context: Context) -> String {
    acls::principal(context)
        .trim_start_matches("erp-")
        .to_string()
}

#[test]
#[ignore = "needs the secured stack: ERP_STACK=secure scripts/stack.sh up"]
fn a_client_without_credentials_or_with_a_wrong_password_is_refused() {
    let timeout = Duration::from_secs(8);
    let anonymous: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .create()
        .unwrap();
    assert!(
        anonymous.fetch_metadata(None, timeout).is_err(),
        "a plaintext client got metadata from the secured broker"
    );
    let wrong: BaseConsumer = client_as("erp-order", "not-the-password").create().unwrap();
    assert!(
        wrong.fetch_metadata(None, timeout).is_err(),
        "a wrong password got metadata"
    );
    // The control: the same principal with its password is let in.
    let right: BaseConsumer = client_as("erp-order", &password("erp-order"))
        .create()
        .unwrap();
    right
        .fetch_metadata(None, Duration::from_secs(20))
        .expect("erp-order with its password");
}

#[test]
#[ignore = "needs the secured stack: ERP_STACK=secure scripts/stack.sh up"]
fn each_context_runs_as_its_own_principal_with_only_the_rights_it_needs() {
    as_admin();
    let app = TestApp::new("secure");
    grant_acls(&app);

    // Rights end where the grants end: payment may write its events, not the order's,
    // and may not join the order processor's group.
    let payment: FutureProducer = client_as("erp-payment", &password("erp-payment"))
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let send = |topic: String| {
        let payment = payment.clone();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                payment
                    .send(
                        FutureRecord::to(&topic).key("k").payload("not avro"),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            })
    };
    // The control: a topic under payment's own prefix (made by the operator; nothing
    // reads it) takes its writes.
    let own = format!("{}-probe", app.topics.application_id("payment"));
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ensure_topics(
            &bootstrap(),
            &[TopicSpec::new(own.clone(), 1, Replication::SINGLE)],
        ))
        .unwrap();
    send(own).expect("erp-payment writes under its own prefix");
    match send(app.topics.order_events()) {
        Err(KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed)) => {}
        other => panic!("erp-payment wrote to order-events: {other:?}"),
    }
    let intruder: BaseConsumer = client_as("erp-payment", &password("erp-payment"))
        .set("group.id", app.topics.application_id("order"))
        .create()
        .unwrap();
    intruder
        .subscribe(&[&app.topics.payment_commands()])
        .unwrap();
    let refused = eventually(
        Duration::from_secs(30),
        "group authorization error",
        || match intruder.poll(Duration::from_millis(500)) {
            Some(Err(e)) => Some(e),
            _ => None,
        },
    );
    assert_eq!(
        refused.rdkafka_error_code(),
        Some(RDKafkaErrorCode::GroupAuthorizationFailed),
        "{refused}"
    );
    drop(intruder);

    // The whole saga with one principal per context, the clients as erp-client and the
    // checker as erp-audit: nothing needs more than it was granted.
    let dir = tempfile::tempdir().unwrap();
    let mut processors: Vec<Processor> = Context::ALL
        .iter()
        .map(|&c| Processor::spawn(&app, c, dir.path()))
        .collect();
    for p in &mut processors {
        p.wait_ready();
    }
    let order_api = format!("http://127.0.0.1:{}", processors[0].port);
    let generate = [
        "generate",
        "--orders",
        "40",
        "--rate",
        "40",
        "--customers",
        "5",
        "--products",
        "5",
        "--query-url",
        &order_api,
    ];
    let out = run_echoed(erp_as(&app, "erp-client", &generate), &generate);
    if !out.status.success() {
        dump_logs(&dir.keep());
        panic!("erp generate as erp-client failed");
    }
    let carrier_log = dir.path().join("carrier.log");
    let mut carrier = erp_as(&app, "erp-client", &["carrier"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&carrier_log).unwrap())
        .spawn()
        .unwrap();
    let check = ["check", "--settle-secs", "180"];
    let out = run_echoed(erp_as(&app, "erp-audit", &check), &check);
    let _ = carrier.kill();
    let _ = carrier.wait();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        dump_logs(&dir.keep());
        panic!("erp check as erp-audit failed:\n{report}");
    }
    assert!(!report.contains("NOT SETTLED"), "{report}");
    assert!(
        report.contains("40"),
        "the report counts the 40 orders:\n{report}"
    );

    // No secret in any log line: the processors ran at info, librdkafka included.
    drop(processors);
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    assert_eq!(logs.len(), 6, "{logs:?}");
    let secrets: Vec<String> = [
        "admin",
        "erp-order",
        "erp-inventory",
        "erp-payment",
        "erp-shipping",
    ]
    .into_iter()
    .chain(["erp-customer", "erp-client", "erp-audit"])
    .map(password)
    .collect();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            !text.is_empty() || log == &carrier_log,
            "{} is empty",
            log.display()
        );
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{} holds a password",
                log.display()
            );
        }
    }
}
