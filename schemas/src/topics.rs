//! Topic names. Every name takes an optional prefix so tests and parallel demos can share
//! one broker without seeing each other's records.

use crate::SchemaKind;

/// The topics of the saga, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{}", self.prefix, base)
    }

    /// Order commands, keyed by order id.
    pub fn order_commands(&self) -> String {
        self.name("order-commands")
    }
    /// Order events, keyed by order id.
    pub fn order_events(&self) -> String {
        self.name("order-events")
    }
    /// Saga replies to the order processor (inventory events re-keyed by order id).
    pub fn order_replies(&self) -> String {
        self.name("order-replies")
    }
    /// Inventory commands, keyed by SKU.
    pub fn inventory_commands(&self) -> String {
        self.name("inventory-commands")
    }
    /// Inventory events, keyed by SKU.
    pub fn inventory_events(&self) -> String {
        self.name("inventory-events")
    }

    /// Payment commands, keyed by order id.
    pub fn payment_commands(&self) -> String {
        self.name("payment-commands")
    }
    /// Payment events, keyed by order id (co-partitioned with the orders).
    pub fn payment_events(&self) -> String {
        self.name("payment-events")
    }
    /// Shipping commands, keyed by order id.
    pub fn shipping_commands(&self) -> String {
        self.name("shipping-commands")
    }
    /// Shipping events, keyed by order id (co-partitioned with the orders).
    pub fn shipping_events(&self) -> String {
        self.name("shipping-events")
    }
    /// Customer commands, keyed by customer id.
    pub fn customer_commands(&self) -> String {
        self.name("customer-commands")
    }
    /// Customer events, keyed by customer id.
    pub fn customer_events(&self) -> String {
        self.name("customer-events")
    }
    /// The customer table (compacted), keyed by customer id: latest state per customer.
    pub fn customers(&self) -> String {
        self.name("customers")
    }

    /// Completed orders re-keyed by customer id (CustomerCommand records): the
    /// repartition topic between order events and the customer processor.
    pub fn customer_completed_orders(&self) -> String {
        format!(
            "{}-completed-orders-repartition",
            self.application_id("customer")
        )
    }

    /// The analytics sink's dead letters: event records it could not decode, with
    /// Kafka Connect's `__connect.errors.*` headers naming where each came from.
    pub fn analytics_sink_dlq(&self) -> String {
        self.name("erp-analytics-sink-dlq")
    }

    /// Application id of a context's processor; consumer group, transactional ids,
    /// changelog and DLQ names derive from it.
    pub fn application_id(&self, context: &str) -> String {
        self.name(&format!("erp-{context}"))
    }

    /// Every value subject this project owns and the schema it holds.
    pub fn subjects(&self) -> Vec<(String, SchemaKind)> {
        vec![
            (self.order_commands(), SchemaKind::OrderCommand),
            (self.order_events(), SchemaKind::OrderEvent),
            (self.order_replies(), SchemaKind::InventoryEvent),
            (self.inventory_commands(), SchemaKind::InventoryCommand),
            (self.inventory_events(), SchemaKind::InventoryEvent),
            (self.payment_commands(), SchemaKind::PaymentCommand),
            (self.payment_events(), SchemaKind::PaymentEvent),
            (self.shipping_commands(), SchemaKind::ShippingCommand),
            (self.shipping_events(), SchemaKind::ShippingEvent),
            (self.customer_commands(), SchemaKind::CustomerCommand),
            (self.customer_events(), SchemaKind::CustomerEvent),
            (self.customers(), SchemaKind::Customer),
            (
                self.customer_completed_orders(),
                SchemaKind::CustomerCommand,
            ),
        ]
    }

    /// Every data topic (not internal ones) of the saga.
    pub fn data_topics(&self) -> Vec<String> {
        self.subjects().into_iter().map(|(t, _)| t).collect()
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::new("")
    }
}
