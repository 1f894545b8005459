//! The REST surface over a real socket, against a running `erp run` (real broker,
//! registry and RocksDB): commands in over HTTP, the saga runs, lookups answer, and the
//! caller's correlation id and W3C trace context travel into Kafka — and the trace,
//! exported over OTLP, continues the caller's.

use std::time::Duration;

use serde_json::{Value, json};

use erp_schemas::traceparent::{TraceParent, to_hex};
use erp_schemas::{SchemaKind, wire};
use erp_tests::otlp::{OtlpReceiver, ReceivedSpan};
use erp_tests::process::Instance;
use erp_tests::{TestApp, eventually};

#[test]
fn an_order_placed_over_http_runs_the_saga_and_is_readable_over_http() {
    let app = TestApp::new("rest");
    // Spans go to a real OTLP/gRPC receiver.
    let otlp = OtlpReceiver::start();
    let instance = Instance::spawn_with(
        &app,
        "r1",
        &app.state_path(),
        &[("ERP_OTLP_ENDPOINT", &otlp.endpoint())],
    );
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
    // The caller traces its checkout: one trace, a span of its own per request.
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let caller_spans = ["00f067aa0ba902b7", "00f067aa0ba902b8", "00f067aa0ba902b9"];
    let traceparent = |span: &str| format!("00-{trace}-{span}-01");
    let place = || {
        http.post(format!("{base}/api/v1/orders"))
            .header("Idempotency-Key", "rest-test-order-1")
            .header("X-Correlation-ID", "rest-corr-1")
            .header("traceparent", traceparent(caller_spans[0]))
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
    for (step, span) in ["dispatch", "deliver"].into_iter().zip(&caller_spans[1..]) {
        let resp = http
            .post(format!("{base}/api/v1/shipments/{order_id}/{step}"))
            .header("traceparent", traceparent(span))
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
    // Every order event continues the caller's trace.
    for r in &mine {
        let p = TraceParent::parse(&r.headers["traceparent"]).expect("a valid traceparent");
        assert_eq!(to_hex(&p.trace_id), trace);
    }

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

    // The exported trace: the processors' record spans under the caller's spans, one
    // connected tree through every hop of the saga.
    let hops = [
        "order-commands",
        "inventory-commands",
        "order-replies",
        "payment-commands",
        "payment-events",
        "shipping-commands",
        "shipping-events",
    ];
    let spans = eventually(Duration::from_secs(30), "every hop's span exported", || {
        let spans: Vec<ReceivedSpan> = otlp
            .spans()
            .into_iter()
            .filter(|s| s.name == "record" && to_hex(&s.trace_id) == trace)
            .collect();
        hops.iter()
            .all(|hop| {
                spans
                    .iter()
                    .any(|s| s.attributes.get("topic").is_some_and(|t| t.ends_with(hop)))
            })
            .then_some(spans)
    });
    assert!(
        spans
            .iter()
            .all(|s| (s.service.as_str(), s.instance.as_str()) == ("erp", "r1")),
        "{spans:?}"
    );
    let ids: std::collections::HashSet<String> = spans.iter().map(|s| to_hex(&s.span_id)).collect();
    for s in &spans {
        let parent = to_hex(&s.parent_span_id);
        assert!(
            caller_spans.contains(&parent.as_str()) || ids.contains(&parent),
            "{:?} has parent {parent}, which is neither the caller's nor exported",
            s.attributes
        );
        // The caller's spans are parents of the commands they sent, and only of those.
        if caller_spans.contains(&parent.as_str()) {
            let topic = &s.attributes["topic"];
            assert!(
                topic.ends_with("order-commands") || topic.ends_with("shipping-commands"),
                "{topic}"
            );
        }
    }
    instance.stop();
}

/// Interactive queries across instances: each key is answered by the instance that owns
/// its partition (lookups elsewhere are forwarded), and while one instance restarts the
/// other answers every key — after at most a bounded wait — never 404 or 5xx.
#[test]
fn every_order_is_readable_from_either_instance_even_while_one_restarts() {
    use erp_connectors::sample::{self, Mix};
    use erp_tests::process::seed_customers;

    let app = TestApp::with_partitions("route", 4);
    let dir = |id: &str| app.state_path().join(id);
    let a = Instance::spawn(&app, "a", &dir("a"));
    let b = Instance::spawn(&app, "b", &dir("b"));
    a.wait_ready();
    b.wait_ready();
    eventually(Duration::from_secs(60), "tasks on both instances", || {
        (a.metric_sum("erp_assigned_tasks") >= 4.0 && b.metric_sum("erp_assigned_tasks") >= 4.0)
            .then_some(())
    });
    let mut rng = sample::Rng::new(11);
    let customers = seed_customers(&app, &[&a, &b], &mut rng, 3);
    let p = app.publisher();
    let products = sample::products(&mut rng, 4, 1_000, 1);
    for c in &products {
        p.inventory(c).unwrap();
    }
    let orders: Vec<String> = (0..40)
        .map(|i| {
            let o = sample::order(&mut rng, 4, &customers, Mix::NONE, 100 + i).command;
            p.order(&o).unwrap();
            o.order_id
        })
        .collect();
    p.flush().unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let get = |port: u16, id: &str| {
        let r = http
            .get(format!("http://127.0.0.1:{port}/api/v1/orders/{id}"))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    // Created everywhere first (the saga keeps running; we only need the orders).
    for id in &orders {
        eventually(Duration::from_secs(60), "the order", || {
            (get(a.port, id).0 == 200).then_some(())
        });
    }
    let hosted_by_b = orders
        .iter()
        .filter(|id| {
            let (status, order) = get(b.port, id);
            assert_eq!(status, 200, "{id} from b");
            assert_eq!(order["id"], id.as_str());
            let (status, _) = get(a.port, id);
            assert_eq!(status, 200, "{id} from a");
            // Whose is it? Ask b without forwarding.
            http.get(format!("http://127.0.0.1:{}/api/v1/orders/{id}", b.port))
                .header("x-erp-forwarded", "1")
                .send()
                .unwrap()
                .status()
                == 200
        })
        .count();
    assert!(
        hosted_by_b > 0 && hosted_by_b < orders.len(),
        "both instances host some orders ({hosted_by_b} of {})",
        orders.len()
    );
    // Lists fan out to every instance and merge: either instance lists all 40.
    for port in [a.port, b.port] {
        let page: Value = http
            .get(format!("http://127.0.0.1:{port}/api/v1/orders?limit=100"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(page["total"], 40, "{page}");
        let mut listed: Vec<&str> = page["orders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap())
            .collect();
        listed.sort_unstable();
        let mut placed: Vec<&str> = orders.iter().map(String::as_str).collect();
        placed.sort_unstable();
        assert_eq!(listed, placed, "orders listed by the instance at {port}");
    }
    // Read-your-writes over HTTP: POST with `Prefer: wait` answers with the order itself,
    // whichever instance hosts it.
    let (customer, sku) = (customers[0].clone(), products[0].sku.clone());
    for _ in 0..4 {
        let (status, applied, order) = place_waiting(a.port, &customer, &sku);
        assert_eq!(
            (status, applied.as_deref()),
            (200, Some("wait=20")),
            "{order}"
        );
        assert!(order["version"].as_i64().unwrap() >= 1, "{order}");
    }

    // Restart b (same address): meanwhile every order stays readable from a. A client
    // honours Retry-After; the wait is bounded.
    let a_port = a.port;
    let ids = orders.clone();
    let reader = std::thread::spawn(move || {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut finals = std::collections::BTreeMap::<u16, usize>::new();
        let mut longest = Duration::ZERO;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            for id in &ids {
                let asked = std::time::Instant::now();
                let status = loop {
                    let r = http
                        .get(format!("http://127.0.0.1:{a_port}/api/v1/orders/{id}"))
                        .send();
                    match r {
                        Ok(r) if r.status() == 503 && r.headers().contains_key("retry-after") => {
                            if asked.elapsed() > Duration::from_secs(30) {
                                break 503;
                            }
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        Ok(r) => break r.status().as_u16(),
                        Err(_) => break 0,
                    }
                };
                longest = longest.max(asked.elapsed());
                *finals.entry(status).or_default() += 1;
            }
        }
        (finals, longest)
    });
    let b_port = b.port;
    b.stop();
    // Read-your-writes across b's restart: an order placed meanwhile (its partition may
    // be b's, unowned until b is back) is answered once applied.
    let placing = std::thread::spawn(move || place_waiting(a_port, &customer, &sku));
    let b = Instance::spawn_at(&app, "b", &dir("b"), &[], b_port);
    b.wait_ready();
    let (finals, longest) = reader.join().unwrap();
    let (status, applied, order) = placing.join().unwrap();
    assert_eq!(
        (status, applied.as_deref()),
        (200, Some("wait=20")),
        "{order}"
    );
    eprintln!(
        "lookups on a during b's restart: final statuses {finals:?}, longest wait {longest:?}"
    );
    assert_eq!(
        finals.keys().copied().collect::<Vec<_>>(),
        vec![200],
        "{finals:?}"
    );
    assert!(longest < Duration::from_secs(30));
    for id in &orders {
        eventually(
            Duration::from_secs(30),
            "readable from the restarted b",
            || (get(b.port, id).0 == 200).then_some(()),
        );
    }
    a.stop();
    b.stop();
}

/// POST /api/v1/orders with `Prefer: wait=20`: (status, Preference-Applied, body).
fn place_waiting(port: u16, customer: &str, sku: &str) -> (u16, Option<String>, Value) {
    let body = serde_json::json!({
        "customer_id": customer, "currency": "USD",
        "lines": [{"sku": sku, "quantity": 1, "unit_price": "10.00"}],
        "shipping_address": {"street": "1 Main St", "city": "Springfield",
                             "postal_code": "12345", "country": "US"},
    });
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(40))
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/api/v1/orders"))
        .header("prefer", "wait=20")
        .json(&body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let applied = r
        .headers()
        .get("preference-applied")
        .map(|v| v.to_str().unwrap().to_string());
    (status, applied, r.json::<Value>().unwrap())
}

/// Auth end to end: a real `erp run` with `ERP_JWT_HS256_SECRET`, over a real socket.
/// Missing, expired and forged tokens get 401 with a problem body, a reader may not
/// command (403), a writer may; neither the secret nor a token reaches the log.
#[test]
fn with_a_jwt_secret_the_running_service_checks_every_token_and_logs_none() {
    const SECRET: &str = "e2e-secret-of-at-least-32-bytes-0123456789";
    let token = |scope: &str, lifetime: i64, key: &[u8]| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({"sub": "e2e", "scope": scope, "exp": now + lifetime}),
            &jsonwebtoken::EncodingKey::from_secret(key),
        )
        .unwrap()
    };
    let app = TestApp::new("jwt");
    let log = app.state_path().join("erp-run.log");
    let instance = Instance::spawn_logged(
        &app,
        "j1",
        &app.state_path().join("j1"),
        &[("ERP_JWT_HS256_SECRET", SECRET)],
        &log,
    );
    instance.wait_ready();
    let base = format!("http://127.0.0.1:{}", instance.port);
    let http = reqwest::blocking::Client::new();
    let order = format!("{base}/api/v1/orders/{}", uuid::Uuid::new_v4());

    let resp = http.get(&order).send().unwrap();
    assert_eq!(resp.status(), 401);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(resp.json::<Value>().unwrap()["status"], 401);
    let expired = token("erp:read", -120, SECRET.as_bytes());
    let forged = token(
        "erp:read erp:write",
        600,
        b"somebody-else-s-secret-of-32-bytes!!",
    );
    for (what, bad) in [("expired", &expired), ("forged", &forged)] {
        let resp = http.get(&order).bearer_auth(bad).send().unwrap();
        assert_eq!(resp.status(), 401, "{what} token");
        let body: Value = resp.json().unwrap();
        assert_eq!(body["status"], 401, "{what}: {body}");
    }
    let reader = token("erp:read", 600, SECRET.as_bytes());
    let resp = http.get(&order).bearer_auth(&reader).send().unwrap();
    assert_eq!(resp.status(), 404, "a reader gets past auth to the lookup");
    let customer = json!({
        "name": "Token Holder",
        "email": "token@example.com",
        "address": {"street": "1 Main", "city": "Town", "postal_code": "10001", "country": "US"},
    });
    let customers = format!("{base}/api/v1/customers");
    let resp = http
        .post(&customers)
        .bearer_auth(&reader)
        .json(&customer)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 403, "a reader may not command");
    let writer = token("erp:read erp:write", 600, SECRET.as_bytes());
    let resp = http
        .post(&customers)
        .bearer_auth(&writer)
        .json(&customer)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    for open in ["/health/live", "/metrics"] {
        assert_eq!(
            http.get(format!("{base}{open}")).send().unwrap().status(),
            200,
            "{open}"
        );
    }

    instance.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.is_empty(), "the service logged nothing at info");
    for (what, secret) in [
        ("secret", SECRET),
        ("reader token", &reader),
        ("writer token", &writer),
        ("forged token", &forged),
    ] {
        assert!(!text.contains(secret), "the {what} is in the log");
    }
}
