//! Three instances of the application share the partitions under load; one is stopped,
//! one is killed, one is added back. Rebalances move tasks (commit or abort on revoke,
//! restore on assign) and a read_committed consumer still sees every order's outcome
//! exactly once, with stock conserved.

use std::time::Duration;

use erp_connectors::sample::{self, Mix};
use erp_schemas::wire;
use erp_tests::process::{Instance, acceptance_load, check_saga_invariants, seed_customers};
use erp_tests::{TestApp, eventually};

#[test]
fn three_instances_survive_stop_kill_and_join_under_load() {
    let app = TestApp::with_partitions("scale", 6);
    let (n_products, stock, n_orders) = (12, 200, 900);
    let dir = |id: &str| app.state_path().join(id);
    let a = Instance::spawn(&app, "a", &dir("a"));
    let b = Instance::spawn(&app, "b", &dir("b"));
    let c = Instance::spawn(&app, "c", &dir("c"));
    for i in [&a, &b, &c] {
        i.wait_ready();
    }
    // Each of the three owns some tasks of each processor.
    eventually(
        Duration::from_secs(60),
        "tasks spread over three instances",
        || {
            [&a, &b, &c]
                .iter()
                .all(|i| i.metric_sum("erp_assigned_tasks") >= 2.0)
                .then_some(())
        },
    );

    let mut rng = sample::Rng::new(7);
    let orders = acceptance_load(
        &app,
        &[&a, &b, &c],
        &mut rng,
        20,
        (n_products, stock),
        n_orders,
    );
    let p = app.publisher();
    let carrier = app.carrier();
    let chunks: Vec<&[wire::OrderCommand]> = orders.chunks(n_orders / 4).collect();
    let publish = |chunk: &[wire::OrderCommand]| {
        for o in chunk {
            p.order(o).unwrap();
            std::thread::sleep(Duration::from_millis(2)); // a steady stream, not one burst
        }
        p.flush().unwrap();
    };

    publish(chunks[0]);
    a.stop(); // graceful: commit, leave the group
    publish(chunks[1]);
    b.kill(); // crash: its open transaction is aborted, its tasks move after the session timeout
    publish(chunks[2]);
    let d = Instance::spawn(&app, "d", &dir("d")); // a new instance joins
    publish(chunks[3]);
    d.wait_ready();

    let report = check_saga_invariants(&app, &orders);
    eprintln!("three-instance test:\n{report}");
    assert_eq!(report.completed + report.cancelled, n_orders);
    assert!(
        report.completed > 0 && report.cancelled > 0,
        "both outcomes exercised: {report}"
    );
    carrier.stop().unwrap();
    // The survivors took over the stopped and killed instances' tasks.
    eventually(Duration::from_secs(60), "c and d to own every task", || {
        let owned = c.metric_sum("erp_assigned_tasks") + d.metric_sum("erp_assigned_tasks");
        (owned == 36.0).then_some(())
    });
    c.kill();
    d.kill();
}

/// Two instances, a load, then one is killed: returns (records the survivor restored
/// taking over, changelog records of the application, seconds from kill to ready).
fn failover(standby_replicas: &str) -> (f64, usize, f64) {
    let app = TestApp::with_partitions(&format!("standby{standby_replicas}"), 4);
    let env = [("ERP_STANDBY_REPLICAS", standby_replicas)];
    let a = Instance::spawn_with(&app, "a", &app.state_path().join("a"), &env);
    let b = Instance::spawn_with(&app, "b", &app.state_path().join("b"), &env);
    a.wait_ready();
    b.wait_ready();
    eventually(
        Duration::from_secs(60),
        "tasks spread over both instances",
        || {
            (a.metric_sum("erp_assigned_tasks") == 12.0
                && b.metric_sum("erp_assigned_tasks") == 12.0)
                .then_some(())
        },
    );
    let p = app.publisher();
    let mut rng = sample::Rng::new(3);
    let customers = seed_customers(&app, &[&a, &b], &mut rng, 10);
    for cmd in sample::products(&mut rng, 10, 500, 1) {
        p.inventory(&cmd).unwrap();
    }
    let carrier = app.carrier();
    let orders: Vec<wire::OrderCommand> = (0..300)
        .map(|i| sample::order(&mut rng, 10, &customers, Mix::NONE, 10 + i).command)
        .collect();
    for o in &orders {
        p.order(o).unwrap();
    }
    p.flush().unwrap();
    check_saga_invariants(&app, &orders);
    carrier.stop().unwrap();
    let before = a.metric_sum("erp_records_restored_total");
    let killed = std::time::Instant::now();
    b.kill();
    eventually(Duration::from_secs(90), "a to take over every task", || {
        (a.metric_sum("erp_assigned_tasks") == 24.0).then_some(())
    });
    a.wait_ready();
    let took = killed.elapsed().as_secs_f64();
    let restored = a.metric_sum("erp_records_restored_total") - before;
    let changelog = app.changelog_records();
    a.kill();
    (restored, changelog, took)
}

#[test]
fn standby_replicas_make_a_failover_restore_only_a_tail() {
    let (cold, cold_log, cold_s) = failover("0");
    let (warm, warm_log, warm_s) = failover("1");
    eprintln!(
        "failover without standbys: restored {cold} of {cold_log} changelog records, ready after {cold_s:.1}s; \
         with 1 standby: restored {warm} of {warm_log}, ready after {warm_s:.1}s"
    );
    assert!(
        cold > 0.0,
        "without standbys the survivor restores the lost tasks' stores"
    );
    assert!(
        warm * 10.0 < cold,
        "a warm standby restores only a tail: {warm} vs {cold}"
    );
}
