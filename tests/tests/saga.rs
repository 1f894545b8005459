//! The saga end to end on the real broker, registry and RocksDB, engines in-process.

use std::collections::BTreeMap;
use std::time::Duration;

use erp_connectors::sample;
use erp_schemas::{SchemaKind, wire};
use erp_tests::{Read, TestApp, eventually};

fn now() -> i64 {
    1_767_225_600_000 // fixed record time: domain output must not depend on the clock
}

fn register(app: &TestApp, sku: &str, stock: i32) {
    let mut c = wire::InventoryCommand::empty(uuid::Uuid::new_v4().to_string(), sku.into(), now());
    c.register_product = Some(wire::RegisterProduct {
        name: format!("product {sku}"),
        initial_stock: stock,
        low_stock_threshold: 2,
        unit_weight_kg: Some("2.5".into()),
    });
    let p = app.publisher();
    p.inventory(&c).unwrap();
    p.flush().unwrap();
}

fn place(order_id: &str, command_id: &str, lines: &[(&str, i32)]) -> wire::OrderCommand {
    wire::OrderCommand {
        command_id: command_id.into(),
        order_id: order_id.into(),
        issued_at: now(),
        correlation_id: None,
        expected_version: None,
        cancel_order: None,
        place_order: Some(wire::PlaceOrder {
            customer_id: "0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33".into(),
            currency: "USD".into(),
            lines: lines
                .iter()
                .map(|(sku, q)| wire::OrderLine {
                    sku: sku.to_string(),
                    product_name: sku.to_string(),
                    quantity: *q,
                    unit_price: "10.00".into(),
                    unit_weight_kg: None,
                })
                .collect(),
            shipping_address: wire::Address {
                street: "1 Main St".into(),
                city: "Springfield".into(),
                postal_code: "10001".into(),
                country: "US".into(),
            },
        }),
    }
}

fn order_events(app: &TestApp, order_id: &str) -> Vec<wire::OrderEvent> {
    app.read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent)
        .into_iter()
        .filter(|r| r.value.order_id == order_id)
        .map(|r| r.value)
        .collect()
}

fn terminal(e: &wire::OrderEvent) -> bool {
    e.order_confirmed.is_some() || e.order_cancelled.is_some()
}

fn wait_terminal(app: &TestApp, order_id: &str) -> Vec<wire::OrderEvent> {
    eventually(Duration::from_secs(60), "a terminal order event", || {
        let events = order_events(app, order_id);
        events.iter().any(terminal).then_some(events)
    })
}

fn product(engines: &erp_processors::app::Engines, sku: &str) -> Option<serde_json::Value> {
    engines
        .state
        .stores
        .get("products", sku.as_bytes())
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn happy_path_confirms_the_order_and_holds_the_stock() {
    let app = TestApp::new("happy");
    let engines = app.start();
    register(&app, "SKU-A", 10);
    register(&app, "SKU-B", 10);
    let order_id = uuid::Uuid::new_v4().to_string();
    let p = app.publisher();
    p.order(&place(
        &order_id,
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-A", 2), ("SKU-B", 3)],
    ))
    .unwrap();
    p.flush().unwrap();

    let events = wait_terminal(&app, &order_id);
    let created = events[0]
        .order_created
        .as_ref()
        .expect("first event is OrderCreated");
    // 2×10 + 3×10 = 50.00, tax 5.00, 25 kg → shipping 10.00
    assert_eq!(
        (
            created.subtotal.as_str(),
            created.tax.as_str(),
            created.shipping_cost.as_str(),
            created.total.as_str()
        ),
        ("50.00", "5.00", "10.00", "65.00")
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e.order_line_reserved.is_some())
            .count(),
        2
    );
    assert_eq!(
        events
            .last()
            .unwrap()
            .order_confirmed
            .as_ref()
            .unwrap()
            .total,
        "65.00"
    );
    assert_eq!(events.iter().filter(|e| terminal(e)).count(), 1);
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);

    let a = eventually(
        Duration::from_secs(10),
        "SKU-A reserved in the store",
        || product(&engines, "SKU-A").filter(|p| p["reserved"] == 2),
    );
    assert_eq!(a["on_hand"], 10);
    let order = engines
        .state
        .stores
        .get("orders", order_id.as_bytes())
        .unwrap()
        .expect("order in store");
    let order: serde_json::Value = serde_json::from_slice(&order).unwrap();
    assert_eq!(order["status"], "Confirmed");
    engines.stop().unwrap();
}

#[test]
fn insufficient_stock_cancels_and_releases_the_reserved_lines() {
    let app = TestApp::new("short");
    let engines = app.start();
    register(&app, "SKU-A", 5);
    register(&app, "SKU-B", 1);
    let order_id = uuid::Uuid::new_v4().to_string();
    let p = app.publisher();
    p.order(&place(
        &order_id,
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-A", 2), ("SKU-B", 3)],
    ))
    .unwrap();
    p.flush().unwrap();

    let events = wait_terminal(&app, &order_id);
    let cancelled = events
        .iter()
        .find_map(|e| e.order_cancelled.clone())
        .expect("cancelled");
    assert!(
        cancelled.reason.contains("SKU-B") && cancelled.reason.contains("requested 3, available 1"),
        "{}",
        cancelled.reason
    );
    assert_eq!(cancelled.released_skus, vec!["SKU-A".to_string()]);
    assert!(events.iter().all(|e| e.order_confirmed.is_none()));

    // The compensation reaches inventory: SKU-A's two units come back.
    eventually(Duration::from_secs(30), "SKU-A released", || {
        product(&engines, "SKU-A").filter(|p| p["reserved"] == 0 && p["on_hand"] == 5)
    });
    let inv: Vec<Read<wire::InventoryEvent>> =
        app.read(&app.topics.inventory_events(), SchemaKind::InventoryEvent);
    let released: Vec<_> = inv
        .iter()
        .filter_map(|r| r.value.stock_released.clone())
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!((released[0].quantity, released[0].available), (2, 5));
    engines.stop().unwrap();
}

#[test]
fn a_repeated_command_id_is_applied_once_and_a_second_order_with_the_same_id_is_rejected() {
    let app = TestApp::new("dup");
    let engines = app.start();
    register(&app, "SKU-A", 10);
    let order_id = uuid::Uuid::new_v4().to_string();
    let command_id = uuid::Uuid::new_v4().to_string();
    let p = app.publisher();
    let cmd = place(&order_id, &command_id, &[("SKU-A", 1)]);
    p.order(&cmd).unwrap();
    p.order(&cmd).unwrap();
    p.flush().unwrap();
    wait_terminal(&app, &order_id);
    // A different command for the same order id: rejected with a reason.
    let other = uuid::Uuid::new_v4().to_string();
    p.order(&place(&order_id, &other, &[("SKU-A", 1)])).unwrap();
    p.flush().unwrap();
    let events = eventually(Duration::from_secs(30), "the rejection", || {
        let ev = order_events(&app, &order_id);
        ev.iter()
            .any(|e| e.command_rejected.is_some())
            .then_some(ev)
    });
    assert_eq!(
        events.iter().filter(|e| e.order_created.is_some()).count(),
        1
    );
    let rejected: Vec<_> = events
        .iter()
        .filter_map(|e| e.command_rejected.clone())
        .collect();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].command_id, other);
    assert!(rejected[0].reason.contains("already exists"));
    let reserved = app
        .read::<wire::InventoryEvent>(&app.topics.inventory_events(), SchemaKind::InventoryEvent)
        .iter()
        .filter(|r| r.value.stock_reserved.is_some())
        .count();
    assert_eq!(reserved, 1, "stock reserved once");
    engines.stop().unwrap();
}

#[test]
fn poison_records_go_to_the_dlq_with_reasons_and_processing_continues() {
    let app = TestApp::new("poison");
    let engines = app.start();
    register(&app, "SKU-A", 10);
    let p = app.publisher();
    let topic = app.topics.order_commands();
    let valid = app
        .serde
        .encode(
            &topic,
            SchemaKind::OrderCommand,
            &place(&uuid::Uuid::new_v4().to_string(), "c", &[("SKU-A", 1)]),
        )
        .unwrap();
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("bad-magic", b"{\"json\": \"is not avro\"}".to_vec()),
        (
            "unknown-schema",
            [&[0u8, 0x7f, 0xff, 0xff, 0x01][..], &valid[5..]].concat(),
        ),
        ("truncated", valid[..valid.len() / 2].to_vec()),
    ];
    for (key, bytes) in &poison {
        p.send_raw(&topic, key.as_bytes(), bytes, now(), &[("trace", "t1")])
            .unwrap();
    }
    // Invalid business values are not poison: they get a rejection event with the reason.
    let bad_qty = uuid::Uuid::new_v4().to_string();
    p.order(&place(
        &bad_qty,
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-A", -2)],
    ))
    .unwrap();
    let mut wrong_currency = place(
        &uuid::Uuid::new_v4().to_string(),
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-A", 1)],
    );
    wrong_currency.place_order.as_mut().unwrap().currency = "GBP".into();
    p.order(&wrong_currency).unwrap();
    let unknown_sku = uuid::Uuid::new_v4().to_string();
    p.order(&place(
        &unknown_sku,
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-NOPE", 1)],
    ))
    .unwrap();
    let good = uuid::Uuid::new_v4().to_string();
    p.order(&place(
        &good,
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-A", 1)],
    ))
    .unwrap();
    p.flush().unwrap();

    assert!(
        wait_terminal(&app, &good)
            .last()
            .unwrap()
            .order_confirmed
            .is_some()
    );
    let unknown = wait_terminal(&app, &unknown_sku);
    assert!(
        unknown
            .last()
            .unwrap()
            .order_cancelled
            .as_ref()
            .unwrap()
            .reason
            .contains("unknown SKU SKU-NOPE")
    );
    let rejected = eventually(Duration::from_secs(30), "rejections", || {
        let ev = app.read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent);
        let r: Vec<_> = ev
            .into_iter()
            .filter_map(|r| r.value.command_rejected)
            .collect();
        (r.len() == 2).then_some(r)
    });
    assert!(
        rejected
            .iter()
            .any(|r| r.reason.contains("quantity must be greater than zero")),
        "{rejected:?}"
    );
    assert!(
        rejected
            .iter()
            .any(|r| r.reason.contains("unsupported currency \"GBP\"")),
        "{rejected:?}"
    );

    let dlq_topic = format!("{}-dlq", app.topics.application_id("order"));
    let dlq = eventually(Duration::from_secs(30), "three DLQ records", || {
        let d = app.read_raw(&dlq_topic);
        (d.len() == 3).then_some(d)
    });
    let by_key: BTreeMap<String, &Read<Vec<u8>>> = dlq.iter().map(|r| (r.key.clone(), r)).collect();
    for (key, bytes) in &poison {
        let r = by_key
            .get(*key)
            .unwrap_or_else(|| panic!("{key} not in DLQ"));
        assert_eq!(&r.value, bytes, "raw bytes kept for {key}");
        assert_eq!(r.headers["__dlq.errors.topic"], topic);
        assert_eq!(r.headers["trace"], "t1", "original headers kept");
        assert!(!r.headers["__dlq.errors.exception.message"].is_empty());
    }
    assert_eq!(
        by_key["bad-magic"].headers["__dlq.errors.exception.class.name"],
        "malformed"
    );
    assert_eq!(
        by_key["unknown-schema"].headers["__dlq.errors.exception.class.name"],
        "unknown_schema"
    );
    engines.stop().unwrap();
}

#[test]
fn restart_restores_state_from_changelogs_without_duplicate_events() {
    let app = TestApp::new("restart");
    let engines = app.start();
    register(&app, "SKU-A", 100);
    let p = app.publisher();
    let mut rng = sample::Rng::new(5);
    let mut cmds = Vec::new();
    for _ in 0..20 {
        let c = place(&rng.uuid(), &rng.uuid(), &[("SKU-A", 1)]);
        p.order(&c).unwrap();
        cmds.push(c);
    }
    p.flush().unwrap();
    for c in &cmds {
        wait_terminal(&app, &c.order_id);
    }
    engines.stop().unwrap();
    let before = app.read_raw(&app.topics.order_events()).len();

    // Lose the local state entirely: everything must come back from the changelogs.
    std::fs::remove_dir_all(app.state_path()).unwrap();
    let engines = app.start();
    let a = product(&engines, "SKU-A").expect("SKU-A restored");
    assert_eq!(
        (a["on_hand"].as_u64(), a["reserved"].as_u64()),
        (Some(100), Some(20))
    );
    for c in &cmds {
        assert!(
            engines
                .state
                .stores
                .get("orders", c.order_id.as_bytes())
                .unwrap()
                .is_some(),
            "order restored"
        );
    }
    // Replaying the same commands (same ids) changes nothing.
    for c in &cmds {
        p.order(c).unwrap();
    }
    let marker = place(
        &uuid::Uuid::new_v4().to_string(),
        &uuid::Uuid::new_v4().to_string(),
        &[("SKU-A", 1)],
    );
    p.order(&marker).unwrap();
    p.flush().unwrap();
    wait_terminal(&app, &marker.order_id);
    let after = app.read_raw(&app.topics.order_events()).len();
    assert_eq!(
        after,
        before + 3,
        "only the marker order's Created, LineReserved and Confirmed are new"
    );
    engines.stop().unwrap();

    // A restart with the local state intact restores only the tail after the checkpoint.
    let engines = app.start();
    let restored: u64 = engines
        .state
        .metrics
        .gather()
        .iter()
        .filter(|f| f.name() == "erp_records_restored_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value() as u64)
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(restored, 0, "a clean shutdown leaves nothing to restore");
    engines.stop().unwrap();
}

#[test]
fn a_customer_cancel_releases_all_stock_whatever_the_timing() {
    let app = TestApp::new("cancel");
    let engines = app.start();
    register(&app, "SKU-A", 10);
    register(&app, "SKU-B", 10);
    let p = app.publisher();
    let mut ids = Vec::new();
    // Cancels race the reservations: some land before any reply, some after.
    for i in 0..6 {
        let order_id = uuid::Uuid::new_v4().to_string();
        p.order(&place(
            &order_id,
            &uuid::Uuid::new_v4().to_string(),
            &[("SKU-A", 2), ("SKU-B", 1)],
        ))
        .unwrap();
        if i % 2 == 1 {
            p.flush().unwrap();
            wait_terminal(&app, &order_id);
        }
        let mut cancel = place(&order_id, &uuid::Uuid::new_v4().to_string(), &[]);
        cancel.place_order = None;
        cancel.cancel_order = Some(wire::CancelOrder {
            reason: "changed my mind".into(),
        });
        p.order(&cancel).unwrap();
        ids.push(order_id);
    }
    p.flush().unwrap();
    for id in &ids {
        let events = eventually(Duration::from_secs(60), "the customer cancel", || {
            let ev = order_events(&app, id);
            ev.iter().any(|e| e.order_cancelled.is_some()).then_some(ev)
        });
        let cancels: Vec<_> = events
            .iter()
            .filter_map(|e| e.order_cancelled.as_ref())
            .collect();
        assert_eq!(cancels.len(), 1, "{id}: one cancellation");
        assert_eq!(cancels[0].reason, "cancelled by customer: changed my mind");
    }
    // Every unit comes back, including reservations that landed after the cancel.
    for sku in ["SKU-A", "SKU-B"] {
        eventually(Duration::from_secs(60), "all stock released", || {
            product(&engines, sku).filter(|p| p["reserved"] == 0 && p["on_hand"] == 10)
        });
    }
    engines.stop().unwrap();
}
