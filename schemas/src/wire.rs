//! Typed mirrors of the `.avsc` files. Field names and order match the schemas; each
//! envelope carries exactly one `Some` payload. Money is a decimal string.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCommand {
    pub command_id: String,
    pub order_id: String,
    pub issued_at: i64,
    pub correlation_id: Option<String>,
    pub expected_version: Option<i64>,
    pub place_order: Option<PlaceOrder>,
    pub cancel_order: Option<CancelOrder>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelOrder {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaceOrder {
    pub customer_id: String,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub shipping_address: Address,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub product_name: String,
    pub quantity: i32,
    pub unit_price: String,
    pub unit_weight_kg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderEvent {
    pub event_id: String,
    pub order_id: String,
    pub version: i64,
    pub occurred_at: i64,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub order_created: Option<OrderCreated>,
    pub order_line_reserved: Option<OrderLineReserved>,
    pub order_line_rejected: Option<OrderLineRejected>,
    pub order_confirmed: Option<OrderConfirmed>,
    pub order_cancelled: Option<OrderCancelled>,
    pub command_rejected: Option<CommandRejected>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub customer_id: String,
    pub customer_tier: String,
    pub currency: String,
    pub lines: Vec<OrderLine>,
    pub shipping_address: Address,
    pub subtotal: String,
    pub discount: String,
    pub tax: String,
    pub shipping_cost: String,
    pub total: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLineReserved {
    pub line_no: i32,
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLineRejected {
    pub line_no: i32,
    pub sku: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderConfirmed {
    pub total: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub reason: String,
    pub released_skus: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRejected {
    pub command_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryCommand {
    pub command_id: String,
    pub sku: String,
    pub issued_at: i64,
    pub correlation_id: Option<String>,
    pub register_product: Option<RegisterProduct>,
    pub restock: Option<Restock>,
    pub reserve_stock: Option<ReserveStock>,
    pub release_stock: Option<ReleaseStock>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterProduct {
    pub name: String,
    pub initial_stock: i32,
    pub low_stock_threshold: i32,
    pub unit_weight_kg: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restock {
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: String,
    pub line_no: i32,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryEvent {
    pub event_id: String,
    pub sku: String,
    pub version: i64,
    pub occurred_at: i64,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub product_registered: Option<ProductRegistered>,
    pub stock_restocked: Option<StockRestocked>,
    pub stock_reserved: Option<StockReserved>,
    pub stock_rejected: Option<StockRejected>,
    pub stock_released: Option<StockReleased>,
    pub low_stock_warning: Option<LowStockWarning>,
    pub command_rejected: Option<CommandRejected>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductRegistered {
    pub name: String,
    pub on_hand: i32,
    pub low_stock_threshold: i32,
    pub unit_weight_kg: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockRestocked {
    pub quantity: i32,
    pub on_hand: i32,
    pub available: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: String,
    pub line_no: i32,
    pub quantity: i32,
    pub available: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockRejected {
    pub order_id: String,
    pub line_no: i32,
    pub quantity: i32,
    pub available: i32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: String,
    pub quantity: i32,
    pub available: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LowStockWarning {
    pub available: i32,
    pub threshold: i32,
}

impl InventoryEvent {
    /// An event with no payload yet; the caller sets exactly one payload field.
    pub fn empty(event_id: String, sku: String, version: i64, occurred_at: i64) -> Self {
        Self {
            event_id,
            sku,
            version,
            occurred_at,
            correlation_id: None,
            causation_id: None,
            product_registered: None,
            stock_restocked: None,
            stock_reserved: None,
            stock_rejected: None,
            stock_released: None,
            low_stock_warning: None,
            command_rejected: None,
        }
    }
}

impl OrderEvent {
    /// An event with no payload yet; the caller sets exactly one payload field.
    pub fn empty(event_id: String, order_id: String, version: i64, occurred_at: i64) -> Self {
        Self {
            event_id,
            order_id,
            version,
            occurred_at,
            correlation_id: None,
            causation_id: None,
            order_created: None,
            order_line_reserved: None,
            order_line_rejected: None,
            order_confirmed: None,
            order_cancelled: None,
            command_rejected: None,
        }
    }
}

impl InventoryCommand {
    /// A command with no payload yet; the caller sets exactly one payload field.
    pub fn empty(command_id: String, sku: String, issued_at: i64) -> Self {
        Self {
            command_id,
            sku,
            issued_at,
            correlation_id: None,
            register_product: None,
            restock: None,
            reserve_stock: None,
            release_stock: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SchemaKind;
    #[allow(deprecated)]
    use apache_avro::{Schema, from_avro_datum, from_value, to_avro_datum, to_value};

    /// Encodes with the schema and decodes back, as the registry path does (the
    /// datum functions are deprecated in 0.22 but are exactly the wire body).
    #[allow(deprecated)]
    fn roundtrip<T: Serialize + serde::de::DeserializeOwned>(kind: SchemaKind, v: &T) -> T {
        let schema = Schema::parse_str(kind.schema_json()).unwrap();
        let value = to_value(v).unwrap().resolve(&schema).unwrap();
        let bytes = to_avro_datum(&schema, value).unwrap();
        let back = from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
        from_value(&back).unwrap()
    }

    #[test]
    fn order_command_roundtrips_through_its_schema() {
        let cmd = OrderCommand {
            command_id: "c".into(),
            order_id: "o".into(),
            issued_at: 1_700_000_000_123,
            correlation_id: Some("corr".into()),
            expected_version: None,
            place_order: Some(PlaceOrder {
                customer_id: "cu".into(),
                currency: "USD".into(),
                lines: vec![OrderLine {
                    sku: "SKU-1".into(),
                    product_name: "p".into(),
                    quantity: 2,
                    unit_price: "9.99".into(),
                    unit_weight_kg: None,
                }],
                shipping_address: Address {
                    street: "s".into(),
                    city: "c".into(),
                    postal_code: "10001".into(),
                    country: "US".into(),
                },
            }),
            cancel_order: None,
        };
        assert_eq!(roundtrip(SchemaKind::OrderCommand, &cmd), cmd);
    }

    #[test]
    fn events_with_one_payload_roundtrip() {
        let mut e = OrderEvent::empty("e".into(), "o".into(), 3, 5);
        e.order_cancelled = Some(OrderCancelled {
            reason: "r".into(),
            released_skus: vec!["SKU-1".into()],
        });
        assert_eq!(roundtrip(SchemaKind::OrderEvent, &e), e);
        let mut i = InventoryEvent::empty("e".into(), "SKU-1".into(), 1, 5);
        i.stock_reserved = Some(StockReserved {
            order_id: "o".into(),
            line_no: 0,
            quantity: 1,
            available: 4,
        });
        assert_eq!(roundtrip(SchemaKind::InventoryEvent, &i), i);
        let mut c = InventoryCommand::empty("c".into(), "SKU-1".into(), 5);
        c.release_stock = Some(ReleaseStock {
            order_id: "o".into(),
            reason: "r".into(),
        });
        assert_eq!(roundtrip(SchemaKind::InventoryCommand, &c), c);
    }
}
