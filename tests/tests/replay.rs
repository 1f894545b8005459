//! Replay on the real broker: after thousands of orders, `erp replay` (and Kafka's own
//! ConsumerGroupCommand + topic deletion + a wiped state directory) rebuild every store
//! byte for byte; a replay from a point in time sends outputs again only for later
//! records; and nothing is reset while the application runs.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use erp_connectors::sample::{self, Mix};
use erp_processors::ops::{self, Digest};
use erp_schemas::{SchemaKind, wire};
use erp_tests::process::{
    Instance, check_saga_invariants, erp_command, run_echoed, seed_customers, topologies,
    wait_caught_up,
};

use erp_tests::{TestApp, eventually};

type Digests = BTreeMap<(String, String, i32), Digest>;

/// Every local store's digest (the instance must be stopped).
fn digests(state: &Path) -> Digests {
    ops::local_stores(state, None)
        .iter()
        .map(|s| {
            let sum = ops::summarize(s).unwrap();
            (
                (s.application_id.clone(), s.store.clone(), s.partition),
                sum.digest,
            )
        })
        .collect()
}

fn erp(app: &TestApp, state: &Path, args: &[&str]) -> Output {
    let mut command = erp_command(app, args);
    command.env("ERP_STATE_DIR", state);
    run_echoed(command, args)
}

fn wait_groups_empty(app: &TestApp) {
    for t in topologies(app) {
        ops::require_inactive(
            &app.settings.bootstrap_servers,
            &t.application_id,
            Duration::from_secs(60),
        )
        .unwrap();
    }
}

fn publish_orders(
    app: &TestApp,
    rng: &mut sample::Rng,
    customers: &[String],
    products: usize,
    n: usize,
) -> Vec<wire::OrderCommand> {
    let p = app.publisher();
    let mut orders = Vec::new();
    let mut cancels: Vec<(usize, String)> = Vec::new();
    for i in 0..n {
        let o = sample::order(rng, products, customers, Mix::ACCEPTANCE, 1000 + i as i64);
        p.order(&o.command).unwrap();
        if o.cancel {
            // A little later, so cancels meet the saga at different steps: the races
            // whose outcome only the journal remembers.
            cancels.push((i + rng.below(40) as usize, o.command.order_id.clone()));
        }
        cancels.retain(|(due, id)| {
            if *due > i {
                return true;
            }
            p.order(&sample::cancel(rng, id, 1000 + i as i64)).unwrap();
            false
        });
        orders.push(o.command);
    }
    for (_, id) in cancels {
        p.order(&sample::cancel(rng, &id, 1000 + n as i64)).unwrap();
    }
    p.flush().unwrap();
    orders
}

#[test]
fn replaying_5000_orders_rebuilds_every_store_byte_for_byte_with_ours_and_kafkas_tools() {
    let app = TestApp::new("replay");
    let state = app.state_path();
    let (n_products, n_orders) = (20, 5000);
    let first = Instance::spawn(&app, "i1", &state);
    first.wait_ready();
    let mut rng = sample::Rng::new(7);
    let customers = seed_customers(&app, &[&first], &mut rng, 50);
    let p = app.publisher();
    for cmd in sample::products(&mut rng, n_products, 3000, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    let carrier = app.carrier();
    let orders = publish_orders(&app, &mut rng, &customers, n_products, n_orders);
    // A debug build on two cores takes a few minutes for 5,000 sagas.
    let report = erp_processors::audit::audit_until_settled(
        &app.settings.bootstrap_servers,
        &app.serde,
        &app.topics,
        Duration::from_secs(900),
    )
    .unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.orders, orders.len(), "{report}");
    eprintln!("before the replay:\n{report}");
    assert!(
        report.completed > 1000 && report.cancelled > 100,
        "{report}"
    );
    carrier.stop().unwrap();
    wait_caught_up(&app, Duration::from_secs(300));
    first.stop();
    let before = digests(&state);
    assert!(before.len() >= 5 * 3, "stores found: {}", before.len());
    let orders_store: u64 = before
        .iter()
        .filter(|((a, s, _), _)| a.ends_with("erp-order") && s == "orders")
        .map(|(_, d)| d.keys)
        .sum();
    assert_eq!(orders_store as usize, n_orders, "every order in the store");

    // Verify rebuilds from the inputs and the changelogs without touching anything.
    wait_groups_empty(&app);
    let verified = erp(&app, &state, &["verify", "--all"]);
    assert!(verified.status.success());
    assert!(String::from_utf8_lossy(&verified.stdout).contains("every store matches"));
    assert_eq!(
        digests(&state),
        before,
        "verify must not touch the live state"
    );

    // Our replay: a dry run changes nothing, --execute rebuilds.
    let dry = erp(&app, &state, &["replay", "--all"]);
    assert!(dry.status.success());
    let plan = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(
        plan.contains("delete internal topic") && plan.contains("dry run"),
        "{plan}"
    );
    assert_eq!(digests(&state), before);
    let replay = erp(
        &app,
        &state,
        &["replay", "--all", "--execute", "--wait-secs", "30"],
    );
    assert!(replay.status.success());
    assert!(
        ops::local_stores(&state, None).is_empty(),
        "the local state is wiped"
    );
    let second = Instance::spawn(&app, "i1", &state);
    second.wait_ready();
    wait_caught_up(&app, Duration::from_secs(300));
    second.stop();
    let after = digests(&state);
    assert_eq!(after, before, "our replay rebuilt different state");

    // Kafka's own tools: ConsumerGroupCommand --reset-offsets --to-earliest, the internal
    // topics deleted with TopicCommand, the state directory removed.
    wait_groups_empty(&app);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let kafka_tool = |args: &[&str]| {
        let out = Command::new(root.join("scripts/stack.sh"))
            .arg("tool")
            .args(args)
            .output()
            .unwrap();
        eprintln!(
            "$ {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{args:?}");
    };
    let bootstrap = app.settings.bootstrap_servers.clone();
    for t in topologies(&app) {
        let mut args = vec![
            "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
            "--bootstrap-server",
            &bootstrap,
            "--group",
            &t.application_id,
            "--reset-offsets",
            "--to-earliest",
            "--execute",
        ];
        for s in &t.source_topics {
            args.push("--topic");
            args.push(s);
        }
        kafka_tool(&args);
    }
    let changelogs = format!("{}.*-changelog", app.topics.prefix);
    kafka_tool(&[
        "org.apache.kafka.tools.TopicCommand",
        "--bootstrap-server",
        &bootstrap,
        "--delete",
        "--topic",
        &changelogs,
    ]);
    std::fs::remove_dir_all(&state).unwrap();
    eventually(Duration::from_secs(60), "changelogs deleted", || {
        topologies(&app)
            .iter()
            .flat_map(|t| t.changelog_topics())
            .all(|t| app.topic_span(&t) == 0)
            .then_some(())
    });
    let third = Instance::spawn(&app, "i1", &state);
    third.wait_ready();
    wait_caught_up(&app, Duration::from_secs(300));
    third.stop();
    assert_eq!(
        digests(&state),
        before,
        "Kafka's reset gave a different state than ours"
    );
}

#[test]
fn a_replay_from_a_datetime_sends_outputs_again_only_for_later_records_and_never_while_running() {
    let app = TestApp::new("replay-at");
    let state = app.state_path();
    let n_products = 6;
    let first = Instance::spawn(&app, "i1", &state);
    first.wait_ready();
    let mut rng = sample::Rng::new(11);
    let customers = seed_customers(&app, &[&first], &mut rng, 10);
    let p = app.publisher();
    for cmd in sample::products(&mut rng, n_products, 500, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    let carrier = app.carrier();
    let early = publish_orders(&app, &mut rng, &customers, n_products, 60);
    check_saga_invariants(&app, &early);
    wait_caught_up(&app, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    let at = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1500));
    let late = publish_orders(&app, &mut rng, &customers, n_products, 40);
    let all: Vec<_> = early.iter().chain(&late).cloned().collect();
    check_saga_invariants(&app, &all);
    carrier.stop().unwrap();
    wait_caught_up(&app, Duration::from_secs(60));
    let order_app = app.topics.application_id("order");

    // Refused while running: nothing moves, nothing is deleted.
    let lag_before = ops::lag(&app.settings.bootstrap_servers, &topologies(&app)[0]).unwrap();
    let refused = erp(
        &app,
        &state,
        &["replay", "--application-id", &order_app, "--execute"],
    );
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("active member"), "{err}");
    assert_eq!(
        ops::lag(&app.settings.bootstrap_servers, &topologies(&app)[0]).unwrap(),
        lag_before
    );
    assert!(app.topic_span(&format!("{order_app}-orders-changelog")) > 0);

    first.stop();
    let before = digests(&state);
    let events = app.topics.order_events();
    let mut ends: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    for r in app.read_raw(&events) {
        let e = ends.entry(r.partition).or_insert(-1);
        *e = (*e).max(r.offset);
    }

    let stamp = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let replay = erp(
        &app,
        &state,
        &[
            "replay",
            "--application-id",
            &order_app,
            "--to-datetime",
            &stamp,
            "--execute",
            "--wait-secs",
            "30",
        ],
    );
    assert!(replay.status.success());
    let plan = String::from_utf8_lossy(&replay.stdout).to_string();
    assert!(
        plan.contains("EMIT-FROM") && plan.contains("silently"),
        "{plan}"
    );
    let second = Instance::spawn(&app, "i1", &state);
    second.wait_ready();
    wait_caught_up(&app, Duration::from_secs(120));
    second.stop();
    assert_eq!(digests(&state), before, "the rebuilt state differs");

    // The order processor sent events again for the later orders only.
    let again: Vec<wire::OrderEvent> = app
        .read::<wire::OrderEvent>(&events, SchemaKind::OrderEvent)
        .into_iter()
        .filter(|r| r.offset > ends.get(&r.partition).copied().unwrap_or(-1))
        .map(|r| r.value)
        .collect();
    let early_ids: HashSet<&str> = early.iter().map(|o| o.order_id.as_str()).collect();
    let late_ids: HashSet<&str> = late.iter().map(|o| o.order_id.as_str()).collect();
    assert!(!again.is_empty(), "later records send their outputs again");
    let stray: Vec<&str> = again
        .iter()
        .map(|e| e.order_id.as_str())
        .filter(|id| !late_ids.contains(id))
        .collect();
    assert!(
        stray.is_empty(),
        "{} events re-sent for orders before the replay point (e.g. {:?}; early order: {})",
        stray.len(),
        stray.first(),
        stray.first().is_some_and(|id| early_ids.contains(id))
    );
}

#[test]
fn a_replay_interrupted_by_kill_dash_nine_resumes_in_journal_order() {
    let app = TestApp::new("replay-kill");
    let state = app.state_path();
    let n_products = 10;
    let first = Instance::spawn(&app, "i1", &state);
    first.wait_ready();
    let mut rng = sample::Rng::new(23);
    let customers = seed_customers(&app, &[&first], &mut rng, 20);
    let p = app.publisher();
    for cmd in sample::products(&mut rng, n_products, 2000, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    let carrier = app.carrier();
    let orders = publish_orders(&app, &mut rng, &customers, n_products, 1500);
    let report = erp_processors::audit::audit_until_settled(
        &app.settings.bootstrap_servers,
        &app.serde,
        &app.topics,
        Duration::from_secs(600),
    )
    .unwrap();
    assert!(
        report.is_clean() && report.orders == orders.len(),
        "{report}"
    );
    carrier.stop().unwrap();
    wait_caught_up(&app, Duration::from_secs(120));
    first.stop();
    let before = digests(&state);

    let replay = erp(
        &app,
        &state,
        &["replay", "--all", "--execute", "--wait-secs", "30"],
    );
    assert!(replay.status.success());
    let order = topologies(&app).remove(0);
    // Progress is what the group has committed: the lag would not do, as the other
    // processors' replays keep appending to the order processor's inputs.
    let committed = || -> i64 {
        ops::lag(&app.settings.bootstrap_servers, &order)
            .unwrap()
            .iter()
            .map(|row| row.committed.unwrap_or(0))
            .sum()
    };
    assert_eq!(
        committed(),
        0,
        "replay --all rewinds every input to the start"
    );
    let to_replay: i64 = ops::lag(&app.settings.bootstrap_servers, &order)
        .unwrap()
        .iter()
        .map(ops::LagRow::lag)
        .sum();
    // The order processor stops inside the transaction after its first 1,000 committed
    // inputs: at most 2,999 of them are committed (a transaction holds at most 2,000),
    // so the kill lands mid-replay however fast the engine runs.
    let second = Instance::spawn_with(
        &app,
        "i1",
        &state,
        &[("ERP_HOLD_AFTER_RECORDS", "-erp-order:1000")],
    );
    eventually(Duration::from_secs(300), "replay under way", || {
        (committed() >= 1000).then_some(())
    });
    second.kill();
    let at_kill = committed();
    eprintln!("killed with {at_kill} of {to_replay} order inputs replayed");
    assert!(
        at_kill < to_replay,
        "the kill must land mid-replay ({at_kill} of {to_replay} committed)"
    );
    let third = Instance::spawn(&app, "i1", &state);
    third.wait_ready();
    wait_caught_up(&app, Duration::from_secs(300));
    third.stop();
    assert_eq!(
        digests(&state),
        before,
        "a replay resumed after kill -9 rebuilt different state"
    );
}
