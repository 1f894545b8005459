//! Bad input at the edges, fuzzed: arbitrary bytes, mutated valid records (bit flips,
//! truncations, absurd length prefixes) and well-formed commands with arbitrary values
//! go through the real processors (topology drivers, real registry). None may panic or
//! fail the pipe: each ends as events, a rejection, or one dead letter whose class names
//! what was wrong — never `processor_panic`.

use std::sync::{Arc, Mutex, OnceLock};

use erp_connectors::sample::{self, Mix, Rng};
use erp_processors::app::{Context, SagaSettings};
use erp_processors::engine::{OutputRecord, TopologyTestDriver};
use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};
use erp_tests::registry_url;
use proptest::prelude::*;

/// Dead-letter classes of bad input (anything else is a bug).
const INPUT_CLASSES: [&str; 4] = [
    "malformed",
    "unknown_schema",
    "schema_mismatch",
    "null_value",
];

struct Target {
    driver: TopologyTestDriver,
    topic: String,
    dlq: String,
    /// A valid record of the topic, to mutate.
    valid: Vec<u8>,
}

struct Fixture {
    serde: Arc<AvroSerde>,
    topics: Topics,
    /// order, inventory, payment, shipping, customer.
    targets: Vec<Target>,
}

fn fixture() -> &'static Mutex<Fixture> {
    static F: OnceLock<Mutex<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let topics = Topics::new(format!(
            "fuzz-{}-",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        let serde = Arc::new(AvroSerde::new(&registry_url()));
        for (topic, kind) in topics.subjects() {
            serde
                .register(&topic, kind)
                .expect("registry reachable (scripts/stack.sh up)");
        }
        let saga = SagaSettings {
            reservation_ttl: std::time::Duration::from_secs(60),
        };
        let mut drivers: Vec<(String, TopologyTestDriver)> =
            Context::all_topologies(&Context::ALL, &topics, serde.clone(), saga)
                .into_iter()
                .map(|t| (t.dlq_topic(), TopologyTestDriver::new(t, 2)))
                .collect();
        drivers.truncate(5); // the loyalty topology reads order events, not commands
        let mut rng = Rng::new(3);
        let customers = sample::customers(&mut rng, 1, 0);
        let order = sample::order(
            &mut rng,
            3,
            &[customers[0].customer_id.clone()],
            Mix::NONE,
            0,
        )
        .command;
        let payment: wire::PaymentCommand = serde_json::from_value(serde_json::json!({
            "command_id": "c", "order_id": order.order_id, "issued_at": 0,
            "authorize_payment": {"amount": "12.00", "currency": "USD", "method": "card"}}))
        .unwrap();
        let shipping: wire::ShippingCommand = serde_json::from_value(serde_json::json!({
            "command_id": "c", "order_id": order.order_id, "issued_at": 0,
            "create_shipment": {"address": {"street": "s", "city": "c", "postal_code": "1",
                "country": "US"}, "weight_kg": "1.5", "method": "standard", "currency": "USD"}}))
        .unwrap();
        let enc =
            |topic: &str, kind: SchemaKind, v: &dyn erased::Encode| v.encode(&serde, topic, kind);
        let valid = [
            enc(&topics.order_commands(), SchemaKind::OrderCommand, &order),
            enc(
                &topics.inventory_commands(),
                SchemaKind::InventoryCommand,
                &sample::products(&mut rng, 1, 10, 0)[0],
            ),
            enc(
                &topics.payment_commands(),
                SchemaKind::PaymentCommand,
                &payment,
            ),
            enc(
                &topics.shipping_commands(),
                SchemaKind::ShippingCommand,
                &shipping,
            ),
            enc(
                &topics.customer_commands(),
                SchemaKind::CustomerCommand,
                &customers[0],
            ),
        ];
        let inputs = [
            topics.order_commands(),
            topics.inventory_commands(),
            topics.payment_commands(),
            topics.shipping_commands(),
            topics.customer_commands(),
        ];
        let targets = drivers
            .into_iter()
            .zip(inputs)
            .zip(valid)
            .map(|(((dlq, driver), topic), valid)| Target {
                dlq,
                driver,
                topic,
                valid,
            })
            .collect();
        Mutex::new(Fixture {
            serde,
            topics,
            targets,
        })
    })
}

/// Object-safe encoding of the different command types.
mod erased {
    use erp_schemas::{AvroSerde, SchemaKind};

    pub trait Encode {
        fn encode(&self, serde: &AvroSerde, topic: &str, kind: SchemaKind) -> Vec<u8>;
    }

    impl<T: serde::Serialize> Encode for T {
        fn encode(&self, serde: &AvroSerde, topic: &str, kind: SchemaKind) -> Vec<u8> {
            serde.encode(topic, kind, self).expect("valid sample")
        }
    }
}

fn header<'a>(r: &'a OutputRecord, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Pipes one record and checks what came out.
fn pipe(target: usize, key: &[u8], value: &[u8]) -> Result<(), TestCaseError> {
    let mut f = fixture().lock().unwrap_or_else(|p| p.into_inner());
    let t = &mut f.targets[target];
    let result = t
        .driver
        .pipe(&t.topic.clone(), key, value, 1_700_000_000_000);
    prop_assert!(result.is_ok(), "pipe failed on {value:?}: {result:?}");
    for dl in t.driver.read_output(&t.dlq.clone()) {
        let class = header(&dl, "__dlq.errors.exception.class.name").unwrap_or("");
        prop_assert!(
            INPUT_CLASSES.contains(&class),
            "dead letter of class {class:?} ({:?}) for {value:?}",
            header(&dl, "__dlq.errors.exception.message")
        );
        prop_assert_eq!(
            &dl.value,
            &value.to_vec(),
            "the dead letter keeps the bytes"
        );
    }
    Ok(())
}

/// How to damage a valid record.
#[derive(Debug, Clone)]
enum Damage {
    Arbitrary(Vec<u8>),
    FlipBit(usize, u8),
    Truncate(usize),
    /// The wire header, then arbitrary bytes.
    Body(Vec<u8>),
    /// A length prefix of ~2 GiB where the first field starts.
    HugeLength,
    /// The same body behind another schema id.
    SchemaId(u32),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Damage::Arbitrary),
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Damage::FlipBit(p, b)),
        any::<usize>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Damage::Body),
        Just(Damage::HugeLength),
        any::<u32>().prop_map(Damage::SchemaId),
    ]
}

fn apply(valid: &[u8], d: &Damage) -> Vec<u8> {
    match d {
        Damage::Arbitrary(b) => b.clone(),
        Damage::FlipBit(p, b) => {
            let mut v = valid.to_vec();
            let i = p % v.len();
            v[i] ^= 1 << b;
            v
        }
        Damage::Truncate(p) => valid[..p % valid.len()].to_vec(),
        Damage::Body(b) => [&valid[..5], b].concat(),
        Damage::HugeLength => [&valid[..5], &[0xfe, 0xff, 0xff, 0xff, 0x0f], &valid[5..]].concat(),
        Damage::SchemaId(id) => [&[0u8][..], &id.to_be_bytes(), &valid[5..]].concat(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn damaged_records_never_panic_and_poison_is_dead_lettered_with_its_class(
        target in 0usize..5,
        d in damage(),
        key in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let valid = fixture().lock().unwrap_or_else(|p| p.into_inner()).targets[target].valid.clone();
        pipe(target, &key, &apply(&valid, &d))?;
    }

    #[test]
    fn well_formed_commands_with_arbitrary_values_are_refused_not_crashed(
        quantity in any::<i32>(),
        currency in "[A-Z]{0,4}|\\PC{0,8}",
        sku in "\\PC{0,20}",
        price in "-?[0-9]{0,30}(\\.[0-9]{0,12})?|\\PC{0,10}",
        customer in "\\PC{0,40}",
        order_id in "\\PC{0,40}",
        email in "\\PC{0,40}",
        restock in any::<i32>(),
    ) {
        let (serde, topics) = {
            let f = fixture().lock().unwrap_or_else(|p| p.into_inner());
            (f.serde.clone(), f.topics.clone())
        };
        let mut rng = Rng::new(quantity as u64);
        let mut order = sample::order(&mut rng, 3, std::slice::from_ref(&customer), Mix::NONE, 0).command;
        order.order_id = order_id.clone();
        if let Some(p) = order.place_order.as_mut() {
            p.currency = currency;
            p.lines[0].quantity = quantity;
            p.lines[0].sku = sku.clone();
            p.lines[0].unit_price = price;
        }
        let value = serde.encode(&topics.order_commands(), SchemaKind::OrderCommand, &order).unwrap();
        pipe(0, order_id.as_bytes(), &value)?;

        let mut product = sample::products(&mut rng, 1, 5, 0).remove(0);
        product.sku = sku.clone();
        if let Some(r) = product.register_product.as_mut() {
            r.initial_stock = restock;
        }
        let value = serde.encode(&topics.inventory_commands(), SchemaKind::InventoryCommand, &product).unwrap();
        pipe(1, sku.as_bytes(), &value)?;

        let mut c = sample::customers(&mut rng, 1, 0).remove(0);
        c.customer_id = customer.clone();
        if let Some(r) = c.register_customer.as_mut() {
            r.email = email;
        }
        let value = serde.encode(&topics.customer_commands(), SchemaKind::CustomerCommand, &c).unwrap();
        pipe(4, customer.as_bytes(), &value)?;
    }
}

/// The property tests' oracle is not vacuous: known damage lands in the DLQ with the
/// expected class, and a ~2 GiB length prefix is refused without allocating it.
#[test]
fn known_damage_is_dead_lettered_with_its_class() {
    let mut f = fixture().lock().unwrap_or_else(|p| p.into_inner());
    for (i, t) in f.targets.iter_mut().enumerate() {
        let cases = [
            (b"{\"not\": \"avro\"}".to_vec(), "malformed"),
            (apply(&t.valid, &Damage::HugeLength), "malformed"),
            (
                apply(&t.valid, &Damage::SchemaId(0x7fff_ff01)),
                "unknown_schema",
            ),
        ];
        for (value, class) in cases {
            let topic = t.topic.clone();
            t.driver.pipe(&topic, b"k", &value, 1).unwrap();
            let dlq = t.driver.read_output(&t.dlq.clone());
            assert_eq!(dlq.len(), 1, "target {i}: one dead letter for {value:?}");
            assert_eq!(
                header(&dlq[0], "__dlq.errors.exception.class.name"),
                Some(class),
                "target {i}: {:?}",
                header(&dlq[0], "__dlq.errors.exception.message")
            );
        }
        let topic = t.topic.clone();
        let valid = t.valid.clone();
        t.driver.pipe(&topic, b"k", &valid, 1).unwrap();
        assert!(
            t.driver.read_output(&t.dlq.clone()).is_empty(),
            "target {i}: the valid record is no poison"
        );
    }
}
