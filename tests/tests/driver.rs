//! The whole saga through five broker-free topology drivers (the registry is real: the
//! processors read and write the Confluent wire format). Records are shuttled between
//! the drivers as Kafka would route them; a simulated carrier dispatches and delivers.

use std::sync::Arc;
use std::time::Duration;

use erp_processors::app::{Context, SagaSettings};
use erp_processors::engine::TopologyTestDriver;
use erp_processors::engine::trace::{TRACEPARENT, TraceParent, to_hex, traceparent_of};
use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};
use erp_tests::{CUSTOMER, TestApp, registry_url};

const ORDER: &str = "6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11";

struct Saga {
    topics: Topics,
    serde: Arc<AvroSerde>,
    order: TopologyTestDriver,
    inventory: TopologyTestDriver,
    payment: TopologyTestDriver,
    shipping: TopologyTestDriver,
    customer: TopologyTestDriver,
    loyalty: TopologyTestDriver,
    /// Every order event so far (they are also routed to the loyalty driver).
    order_events: Vec<Vec<u8>>,
    /// The trace context of every record moved between drivers, in order.
    traces: Vec<(String, Option<TraceParent>)>,
}

impl Saga {
    fn new(ttl: Duration) -> Self {
        let topics = Topics::new(format!(
            "drv-{}-",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let serde = Arc::new(AvroSerde::new(&registry_url()));
        for (topic, kind) in topics.subjects() {
            serde
                .register(&topic, kind)
                .expect("registry reachable (scripts/stack.sh up)");
        }
        let saga = SagaSettings {
            reservation_ttl: ttl,
        };
        let mut drivers = Context::all_topologies(&Context::ALL, &topics, serde.clone(), saga)
            .into_iter()
            .map(|t| TopologyTestDriver::new(t, 3));
        let mut next = || {
            drivers
                .next()
                .expect("one topology per context, two for customer")
        };
        Self {
            order: next(),
            inventory: next(),
            payment: next(),
            shipping: next(),
            customer: next(),
            loyalty: next(),
            order_events: Vec::new(),
            traces: Vec::new(),
            topics,
            serde,
        }
    }

    fn encode<T: serde::Serialize>(&self, topic: &str, kind: SchemaKind, v: &T) -> Vec<u8> {
        self.serde.encode(topic, kind, v).unwrap()
    }

    /// Shuttles records between the drivers until nothing moves.
    fn settle(&mut self) {
        let t = self.topics.clone();
        loop {
            let mut moved = 0;
            let routes: [(&str, String, String); 8] = [
                ("order", t.inventory_commands(), "inventory".into()),
                ("inventory", t.inventory_commands(), "inventory".into()),
                ("inventory", t.order_replies(), "order".into()),
                ("order", t.payment_commands(), "payment".into()),
                ("payment", t.payment_events(), "order".into()),
                ("order", t.shipping_commands(), "shipping".into()),
                ("loyalty", t.customer_completed_orders(), "customer".into()),
                ("customer", t.customers(), "customer-table".into()),
            ];
            for (from, topic, to) in routes {
                let records = self.driver(from).read_output(&topic);
                moved += records.len();
                for r in records {
                    self.traces
                        .push((topic.clone(), traceparent_of(&r.headers)));
                    if to == "customer-table" {
                        self.order
                            .pipe_global("customer-table", &r.key, Some(&r.value));
                    } else {
                        // Kafka carries headers: the trace context travels with them.
                        self.driver(&to)
                            .pipe_with_headers(&topic, &r.key, &r.value, r.timestamp, r.headers)
                            .unwrap();
                    }
                }
            }
            // Shipping events go to the order, and the carrier acts on new shipments.
            for r in self.shipping.read_output(&t.shipping_events()) {
                moved += 1;
                let trace = traceparent_of(&r.headers);
                self.traces.push((t.shipping_events(), trace));
                self.order
                    .pipe_with_headers(
                        &t.shipping_events(),
                        &r.key,
                        &r.value,
                        r.timestamp,
                        r.headers.clone(),
                    )
                    .unwrap();
                let e: wire::ShippingEvent = self
                    .serde
                    .decode(SchemaKind::ShippingEvent, &r.value)
                    .unwrap();
                if e.shipment_created.is_some() {
                    for (i, what) in ["dispatch", "deliver"].iter().enumerate() {
                        let mut c = wire::ShippingCommand::empty(
                            format!("{}-{what}", e.event_id),
                            e.order_id.clone(),
                            r.timestamp + 1 + i as i64,
                        );
                        if *what == "dispatch" {
                            c.dispatch_shipment = Some(wire::DispatchShipment { note: None });
                        } else {
                            c.deliver_shipment = Some(wire::DeliverShipment { note: None });
                        }
                        let v =
                            self.encode(&t.shipping_commands(), SchemaKind::ShippingCommand, &c);
                        // An instrumented carrier continues the shipment's trace.
                        let headers = trace
                            .map(|p| vec![(TRACEPARENT.to_string(), p.header().into_bytes())])
                            .unwrap_or_default();
                        self.shipping
                            .pipe_with_headers(
                                &t.shipping_commands(),
                                e.order_id.as_bytes(),
                                &v,
                                c.issued_at,
                                headers,
                            )
                            .unwrap();
                    }
                }
            }
            for r in self.order.read_output(&t.order_events()) {
                moved += 1;
                self.traces
                    .push((t.order_events(), traceparent_of(&r.headers)));
                self.loyalty
                    .pipe_with_headers(&t.order_events(), &r.key, &r.value, r.timestamp, r.headers)
                    .unwrap();
                self.order_events.push(r.value);
            }
            if moved == 0 {
                break;
            }
        }
    }

    fn driver(&mut self, name: &str) -> &mut TopologyTestDriver {
        match name {
            "order" => &mut self.order,
            "inventory" => &mut self.inventory,
            "payment" => &mut self.payment,
            "shipping" => &mut self.shipping,
            "loyalty" => &mut self.loyalty,
            _ => &mut self.customer,
        }
    }

    fn seed(&mut self, stock: i32) {
        let reg = TestApp::registration(CUSTOMER);
        let v = self.encode(
            &self.topics.customer_commands(),
            SchemaKind::CustomerCommand,
            &reg,
        );
        self.customer
            .pipe(&self.topics.customer_commands(), CUSTOMER.as_bytes(), &v, 1)
            .unwrap();
        let mut register = wire::InventoryCommand::empty("c-1".into(), "SKU-A".into(), 1);
        register.register_product = Some(wire::RegisterProduct {
            name: "A".into(),
            initial_stock: stock,
            low_stock_threshold: 1,
            unit_weight_kg: None,
            warehouse: None,
            reorder_point: None,
            reorder_quantity: None,
        });
        let v = self.encode(
            &self.topics.inventory_commands(),
            SchemaKind::InventoryCommand,
            &register,
        );
        self.inventory
            .pipe(&self.topics.inventory_commands(), b"SKU-A", &v, 1)
            .unwrap();
        self.settle();
    }

    fn place(&mut self, manual_confirmation: bool) {
        let mut place = wire::OrderCommand::empty("c-2".into(), ORDER.into(), 2);
        place.place_order = Some(wire::PlaceOrder {
            customer_id: CUSTOMER.into(),
            currency: "EUR".into(),
            lines: vec![wire::OrderLine {
                sku: "SKU-A".into(),
                product_name: "A".into(),
                quantity: 3,
                unit_price: "19.99".into(),
                unit_weight_kg: Some("20".into()),
            }],
            shipping_address: wire::Address {
                street: "1 Rue".into(),
                city: "Paris".into(),
                postal_code: "95001".into(),
                country: "FR".into(),
            },
            payment_method: None,
            shipping_method: None,
            manual_confirmation: Some(manual_confirmation),
        });
        let v = self.encode(
            &self.topics.order_commands(),
            SchemaKind::OrderCommand,
            &place,
        );
        self.order
            .pipe(&self.topics.order_commands(), ORDER.as_bytes(), &v, 2)
            .unwrap();
        self.settle();
    }

    fn order_events(&mut self) -> Vec<wire::OrderEvent> {
        self.order_events
            .iter()
            .map(|v| self.serde.decode(SchemaKind::OrderEvent, v).unwrap())
            .collect()
    }

    /// Five units in stock, an order placed that holds three of them (not yet paid).
    fn holding_three_units(ttl: Duration) -> Self {
        let mut saga = Self::new(ttl);
        saga.seed(5);
        saga.place(true);
        assert_eq!(saga.product()["warehouses"]["main"]["reserved"], 3);
        saga
    }

    fn product(&self) -> serde_json::Value {
        serde_json::from_slice(&self.inventory.store_get("products", b"SKU-A").unwrap()).unwrap()
    }
}

#[test]
fn the_whole_saga_runs_through_topology_drivers() {
    let mut saga = Saga::new(Duration::from_secs(900));
    saga.seed(5);
    saga.place(false);
    let events = saga.order_events();
    let created = events[0].order_created.as_ref().unwrap();
    // 3 × 19.99 = 59.97; tax 6.00; 60 kg → 10 + 5 + 15 (remote "9…") = 30.00; total 95.97
    assert_eq!(
        (
            created.subtotal.as_str(),
            created.tax.as_str(),
            created.shipping_cost.as_str(),
            created.total.as_str()
        ),
        ("59.97", "6.00", "30.00", "95.97")
    );
    let statuses: Vec<&str> = events.iter().filter_map(|e| e.status.as_deref()).collect();
    assert_eq!(statuses.first(), Some(&"PENDING"));
    assert_eq!(statuses.last(), Some(&"COMPLETED"));
    assert_eq!(
        events
            .iter()
            .filter(|e| e.order_completed.is_some())
            .count(),
        1
    );
    // Sold: three units left the books, nothing is held.
    let product = saga.product();
    assert_eq!(product["warehouses"]["main"]["on_hand"], 2);
    assert_eq!(product["warehouses"]["main"]["reserved"], 0);
    // The customer's lifetime spend counts the completed order.
    let customer: serde_json::Value = serde_json::from_slice(
        &saga
            .customer
            .store_get("customers", CUSTOMER.as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(customer["lifetime_spend"]["EUR"], "95.97");
}

#[test]
fn one_order_is_one_trace_across_every_processor() {
    let mut saga = Saga::new(Duration::from_secs(900));
    saga.seed(5);
    let before = saga.traces.len();
    saga.place(false);
    let moved = &saga.traces[before..];
    assert!(moved.len() > 15, "{} records moved", moved.len());
    let missing: Vec<&String> = moved
        .iter()
        .filter(|(_, p)| p.is_none())
        .map(|(t, _)| t)
        .collect();
    assert!(
        missing.is_empty(),
        "records without traceparent on {missing:?}"
    );
    let traces: std::collections::BTreeSet<[u8; 16]> = moved
        .iter()
        .filter_map(|(_, p)| p.map(|p| p.trace_id))
        .collect();
    assert_eq!(traces.len(), 1, "one order, one trace: {traces:?}");
    let topics: std::collections::BTreeSet<&str> = moved.iter().map(|(t, _)| t.as_str()).collect();
    for hop in [
        "inventory-commands",
        "order-replies",
        "payment-events",
        "shipping-events",
        "order-events",
    ] {
        assert!(
            topics.iter().any(|t| t.ends_with(hop)),
            "{hop} not in {topics:?}"
        );
    }
    // Each hop is a child of the record that caused it: the parent spans differ.
    let parents: std::collections::BTreeSet<[u8; 8]> = moved
        .iter()
        .filter_map(|(_, p)| p.map(|p| p.parent_id))
        .collect();
    assert!(parents.len() > 5, "{parents:?}");
}

/// What the SDK exports, kept in memory (the OTLP transport itself is tested against a
/// real receiver in rest.rs).
#[derive(Debug, Clone, Default)]
struct Exported(Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Exported {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// The process's one subscriber, exporting every span of every test here: a scoped
/// (`with_default`) subscriber misses spans whose callsites another test thread
/// registered first, so each test picks its own trace out of the global one.
fn exported() -> &'static (Exported, opentelemetry_sdk::trace::SdkTracerProvider) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    static EXPORTED: std::sync::OnceLock<(Exported, opentelemetry_sdk::trace::SdkTracerProvider)> =
        std::sync::OnceLock::new();
    EXPORTED.get_or_init(|| {
        let exported = Exported::default();
        let provider = erp_processors::telemetry::tracer_provider(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("driver")
                .build(),
        )
        .with_simple_exporter(exported.clone())
        .build();
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer("test"))
                    .with_filter(erp_processors::telemetry::exported()),
            ),
        )
        .expect("no other global subscriber in the driver tests");
        (exported, provider)
    })
}

#[test]
fn the_exported_spans_are_the_ones_the_traceparent_headers_name() {
    use opentelemetry::trace::SpanId;

    let (exported, provider) = exported();
    let mut saga = Saga::new(Duration::from_secs(900));
    saga.seed(5);
    let before = saga.traces.len();
    saga.place(false);
    provider.force_flush().unwrap();
    let moved = &saga.traces[before..];
    let trace = moved[0].1.expect("traced").trace_id;

    let spans: Vec<_> = exported
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "record" && s.span_context.trace_id().to_bytes() == trace)
        .cloned()
        .collect();
    assert!(spans.len() > 15, "{} record spans", spans.len());
    let ids: std::collections::HashSet<[u8; 8]> = spans
        .iter()
        .map(|s| s.span_context.span_id().to_bytes())
        .collect();
    assert_eq!(ids.len(), spans.len(), "one span per processed record");
    // Every header names an exported span as the writer of its record...
    for (topic, p) in moved {
        let p = p.expect("traced");
        assert!(
            ids.contains(&p.parent_id),
            "{topic}: its writer's span {} was not exported",
            to_hex(&p.parent_id)
        );
    }
    // ...and the spans form one tree: a root (the PlaceOrder, sent without a trace
    // context) and every other span's parent exported.
    let roots = spans
        .iter()
        .filter(|s| s.parent_span_id == SpanId::INVALID)
        .count();
    assert_eq!(roots, 1);
    for s in &spans {
        assert!(
            s.parent_span_id == SpanId::INVALID || ids.contains(&s.parent_span_id.to_bytes()),
            "{:?}: dangling parent",
            s.attributes
        );
    }
}

#[test]
fn an_unconfirmed_order_loses_its_reservation_to_the_expiry_punctuation() {
    let mut saga = Saga::holding_three_units(Duration::from_millis(1_000));
    // Within the TTL nothing happens, however old the record's timestamp is.
    for _ in 0..3 {
        saga.inventory.advance_wall_clock(250).unwrap();
    }
    saga.settle();
    assert_eq!(saga.product()["warehouses"]["main"]["reserved"], 3);
    // The wall clock moves past the TTL: the punctuation writes ExpireReservation to the
    // inventory's own input, inventory releases and tells the order.
    for _ in 0..8 {
        saga.inventory.advance_wall_clock(250).unwrap();
    }
    saga.settle();
    let events = saga.order_events();
    let cancelled = events
        .iter()
        .find_map(|e| e.order_cancelled.clone())
        .expect("cancelled");
    assert!(cancelled.reason.contains("expired"), "{}", cancelled.reason);
    assert_eq!(saga.product()["warehouses"]["main"]["reserved"], 0);
}

#[test]
fn a_lagging_inventory_writes_one_expiry_per_hold_not_one_per_punctuation() {
    let mut saga = Saga::holding_three_units(Duration::from_millis(1_000));
    // Ten TTLs of punctuations while the ExpireReservation written by the first one is
    // still unread (the processor lags behind its own input): it is written once.
    for _ in 0..40 {
        saga.inventory.advance_wall_clock(250).unwrap();
    }
    let topic = saga.topics.inventory_commands();
    let written: Vec<wire::InventoryCommand> = saga
        .inventory
        .read_output(&topic)
        .iter()
        .map(|r| {
            saga.serde
                .decode(SchemaKind::InventoryCommand, &r.value)
                .unwrap()
        })
        .collect();
    let expiries = written
        .iter()
        .filter(|c| c.expire_reservation.is_some())
        .count();
    assert_eq!(expiries, 1, "{written:?}");
    // Once it is processed the hold is gone, and the order is told.
    for cmd in &written {
        let value = saga
            .serde
            .encode(&topic, SchemaKind::InventoryCommand, cmd)
            .unwrap();
        saga.inventory
            .pipe(&topic, b"SKU-A", &value, cmd.issued_at)
            .unwrap();
    }
    saga.settle();
    assert_eq!(saga.product()["warehouses"]["main"]["reserved"], 0);
    assert!(
        saga.order_events()
            .iter()
            .any(|e| e.order_cancelled.is_some())
    );
}
