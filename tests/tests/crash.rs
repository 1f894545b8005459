//! `kill -9` of the processor process in the middle of a load: after a restart, a
//! read_committed consumer sees exactly one terminal event per order, no event twice,
//! stock is conserved, and the restart restored only the changelog tail.

use std::time::Duration;

use erp_connectors::sample;
use erp_schemas::{SchemaKind, wire};
use erp_tests::process::{Instance, acceptance_load, check_saga_invariants};
use erp_tests::{TestApp, eventually};

#[test]
fn kill_dash_nine_mid_load_loses_nothing_and_duplicates_nothing() {
    let app = TestApp::new("crash");
    let (n_products, stock, n_orders) = (8, 250, 400);
    let state = app.state_path();
    let first = Instance::spawn(&app, "i1", &state);
    first.wait_ready();

    let mut rng = sample::Rng::new(99);
    let orders = acceptance_load(&app, &[&first], &mut rng, 20, (n_products, stock), n_orders);
    let p = app.publisher();
    let carrier = app.carrier();
    let (early, late) = orders.split_at(n_orders / 2);
    for o in early {
        p.order(o).unwrap();
    }
    p.flush().unwrap();

    // Kill once processing is visibly under way, mid-stream.
    let topic = app.topics.order_events();
    eventually(
        Duration::from_secs(60),
        "some outcomes before the kill",
        || (app.read_raw(&topic).len() > 50).then_some(()),
    );
    for o in late {
        p.order(o).unwrap();
    }
    p.flush().unwrap();
    first.kill();
    let done_at_kill = app
        .read::<wire::OrderEvent>(&topic, SchemaKind::OrderEvent)
        .iter()
        .filter(|r| r.value.order_completed.is_some() || r.value.order_cancelled.is_some())
        .count();
    assert!(
        done_at_kill < n_orders,
        "the kill must land mid-load ({done_at_kill} of {n_orders} done)"
    );

    let second = Instance::spawn(&app, "i1", &state);
    second.wait_ready();
    // Crash-safe state: the restart restored only the changelog tail after the local
    // checkpoint, not the whole store (Kafka Streams under EOS would wipe and replay all).
    let restored = second.metric_sum("erp_records_restored_total");
    let changelog_records = app.changelog_records();
    eprintln!(
        "crash recovery: {restored} records restored; a full restore would read {changelog_records}"
    );
    assert!(changelog_records > 0);
    assert!(
        restored * 10.0 < changelog_records as f64,
        "restored {restored} of {changelog_records}"
    );

    let report = check_saga_invariants(&app, &orders);
    eprintln!("crash test:\n{report}");
    assert!(report.completed > 0 && report.cancelled > 0, "{report}");
    carrier.stop().unwrap();
    // Operational metrics of the restarted instance: end-to-end latency per input, and
    // (from librdkafka's statistics, every 5 s) consumer lag and store sizes.
    assert!(second.metric_sum("erp_end_to_end_latency_seconds_count") > 0.0);
    eventually(Duration::from_secs(30), "lag and store-size gauges", || {
        let metrics = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", second.port))
            .ok()?
            .text()
            .ok()?;
        (metrics.contains("erp_consumer_lag_records{") && second.metric_sum("erp_store_keys") > 0.0)
            .then_some(())
    });
    second.kill();
}

/// A producer that fails without being fenced (librdkafka's fatal idempotence errors; a
/// transaction state lost in a broker failover) is replaced in place by a new one with
/// the same transactional id: the process goes on, nothing is lost or duplicated.
#[test]
fn a_failed_producer_is_replaced_in_place_and_nothing_is_lost_or_duplicated() {
    let app = TestApp::new("renew");
    let (n_products, stock, n_orders) = (6, 200, 200);
    // Every topology's producer fails once, after its 3rd commit (and is replaced at
    // its next send, if the topology has more work then).
    let instance = Instance::spawn_with(
        &app,
        "i1",
        &app.state_path(),
        &[("ERP_FAIL_PRODUCER_AFTER_COMMITS", ":3")],
    );
    instance.wait_ready();
    let mut rng = sample::Rng::new(7);
    let orders = acceptance_load(
        &app,
        &[&instance],
        &mut rng,
        10,
        (n_products, stock),
        n_orders,
    );
    let p = app.publisher();
    let carrier = app.carrier();
    for o in &orders {
        p.order(o).unwrap();
    }
    p.flush().unwrap();

    let report = check_saga_invariants(&app, &orders);
    eprintln!("producer renewal:\n{report}");
    assert!(report.completed > 0, "{report}");
    carrier.stop().unwrap();
    let renewed = instance.metric_sum("erp_producers_renewed_total");
    // At least order, inventory and payment, busy throughout the load.
    assert!(renewed >= 3.0, "{renewed} producers replaced");
    // Same process throughout: replaced, not restarted.
    let mut instance = instance;
    assert!(
        instance.child.try_wait().unwrap().is_none(),
        "the instance exited"
    );
    instance.stop();
}
