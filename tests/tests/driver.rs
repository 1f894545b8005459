//! The whole order ↔ inventory saga through two broker-free topology drivers (the
//! registry is real: the processors read and write the Confluent wire format).

use std::sync::Arc;

use erp_processors::app::Context;
use erp_processors::engine::TopologyTestDriver;
use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};
use erp_tests::registry_url;

#[test]
fn the_saga_runs_through_topology_drivers() {
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
    let mut order = TopologyTestDriver::new(Context::Order.topology(&topics, serde.clone()), 3);
    let mut inventory =
        TopologyTestDriver::new(Context::Inventory.topology(&topics, serde.clone()), 3);

    let mut register = wire::InventoryCommand::empty("c-1".into(), "SKU-A".into(), 1);
    register.register_product = Some(wire::RegisterProduct {
        name: "A".into(),
        initial_stock: 5,
        low_stock_threshold: 1,
        unit_weight_kg: None,
    });
    let bytes = serde
        .encode(
            &topics.inventory_commands(),
            SchemaKind::InventoryCommand,
            &register,
        )
        .unwrap();
    inventory
        .pipe(&topics.inventory_commands(), b"SKU-A", &bytes, 1)
        .unwrap();

    let order_id = "6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11";
    let place = wire::OrderCommand {
        command_id: "c-2".into(),
        order_id: order_id.into(),
        issued_at: 2,
        correlation_id: None,
        expected_version: None,
        cancel_order: None,
        place_order: Some(wire::PlaceOrder {
            customer_id: "0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33".into(),
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
        }),
    };
    let bytes = serde
        .encode(&topics.order_commands(), SchemaKind::OrderCommand, &place)
        .unwrap();
    order
        .pipe(&topics.order_commands(), order_id.as_bytes(), &bytes, 2)
        .unwrap();

    // Shuttle records between the two drivers until nothing moves.
    loop {
        let to_inventory = order.read_output(&topics.inventory_commands());
        let to_order = inventory.read_output(&topics.order_replies());
        if to_inventory.is_empty() && to_order.is_empty() {
            break;
        }
        for r in to_inventory {
            inventory
                .pipe(&topics.inventory_commands(), &r.key, &r.value, r.timestamp)
                .unwrap();
        }
        for r in to_order {
            order
                .pipe(&topics.order_replies(), &r.key, &r.value, r.timestamp)
                .unwrap();
        }
    }
    let events: Vec<wire::OrderEvent> = order
        .read_output(&topics.order_events())
        .iter()
        .map(|r| serde.decode(SchemaKind::OrderEvent, &r.value).unwrap())
        .collect();
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
    assert!(events.last().unwrap().order_confirmed.is_some());
    let product: serde_json::Value =
        serde_json::from_slice(&inventory.store_get("products", b"SKU-A").unwrap()).unwrap();
    assert_eq!(
        (product["on_hand"].as_u64(), product["reserved"].as_u64()),
        (Some(5), Some(3))
    );
    let low: Vec<wire::InventoryEvent> = inventory
        .read_output(&topics.inventory_events())
        .iter()
        .map(|r| serde.decode(SchemaKind::InventoryEvent, &r.value).unwrap())
        .filter(|e: &wire::InventoryEvent| e.low_stock_warning.is_none())
        .collect();
    assert!(low.iter().any(|e| e.stock_reserved.is_some()));
}
