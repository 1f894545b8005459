//! The REST surface over a real socket, against a running `erp run` (real broker,
//! registry and RocksDB): commands in over HTTP, the saga runs, lookups answer, and the
//! caller's correlation id travels into Kafka.

use std::time::Duration;

use serde_json::{Value, json};

use erp_schemas::{SchemaKind, wire};
use erp_tests::process::Instance;
use erp_tests::{TestApp, eventually};

#[test]
fn an_order_placed_over_http_runs_the_saga_and_is_readable_over_http() {
    let app = TestApp::new("rest");
    let instance = Instance::spawn(&app, "r1", &app.state_path());
    instance.wait_ready();
    let base = format!("http://127.0.0.1:{}", instance.port);
    let http = reqwest::blocking::Client::new();

    // Register a customer over HTTP and wait until orders can see it.
    let resp = http
        .post(format!("{base}/api/v1/customers"))
        .json(&json!({
            "name": "Rest Client",
            "email": "rest@example.com",
            "address": {"street": "1 Main", "city": "Town", "postal_code": "10001", "country": "US"},
        }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    let customer_id = resp.json::<Value>().unwrap()["customer_id"]
        .as_str()
        .unwrap()
        .to_string();
    eventually(
        Duration::from_secs(30),
        "the customer visible to orders",
        || {
            let v: Value = http
                .get(format!("{base}/api/v1/customers/{customer_id}"))
                .send()
                .ok()?
                .json()
                .ok()?;
            (v["visible_to_orders"] == true).then_some(())
        },
    );
    // The product comes from the catalogue (a Kafka client); restock over HTTP.
    let mut register = wire::InventoryCommand::empty(
        uuid::Uuid::new_v4().to_string(),
        "SKU-R".into(),
        1_767_225_600_000,
    );
    register.register_product = Some(wire::RegisterProduct {
        name: "R".into(),
        initial_stock: 1,
        low_stock_threshold: 0,
        unit_weight_kg: None,
        warehouse: None,
        reorder_point: None,
        reorder_quantity: None,
    });
    let p = app.publisher();
    p.inventory(&register).unwrap();
    p.flush().unwrap();
    let resp = http
        .post(format!("{base}/api/v1/inventory/SKU-R/restock"))
        .json(&json!({"quantity": 4, "warehouse": "east"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    eventually(Duration::from_secs(30), "5 units on hand", || {
        let v: Value = http
            .get(format!("{base}/api/v1/inventory/SKU-R"))
            .send()
            .ok()?
            .json()
            .ok()?;
        (v["on_hand"] == 5).then_some(())
    });

    // Place the order twice with one Idempotency-Key: one order, the same answer.
    let order = json!({
        "customer_id": customer_id,
        "currency": "USD",
        "lines": [{"sku": "SKU-R", "quantity": 2, "unit_price": "12.50"}],
        "shipping_address": {"street": "1 Main", "city": "Town", "postal_code": "10001", "country": "US"},
    });
    let place = || {
        http.post(format!("{base}/api/v1/orders"))
            .header("Idempotency-Key", "rest-test-order-1")
            .header("X-Correlation-ID", "rest-corr-1")
            .json(&order)
            .send()
            .unwrap()
    };
    let first = place();
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["x-correlation-id"], "rest-corr-1");
    let location = first.headers()["location"].to_str().unwrap().to_string();
    let first: Value = first.json().unwrap();
    let second: Value = place().json().unwrap();
    assert_eq!(first, second);
    let order_id = first["order_id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/orders/{order_id}"));

    // No carrier here: the client dispatches and delivers over HTTP once it shipped.
    let status = |http: &reqwest::blocking::Client| -> Option<Value> {
        http.get(format!("{base}{location}"))
            .send()
            .ok()?
            .json()
            .ok()
    };
    eventually(Duration::from_secs(60), "the shipment", || {
        status(&http).filter(|o| o["shipment"] == "Created")
    });
    for step in ["dispatch", "deliver"] {
        let resp = http
            .post(format!("{base}/api/v1/shipments/{order_id}/{step}"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let done = eventually(Duration::from_secs(60), "completion", || {
        status(&http).filter(|o| o["status"] == "Completed")
    });
    assert_eq!(done["pricing"]["total"]["amount"], "37.50");
    let shipment: Value = http
        .get(format!("{base}/api/v1/shipments/{order_id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(shipment["status"], "Delivered");
    let payment: Value = http
        .get(format!("{base}/api/v1/payments/{order_id}"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(payment["status"], "Captured");

    // One order despite the repeated POST, and the caller's correlation id in Kafka.
    let events = app.read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent);
    let mine: Vec<_> = events
        .iter()
        .filter(|r| r.value.order_id == order_id)
        .collect();
    assert_eq!(
        mine.iter()
            .filter(|r| r.value.order_created.is_some())
            .count(),
        1
    );
    assert!(
        mine.iter()
            .all(|r| r.headers["correlation_id"] == "rest-corr-1")
    );

    // The timeline: every step with the input record that caused it and what it sent.
    let timeline: Value = http
        .get(format!("{base}{location}/timeline"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let entries = timeline["entries"].as_array().unwrap();
    assert_eq!(entries[0]["event"], "OrderCreated");
    assert!(
        entries[0]["cause"]["topic"]
            .as_str()
            .unwrap()
            .ends_with("order-commands")
    );
    assert_eq!(entries[0]["cause"]["id"], first["command_id"]);
    assert!(
        entries[0]["sent"][0]
            .as_str()
            .unwrap()
            .starts_with("inventory: ReserveStock 2 x SKU-R")
    );
    assert_eq!(entries.last().unwrap()["event"], "OrderCompleted");
    // The customer's orders, listed.
    let list: Value = http
        .get(format!(
            "{base}/api/v1/orders?customer_id={customer_id}&status=completed"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(list["total"], 1);
    assert_eq!(list["orders"][0]["id"], order_id.as_str());

    // A cancel after delivery: accepted for processing, refused by the order; the
    // client reads its own write (the refusal) by waiting for its command id.
    let resp = http.delete(format!("{base}{location}")).send().unwrap();
    assert_eq!(resp.status(), 202);
    let cancel_id = resp.json::<Value>().unwrap()["command_id"]
        .as_str()
        .unwrap()
        .to_string();
    let after: Value = http
        .get(format!(
            "{base}{location}?wait_for={cancel_id}&timeout_ms=10000"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let last = after["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["event"], "CommandRejected");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .contains("cannot be cancelled")
    );
    assert_eq!(after["status"], "Completed");
    instance.stop();
}
