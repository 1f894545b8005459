//! Every envelope roundtrips through its own schema, as the registry path encodes it.

use serde::Serialize;

use crate::SchemaKind;
use crate::wire::*;
#[allow(deprecated)]
use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};

/// Encodes with the schema and decodes back (the datum functions are deprecated in 0.22
/// but are exactly the wire body).
#[allow(deprecated)]
fn roundtrip<T: Serialize + serde::de::DeserializeOwned>(kind: SchemaKind, v: &T) -> T {
    let schema = Schema::parse_str(kind.schema_json()).unwrap();
    let value = to_value(v).unwrap().resolve(&schema).unwrap();
    let bytes = to_avro_datum(&schema, value).unwrap();
    let back = from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
    from_value(&back).unwrap()
}

fn address() -> Address {
    Address {
        street: "s".into(),
        city: "c".into(),
        postal_code: "10001".into(),
        country: "US".into(),
    }
}

#[test]
fn order_command_roundtrips_through_its_schema() {
    let mut cmd = OrderCommand::empty("c".into(), "o".into(), 1_700_000_000_123);
    cmd.correlation_id = Some("corr".into());
    cmd.place_order = Some(PlaceOrder {
        customer_id: "cu".into(),
        currency: "USD".into(),
        lines: vec![OrderLine {
            sku: "SKU-1".into(),
            product_name: "p".into(),
            quantity: 2,
            unit_price: "9.99".into(),
            unit_weight_kg: None,
        }],
        shipping_address: address(),
        payment_method: Some("tok_visa".into()),
        shipping_method: None,
        manual_confirmation: Some(true),
    });
    assert_eq!(roundtrip(SchemaKind::OrderCommand, &cmd), cmd);
}

#[test]
fn events_with_one_payload_roundtrip() {
    let mut e = OrderEvent::empty("e".into(), "o".into(), 3, 5);
    e.order_cancelled = Some(OrderCancelled {
        reason: "r".into(),
        released_skus: vec!["SKU-1".into()],
        compensations: Some(vec!["refund payment".into()]),
    });
    assert_eq!(roundtrip(SchemaKind::OrderEvent, &e), e);
    let mut i = InventoryEvent::empty("e".into(), "SKU-1".into(), 1, 5);
    i.stock_reserved = Some(StockReserved {
        order_id: "o".into(),
        line_no: 0,
        quantity: 1,
        available: 4,
        allocation: Some(vec![WarehouseQuantity {
            warehouse: "main".into(),
            quantity: 1,
        }]),
    });
    assert_eq!(roundtrip(SchemaKind::InventoryEvent, &i), i);
    let mut p = PaymentEvent::empty("e".into(), "o".into(), 1, 5);
    p.payment_refunded = Some(PaymentRefunded {
        amount: "1.00".into(),
        currency: "USD".into(),
        total_refunded: "1.00".into(),
    });
    assert_eq!(roundtrip(SchemaKind::PaymentEvent, &p), p);
    let mut s = ShippingCommand::empty("c".into(), "o".into(), 5);
    s.create_shipment = Some(CreateShipment {
        address: address(),
        weight_kg: "12.5".into(),
        method: "EXPRESS".into(),
        currency: "USD".into(),
    });
    assert_eq!(roundtrip(SchemaKind::ShippingCommand, &s), s);
    let mut c = CustomerCommand::empty("c".into(), "cu".into(), 5);
    c.update_customer = Some(UpdateCustomer {
        email: None,
        phone: Some("+14155550100".into()),
        addresses: Some(vec![address()]),
    });
    assert_eq!(roundtrip(SchemaKind::CustomerCommand, &c), c);
    let row = CustomerRow {
        customer_id: "cu".into(),
        name: "n".into(),
        email: "a@b.co".into(),
        tier: "GOLD".into(),
        version: 2,
    };
    assert_eq!(roundtrip(SchemaKind::Customer, &row), row);
}
