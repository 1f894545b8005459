//! The saga end to end on the real broker, registry and RocksDB, engines in-process:
//! every branch of docs/saga.md, with the events each one produces.

use std::collections::BTreeMap;
use std::time::Duration;

use erp_connectors::sample;
use erp_processors::app::{Context, Engines, SagaSettings};
use erp_schemas::{SchemaKind, wire};
use erp_tests::{CUSTOMER, Read, TestApp, eventually};

fn now() -> i64 {
    1_767_225_600_000 // fixed record time: domain output must not depend on the clock
}

fn id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A test application with every processor running and the default customer known.
fn setup(name: &str) -> (TestApp, Engines) {
    let app = TestApp::new(name);
    let engines = app.start();
    app.register_customer(&engines, CUSTOMER);
    (app, engines)
}

fn register(app: &TestApp, sku: &str, stock: i32) {
    let mut c = wire::InventoryCommand::empty(id(), sku.into(), now());
    c.register_product = Some(wire::RegisterProduct {
        name: format!("product {sku}"),
        initial_stock: stock,
        low_stock_threshold: 2,
        unit_weight_kg: Some("2.5".into()),
        warehouse: None,
        reorder_point: None,
        reorder_quantity: None,
    });
    let p = app.publisher();
    p.inventory(&c).unwrap();
    p.flush().unwrap();
}

fn place(order_id: &str, command_id: &str, lines: &[(&str, i32)]) -> wire::OrderCommand {
    let mut c = wire::OrderCommand::empty(command_id.into(), order_id.into(), now());
    c.place_order = Some(wire::PlaceOrder {
        customer_id: CUSTOMER.into(),
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
        payment_method: None,
        shipping_method: None,
        manual_confirmation: None,
    });
    c
}

fn with(mut c: wire::OrderCommand, f: impl FnOnce(&mut wire::PlaceOrder)) -> wire::OrderCommand {
    f(c.place_order.as_mut().unwrap());
    c
}

fn command(order_id: &str, f: impl FnOnce(&mut wire::OrderCommand)) -> wire::OrderCommand {
    let mut c = wire::OrderCommand::empty(id(), order_id.into(), now());
    f(&mut c);
    c
}

fn cancel(order_id: &str) -> wire::OrderCommand {
    command(order_id, |c| {
        c.cancel_order = Some(wire::CancelOrder {
            reason: "changed my mind".into(),
        })
    })
}

fn send(app: &TestApp, cmds: &[wire::OrderCommand]) {
    let p = app.publisher();
    for c in cmds {
        p.order(c).unwrap();
    }
    p.flush().unwrap();
}

fn order_events(app: &TestApp, order_id: &str) -> Vec<wire::OrderEvent> {
    app.read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent)
        .into_iter()
        .filter(|r| r.value.order_id == order_id)
        .map(|r| r.value)
        .collect()
}

fn payment_events(app: &TestApp, order_id: &str) -> Vec<wire::PaymentEvent> {
    app.read::<wire::PaymentEvent>(&app.topics.payment_events(), SchemaKind::PaymentEvent)
        .into_iter()
        .filter(|r| r.value.order_id == order_id)
        .map(|r| r.value)
        .collect()
}

fn terminal(e: &wire::OrderEvent) -> bool {
    e.order_completed.is_some() || e.order_cancelled.is_some()
}

/// Waits until the order's events satisfy `until`.
fn wait_for(
    app: &TestApp,
    order_id: &str,
    what: &str,
    until: impl Fn(&wire::OrderEvent) -> bool,
) -> Vec<wire::OrderEvent> {
    eventually(Duration::from_secs(60), what, || {
        let events = order_events(app, order_id);
        events.iter().any(&until).then_some(events)
    })
}

fn wait_terminal(app: &TestApp, order_id: &str) -> Vec<wire::OrderEvent> {
    wait_for(app, order_id, "a terminal order event", terminal)
}

fn cancel_reason(events: &[wire::OrderEvent]) -> wire::OrderCancelled {
    let cancels: Vec<_> = events
        .iter()
        .filter_map(|e| e.order_cancelled.clone())
        .collect();
    assert_eq!(cancels.len(), 1, "exactly one OrderCancelled");
    cancels[0].clone()
}

/// (on hand, reserved) over every warehouse, from the inventory store.
fn stock(engines: &Engines, sku: &str) -> Option<(u64, u64)> {
    let p: serde_json::Value = engines
        .state
        .stores
        .get("products", sku.as_bytes())
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())?;
    let ws = p["warehouses"].as_object()?;
    Some(ws.values().fold((0, 0), |(o, r), w| {
        (
            o + w["on_hand"].as_u64().unwrap(),
            r + w["reserved"].as_u64().unwrap(),
        )
    }))
}

fn wait_stock(engines: &Engines, sku: &str, want: (u64, u64)) {
    eventually(
        Duration::from_secs(60),
        &format!("{sku} at {want:?}"),
        || (stock(engines, sku) == Some(want)).then_some(()),
    );
}

fn names(events: &[wire::OrderEvent]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            e if e.order_created.is_some() => "OrderCreated",
            e if e.order_line_reserved.is_some() => "LineReserved",
            e if e.order_payment_requested.is_some() => "PaymentRequested",
            e if e.order_payment_authorized.is_some() => "PaymentAuthorized",
            e if e.order_confirmed.is_some() => "OrderConfirmed",
            e if e.order_paid.is_some() => "OrderPaid",
            e if e.order_line_committed.is_some() => "LineCommitted",
            e if e.order_shipment_requested.is_some() => "ShipmentRequested",
            e if e.order_shipment_created.is_some() => "ShipmentCreated",
            e if e.order_shipped.is_some() => "OrderShipped",
            e if e.order_completed.is_some() => "OrderCompleted",
            e if e.order_cancelled.is_some() => "OrderCancelled",
            e if e.command_rejected.is_some() => "CommandRejected",
            _ => "other",
        })
        .collect()
}

#[test]
fn happy_path_completes_the_order_sells_the_stock_and_charges_once() {
    let (app, engines) = setup("happy");
    let carrier = app.carrier();
    register(&app, "SKU-A", 10);
    register(&app, "SKU-B", 10);
    let order_id = id();
    send(
        &app,
        &[place(&order_id, &id(), &[("SKU-A", 2), ("SKU-B", 3)])],
    );

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
        names(&events),
        [
            "OrderCreated",
            "LineReserved",
            "LineReserved",
            "PaymentRequested",
            "PaymentAuthorized",
            "OrderConfirmed",
            "OrderPaid",
            "LineCommitted",
            "LineCommitted",
            "ShipmentRequested",
            "ShipmentCreated",
            "OrderShipped",
            "OrderCompleted"
        ]
    );
    let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=13).collect::<Vec<i64>>());
    assert_eq!(events.last().unwrap().status.as_deref(), Some("COMPLETED"));
    // Sold: the units left the books; nothing is held.
    wait_stock(&engines, "SKU-A", (8, 0));
    wait_stock(&engines, "SKU-B", (7, 0));
    // Charged exactly once, the order's total.
    let payments = payment_events(&app, &order_id);
    let captured: Vec<_> = payments
        .iter()
        .filter_map(|e| e.payment_captured.clone())
        .collect();
    assert_eq!(captured.len(), 1);
    assert_eq!(captured[0].amount, "65.00");
    // The customer context counted the completed order.
    eventually(Duration::from_secs(30), "spend recorded", || {
        app.read::<wire::CustomerEvent>(&app.topics.customer_events(), SchemaKind::CustomerEvent)
            .iter()
            .any(|r| {
                r.value
                    .customer_spend_recorded
                    .as_ref()
                    .is_some_and(|s| s.order_id == order_id && s.total == "65.00")
            })
            .then_some(())
    });
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    carrier.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn insufficient_stock_cancels_and_releases_the_reserved_lines() {
    let (app, engines) = setup("short");
    register(&app, "SKU-A", 5);
    register(&app, "SKU-B", 1);
    let order_id = id();
    send(
        &app,
        &[place(&order_id, &id(), &[("SKU-A", 2), ("SKU-B", 3)])],
    );

    let events = wait_terminal(&app, &order_id);
    let cancelled = cancel_reason(&events);
    assert!(
        cancelled.reason.contains("SKU-B") && cancelled.reason.contains("requested 3, available 1"),
        "{}",
        cancelled.reason
    );
    assert_eq!(cancelled.released_skus, vec!["SKU-A".to_string()]);
    assert!(events.iter().all(|e| e.order_payment_requested.is_none()));

    // The compensation reaches inventory: SKU-A's two units come back.
    wait_stock(&engines, "SKU-A", (5, 0));
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
fn a_declined_payment_cancels_and_releases_the_stock() {
    let (app, engines) = setup("declined");
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(
        &app,
        &[with(place(&order_id, &id(), &[("SKU-A", 2)]), |p| {
            p.payment_method = Some("tok_decline".into())
        })],
    );
    let events = wait_terminal(&app, &order_id);
    assert_eq!(
        cancel_reason(&events).reason,
        "payment declined: card declined"
    );
    assert!(events.iter().any(|e| e.order_payment_declined.is_some()));
    wait_stock(&engines, "SKU-A", (5, 0));
    assert!(payment_events(&app, &order_id)[0].payment_failed.is_some());
    engines.stop().unwrap();
}

#[test]
fn a_failed_capture_voids_the_authorization_and_releases_the_stock() {
    let (app, engines) = setup("capture");
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(
        &app,
        &[with(place(&order_id, &id(), &[("SKU-A", 2)]), |p| {
            p.payment_method = Some("tok_capture_fail".into())
        })],
    );
    let events = wait_terminal(&app, &order_id);
    let cancelled = cancel_reason(&events);
    assert!(
        cancelled.reason.starts_with("payment capture failed"),
        "{}",
        cancelled.reason
    );
    assert_eq!(
        cancelled.compensations.unwrap(),
        vec![
            "release stock SKU-A".to_string(),
            "void payment".to_string()
        ]
    );
    wait_stock(&engines, "SKU-A", (5, 0));
    eventually(Duration::from_secs(30), "the void", || {
        payment_events(&app, &order_id)
            .iter()
            .any(|e| e.payment_voided.is_some())
            .then_some(())
    });
    engines.stop().unwrap();
}

#[test]
fn an_undeliverable_order_is_refunded_and_its_sold_stock_returned() {
    let (app, engines) = setup("undeliverable");
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(
        &app,
        &[with(place(&order_id, &id(), &[("SKU-A", 2)]), |p| {
            p.shipping_address.postal_code = "00042".into()
        })],
    );
    let events = wait_terminal(&app, &order_id);
    let cancelled = cancel_reason(&events);
    assert!(
        cancelled
            .reason
            .contains("undeliverable: no carrier serves postal code 00042"),
        "{}",
        cancelled.reason
    );
    assert!(
        events.iter().any(|e| e.order_paid.is_some()),
        "it was paid first"
    );
    // The sale is undone: units back on hand, money back.
    wait_stock(&engines, "SKU-A", (5, 0));
    eventually(Duration::from_secs(30), "the refund", || {
        payment_events(&app, &order_id)
            .iter()
            .find_map(|e| e.payment_refunded.clone())
            .filter(|r| r.total_refunded == "32.00")
    });
    assert!(app.audit().is_clean());
    engines.stop().unwrap();
}

#[test]
fn a_customer_cancel_while_payment_is_pending_voids_the_late_authorization() {
    let app = TestApp::new("cancel-authorizing");
    // No payment processor yet: the saga waits at "authorizing".
    let engines = app.start_contexts(&[Context::Order, Context::Inventory, Context::Customer]);
    app.register_customer(&engines, CUSTOMER);
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(&app, &[place(&order_id, &id(), &[("SKU-A", 2)])]);
    wait_for(&app, &order_id, "the payment request", |e| {
        e.order_payment_requested.is_some()
    });
    send(&app, &[cancel(&order_id)]);
    let events = wait_terminal(&app, &order_id);
    assert_eq!(
        cancel_reason(&events).reason,
        "cancelled by customer: changed my mind"
    );
    wait_stock(&engines, "SKU-A", (5, 0));
    // The payment context comes up and authorizes the old request: the order voids it.
    let payment = app.start_contexts(&[Context::Payment]);
    wait_for(&app, &order_id, "the late authorization undone", |e| {
        e.order_late_reply_compensated
            .as_ref()
            .is_some_and(|c| c.compensation == "void payment")
    });
    eventually(Duration::from_secs(30), "the void", || {
        payment_events(&app, &order_id)
            .iter()
            .any(|e| e.payment_voided.is_some())
            .then_some(())
    });
    payment.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn a_customer_cancel_while_awaiting_confirmation_releases_the_stock() {
    let (app, engines) = setup("cancel-confirming");
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(
        &app,
        &[with(place(&order_id, &id(), &[("SKU-A", 2)]), |p| {
            p.manual_confirmation = Some(true)
        })],
    );
    wait_for(&app, &order_id, "the reservation", |e| {
        e.order_line_reserved.is_some()
    });
    wait_stock(&engines, "SKU-A", (5, 2));
    send(&app, &[cancel(&order_id)]);
    let events = wait_terminal(&app, &order_id);
    let cancelled = cancel_reason(&events);
    assert_eq!(
        cancelled.compensations.unwrap(),
        vec!["release stock SKU-A".to_string()]
    );
    assert!(events.iter().all(|e| e.order_payment_requested.is_none()));
    wait_stock(&engines, "SKU-A", (5, 0));
    engines.stop().unwrap();
}

#[test]
fn a_customer_cancel_while_the_shipment_is_requested_waits_for_the_warehouse() {
    let app = TestApp::new("cancel-requested");
    // No shipping processor yet: the order is paid and sold, the shipment only requested.
    let engines = app.start_contexts(&[
        Context::Order,
        Context::Inventory,
        Context::Payment,
        Context::Customer,
    ]);
    app.register_customer(&engines, CUSTOMER);
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(&app, &[place(&order_id, &id(), &[("SKU-A", 2)])]);
    wait_for(&app, &order_id, "the shipment request", |e| {
        e.order_shipment_requested.is_some()
    });
    send(&app, &[cancel(&order_id)]);
    wait_for(&app, &order_id, "the cancellation request", |e| {
        e.order_cancellation_requested.is_some()
    });
    assert!(
        order_events(&app, &order_id).iter().all(|e| !terminal(e)),
        "not cancelled yet"
    );
    // The warehouse comes up: creates the shipment, then cancels it; the order refunds
    // and returns the sold units.
    let shipping = app.start_contexts(&[Context::Shipping]);
    let events = wait_terminal(&app, &order_id);
    assert!(events.iter().any(|e| e.order_shipment_cancelled.is_some()));
    assert_eq!(
        cancel_reason(&events).compensations.unwrap(),
        vec!["return 2 x SKU-A".to_string(), "refund payment".to_string()]
    );
    wait_stock(&engines, "SKU-A", (5, 0));
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    shipping.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn a_customer_cancel_after_the_shipment_was_created_refunds_and_returns_the_stock() {
    let (app, engines) = setup("cancel-shipping");
    register(&app, "SKU-A", 5);
    let order_id = id();
    // No carrier: the shipment waits in the warehouse.
    send(&app, &[place(&order_id, &id(), &[("SKU-A", 2)])]);
    wait_for(&app, &order_id, "the shipment", |e| {
        e.order_shipment_created.is_some()
    });
    wait_stock(&engines, "SKU-A", (3, 0));
    send(&app, &[cancel(&order_id)]);
    let events = wait_terminal(&app, &order_id);
    assert!(
        events
            .iter()
            .any(|e| e.order_cancellation_requested.is_some())
    );
    assert!(events.iter().any(|e| e.order_shipment_cancelled.is_some()));
    let cancelled = cancel_reason(&events);
    assert_eq!(
        cancelled.compensations.unwrap(),
        vec!["return 2 x SKU-A".to_string(), "refund payment".to_string()]
    );
    wait_stock(&engines, "SKU-A", (5, 0));
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    engines.stop().unwrap();
}

#[test]
fn a_cancel_after_dispatch_is_refused_and_the_order_completes() {
    let (app, engines) = setup("cancel-late");
    let carrier = app.carrier();
    register(&app, "SKU-A", 5);
    let order_id = id();
    send(&app, &[place(&order_id, &id(), &[("SKU-A", 1)])]);
    wait_for(&app, &order_id, "completion", |e| {
        e.order_completed.is_some()
    });
    let late = cancel(&order_id);
    send(&app, std::slice::from_ref(&late));
    let events = wait_for(&app, &order_id, "the refusal", |e| {
        e.command_rejected.is_some()
    });
    let rejected = events
        .iter()
        .find_map(|e| e.command_rejected.clone())
        .unwrap();
    assert_eq!(rejected.command_id, late.command_id);
    assert!(
        rejected
            .reason
            .contains("COMPLETED and cannot be cancelled"),
        "{}",
        rejected.reason
    );
    carrier.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn a_customer_cancel_releases_all_stock_whatever_the_timing() {
    let (app, engines) = setup("cancel");
    register(&app, "SKU-A", 10);
    register(&app, "SKU-B", 10);
    let mut ids = Vec::new();
    // Cancels race the saga: some land before any reply, some once the shipment exists.
    for i in 0..6 {
        let order_id = id();
        send(
            &app,
            &[place(&order_id, &id(), &[("SKU-A", 2), ("SKU-B", 1)])],
        );
        if i % 2 == 1 {
            wait_for(&app, &order_id, "the shipment", |e| {
                e.order_shipment_created.is_some()
            });
        }
        send(&app, &[cancel(&order_id)]);
        ids.push(order_id);
    }
    for id in &ids {
        let events = wait_terminal(&app, id);
        assert_eq!(
            cancel_reason(&events).reason,
            "cancelled by customer: changed my mind"
        );
    }
    // Every unit comes back, including reservations that landed after the cancel.
    wait_stock(&engines, "SKU-A", (10, 0));
    wait_stock(&engines, "SKU-B", (10, 0));
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    engines.stop().unwrap();
}

#[test]
fn an_unconfirmed_reservation_expires_and_cancels_the_order() {
    let app = TestApp::with_saga(
        "expiry",
        3,
        SagaSettings {
            reservation_ttl: Duration::from_millis(1_500),
        },
    );
    let engines = app.start();
    app.register_customer(&engines, CUSTOMER);
    register(&app, "SKU-A", 5);
    let order_id = id();
    // Manual confirmation that never comes: the hold outlives its TTL.
    send(
        &app,
        &[with(place(&order_id, &id(), &[("SKU-A", 2)]), |p| {
            p.manual_confirmation = Some(true)
        })],
    );
    let events = wait_terminal(&app, &order_id);
    let cancelled = cancel_reason(&events);
    assert!(
        cancelled.reason.contains("reservation of SKU-A expired"),
        "{}",
        cancelled.reason
    );
    assert!(events.iter().any(|e| e.order_line_released.is_some()));
    wait_stock(&engines, "SKU-A", (5, 0));
    let expired = app
        .read::<wire::InventoryEvent>(&app.topics.inventory_events(), SchemaKind::InventoryEvent)
        .into_iter()
        .filter_map(|r| r.value.reservation_expired)
        .count();
    assert_eq!(expired, 1);
    engines.stop().unwrap();
}

#[test]
fn update_confirm_and_optimistic_concurrency_on_a_pending_order() {
    let (app, engines) = setup("update");
    let carrier = app.carrier();
    register(&app, "SKU-A", 10);
    register(&app, "SKU-B", 10);
    let order_id = id();
    send(
        &app,
        &[with(place(&order_id, &id(), &[("SKU-A", 2)]), |p| {
            p.manual_confirmation = Some(true)
        })],
    );
    let events = wait_for(&app, &order_id, "the reservation", |e| {
        e.order_line_reserved.is_some()
    });
    let version = events.last().unwrap().version;
    // A stale expected version is refused with the reason.
    let stale = command(&order_id, |c| {
        c.expected_version = Some(version - 1);
        c.confirm_order = Some(wire::ConfirmOrder { note: None });
    });
    send(&app, std::slice::from_ref(&stale));
    let events = wait_for(&app, &order_id, "the version conflict", |e| {
        e.command_rejected.is_some()
    });
    let rejected = events
        .iter()
        .find_map(|e| e.command_rejected.clone())
        .unwrap();
    assert_eq!(
        rejected.reason,
        format!(
            "expected version {}, order is at version {version}",
            version - 1
        )
    );
    // Update the lines (re-priced), then confirm at the right version.
    let update = command(&order_id, |c| {
        c.expected_version = Some(version);
        c.update_order = Some(wire::UpdateOrder {
            lines: vec![
                wire::OrderLine {
                    sku: "SKU-A".into(),
                    product_name: "A".into(),
                    quantity: 1,
                    unit_price: "10.00".into(),
                    unit_weight_kg: None,
                },
                wire::OrderLine {
                    sku: "SKU-B".into(),
                    product_name: "B".into(),
                    quantity: 4,
                    unit_price: "10.00".into(),
                    unit_weight_kg: None,
                },
            ],
        });
    });
    send(&app, &[update]);
    let events = wait_for(&app, &order_id, "the update", |e| e.order_updated.is_some());
    let updated = events.iter().find_map(|e| e.order_updated.clone()).unwrap();
    // 50.00 + 5.00 tax + 10.00 shipping (25 kg)
    assert_eq!(
        (updated.subtotal.as_str(), updated.total.as_str()),
        ("50.00", "65.00")
    );
    assert_eq!(updated.first_line_no, 1);
    wait_for(&app, &order_id, "the new reservations", |e| {
        e.order_line_reserved
            .as_ref()
            .is_some_and(|r| r.line_no == 2)
    });
    send(
        &app,
        &[command(&order_id, |c| {
            c.confirm_order = Some(wire::ConfirmOrder { note: None })
        })],
    );
    let events = wait_terminal(&app, &order_id);
    let completed = events
        .iter()
        .find_map(|e| e.order_completed.clone())
        .expect("completed");
    assert_eq!(completed.total, "65.00");
    wait_stock(&engines, "SKU-A", (9, 0));
    wait_stock(&engines, "SKU-B", (6, 0));
    carrier.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn unknown_customers_are_refused_and_loyalty_promotes_the_tier_for_later_orders() {
    let (app, engines) = setup("loyalty");
    let carrier = app.carrier();
    register(&app, "SKU-A", 1_000);
    let stranger = command(&id(), |_| {});
    let stranger = with(
        place(&stranger.order_id, &stranger.command_id, &[("SKU-A", 1)]),
        |p| p.customer_id = "11111111-2222-4333-8444-555555555555".into(),
    );
    send(&app, std::slice::from_ref(&stranger));
    let events = wait_for(&app, &stranger.order_id, "the refusal", |e| {
        e.command_rejected.is_some()
    });
    assert!(
        events[0]
            .command_rejected
            .as_ref()
            .unwrap()
            .reason
            .contains("unknown customer"),
        "{events:?}"
    );
    // 95 × 10.00 = 950 + 95 tax + shipping (475 kg → 10 + 212.50) = 1267.50 ≥ 1000: Silver.
    let big = id();
    send(&app, &[place(&big, &id(), &[("SKU-A", 95)])]);
    wait_for(&app, &big, "completion", |e| e.order_completed.is_some());
    eventually(
        Duration::from_secs(30),
        "the promotion in the table",
        || {
            app.read::<wire::CustomerRow>(&app.topics.customers(), SchemaKind::Customer)
                .iter()
                .any(|r| r.value.customer_id == CUSTOMER && r.value.tier == "SILVER")
                .then_some(())
        },
    );
    let promoted: Vec<_> = app
        .read::<wire::CustomerEvent>(&app.topics.customer_events(), SchemaKind::CustomerEvent)
        .into_iter()
        .filter_map(|r| r.value.customer_tier_promoted)
        .collect();
    assert_eq!(promoted.len(), 1);
    assert_eq!(
        (promoted[0].from_tier.as_str(), promoted[0].to_tier.as_str()),
        ("BRONZE", "SILVER")
    );
    // The order processor's global customer table follows: the next order gets 5 % off.
    eventually(Duration::from_secs(30), "a Silver-priced order", || {
        let next = id();
        send(&app, &[place(&next, &id(), &[("SKU-A", 1)])]);
        let created = wait_for(&app, &next, "creation", |e| e.order_created.is_some())
            .into_iter()
            .find_map(|e| e.order_created)?;
        (created.customer_tier == "SILVER").then_some(created)
    });
    carrier.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn a_repeated_command_id_is_applied_once_and_a_second_order_with_the_same_id_is_rejected() {
    let (app, engines) = setup("dup");
    register(&app, "SKU-A", 10);
    let order_id = id();
    let cmd = place(&order_id, &id(), &[("SKU-A", 1)]);
    send(&app, &[cmd.clone(), cmd]);
    wait_for(&app, &order_id, "the shipment", |e| {
        e.order_shipment_created.is_some()
    });
    // A different command for the same order id: rejected with a reason.
    let other = id();
    send(&app, &[place(&order_id, &other, &[("SKU-A", 1)])]);
    let events = wait_for(&app, &order_id, "the rejection", |e| {
        e.command_rejected.is_some()
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
    assert_eq!(
        payment_events(&app, &order_id)
            .iter()
            .filter(|e| e.payment_captured.is_some())
            .count(),
        1,
        "charged once"
    );
    engines.stop().unwrap();
}

#[test]
fn poison_records_go_to_the_dlq_with_reasons_and_processing_continues() {
    let (app, engines) = setup("poison");
    register(&app, "SKU-A", 10);
    let p = app.publisher();
    let topic = app.topics.order_commands();
    let valid = app
        .serde
        .encode(
            &topic,
            SchemaKind::OrderCommand,
            &place(&id(), "c", &[("SKU-A", 1)]),
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
    let bad_qty = place(&id(), &id(), &[("SKU-A", -2)]);
    let wrong_currency = with(place(&id(), &id(), &[("SKU-A", 1)]), |p| {
        p.currency = "GBP".into()
    });
    let unknown_sku = id();
    let good = id();
    send(
        &app,
        &[
            bad_qty,
            wrong_currency,
            place(&unknown_sku, &id(), &[("SKU-NOPE", 1)]),
            place(&good, &id(), &[("SKU-A", 1)]),
        ],
    );
    wait_for(&app, &good, "the good order to ship", |e| {
        e.order_shipment_created.is_some()
    });
    let unknown = wait_terminal(&app, &unknown_sku);
    assert!(
        cancel_reason(&unknown)
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
    // The chaos suite's checker finds the same: three poison records, each dead-lettered
    // once with its bytes; the refused PlaceOrders answered; no invariant broken.
    let report = erp_processors::check::check(
        &app.settings.bootstrap_servers,
        &app.serde,
        &app.topics,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(report.violation_count(), 0, "{report}");
    assert_eq!(
        (report.poison, report.poison_dead_lettered),
        (3, 3),
        "{report}"
    );
    assert_eq!(report.place_orders_rejected, 2, "{report}");
    engines.stop().unwrap();
}

#[test]
fn restart_restores_state_from_changelogs_without_duplicate_events() {
    let (app, engines) = setup("restart");
    let carrier = app.carrier();
    register(&app, "SKU-A", 100);
    let mut rng = sample::Rng::new(5);
    let cmds: Vec<_> = (0..20)
        .map(|_| place(&rng.uuid(), &rng.uuid(), &[("SKU-A", 1)]))
        .collect();
    send(&app, &cmds);
    for c in &cmds {
        wait_terminal(&app, &c.order_id);
    }
    engines.stop().unwrap();
    let before = app.read_raw(&app.topics.order_events()).len();

    // Lose the local state entirely: everything must come back from the changelogs.
    std::fs::remove_dir_all(app.state_path()).unwrap();
    let engines = app.start();
    assert_eq!(stock(&engines, "SKU-A"), Some((80, 0)), "SKU-A restored");
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
    let marker = place(&id(), &id(), &[("SKU-A", 1)]);
    let mut again = cmds.clone();
    again.push(marker.clone());
    send(&app, &again);
    wait_terminal(&app, &marker.order_id);
    let after = app.read_raw(&app.topics.order_events()).len();
    assert_eq!(
        after,
        before + 11,
        "only the marker order's 11 saga events are new"
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
    carrier.stop().unwrap();
    engines.stop().unwrap();
}

#[test]
fn customer_updates_are_validated_applied_and_versioned() {
    let (app, engines) = setup("customer-update");
    let update = |email: &str, expected: Option<i64>| {
        let mut c = wire::CustomerCommand::empty(id(), CUSTOMER.into(), now());
        c.expected_version = expected;
        c.update_customer = Some(wire::UpdateCustomer {
            email: Some(email.into()),
            phone: None,
            addresses: Some(vec![wire::Address {
                street: "2 Side St".into(),
                city: "Shelbyville".into(),
                postal_code: "90210".into(),
                country: "US".into(),
            }]),
        });
        c
    };
    let p = app.publisher();
    let (bad, stale, good) = (
        update("not-an-email", None),
        update("ann@new.example.com", Some(7)),
        update("ann@new.example.com", Some(1)),
    );
    // A client cannot buy itself a better tier by claiming completed orders.
    let mut forged = wire::CustomerCommand::empty(id(), CUSTOMER.into(), now());
    forged.record_completed_order = Some(wire::RecordCompletedOrder {
        order_id: id(),
        total: "99999.00".into(),
        currency: "USD".into(),
    });
    for c in [&bad, &stale, &forged, &good] {
        p.customer(c).unwrap();
    }
    p.flush().unwrap();
    let events = eventually(
        Duration::from_secs(30),
        "the update and two refusals",
        || {
            let ev: Vec<_> = app
                .read::<wire::CustomerEvent>(
                    &app.topics.customer_events(),
                    SchemaKind::CustomerEvent,
                )
                .into_iter()
                .map(|r| r.value)
                .collect();
            (ev.iter().filter(|e| e.command_rejected.is_some()).count() == 3
                && ev.iter().any(|e| e.customer_updated.is_some()))
            .then_some(ev)
        },
    );
    let reasons: BTreeMap<String, String> = events
        .iter()
        .filter_map(|e| e.command_rejected.clone())
        .map(|r| (r.command_id, r.reason))
        .collect();
    assert!(reasons[&bad.command_id].contains("email \"not-an-email\" is invalid"));
    assert_eq!(
        reasons[&stale.command_id],
        "expected version 7, customer is at version 1"
    );
    assert!(reasons[&forged.command_id].contains("reported by the order context"));
    let updated = events
        .iter()
        .find(|e| e.customer_updated.is_some())
        .unwrap();
    assert_eq!(updated.version, 2);
    let stored: serde_json::Value = serde_json::from_slice(
        &engines
            .state
            .stores
            .get("customers", CUSTOMER.as_bytes())
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["email"], "ann@new.example.com");
    assert_eq!(stored["addresses"][0]["city"], "Shelbyville");
    engines.stop().unwrap();
}
