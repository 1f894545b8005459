//! The command source on the real broker and pipeline: files with bad lines are loaded
//! with every bad line reported by number, the good ones arrive as the commands the
//! file says (Avro, Confluent wire format), and loading the same files again publishes
//! no new effects.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use erp_connectors::source::{self, Format, Kind, SourceCommand};
use erp_schemas::{SchemaKind, wire};
use erp_tests::process::{Instance, erp_command, run_echoed, wait_caught_up};
use erp_tests::{TestApp, eventually};

const CUSTOMERS: &str = "\
name,email,phone,street,city,postal_code,country
Ada Lovelace,ada@example.com,+14155550001,1 Analytical Way,San Francisco,94105,US
Grace Hopper,grace@example.com,,2 Cobol Ct,Arlington,22201,US
No Email,nobody,,3 Nowhere,X,11111,US
";

const PRODUCTS: &str = r#"{"sku":"BOOK-001","name":"Notes","initial_stock":100,"unit_weight_kg":"0.5"}
{"sku":"BOOK-002","name":"Manual","initial_stock":5}
{"sku":"BOOK-003","name":"Broken","initial_stock":-4}
"#;

const ORDERS: &str = r#"{"customer_email":"ada@example.com","currency":"USD","lines":[{"sku":"BOOK-001","quantity":2,"unit_price":"19.99"}],"shipping_address":{"street":"1 Analytical Way","city":"San Francisco","postal_code":"94105","country":"US"}}
{"customer_email":"grace@example.com","currency":"USD","lines":[{"sku":"BOOK-002","quantity":1,"unit_price":"45.00"},{"sku":"BOOK-001","quantity":1,"unit_price":"19.99"}],"shipping_address":{"street":"2 Cobol Ct","city":"Arlington","postal_code":"22201","country":"US"}}
{"customer_email":"grace@example.com","currency":"USD","lines":[{"sku":"BOOK-002","quantity":-1,"unit_price":"45.00"}],"shipping_address":{"street":"2 Cobol Ct","city":"Arlington","postal_code":"22201","country":"US"}}
{"customer_email":"grace@example.com","currency":"USD","lines":[{"sku":"BOOK-002","quantity":1,"unit_price":"45.00"}]

{"customer_email":"ada@example.com","currency":"USD","lines":[{"sku":"BOOK-001","quantity":1,"unit_price":"19.99"}],"shipping_address":{"street":"1 Analytical Way","city":"San Francisco","postal_code":"94105","country":"US"}}
{"customer_email":"ada@example.com","currency":"USD","lines":[{"sku":"BOOK-001","quantity":1,"unit_price":"19.99"}],"shipping_address":{"street":"1 Analytical Way","city":"San Francisco","postal_code":"94105","country":"US"}}
"#;

const RESTOCKS: &str = "\
sku,quantity,warehouse
BOOK-002,10,main
BOOK-002,-3,main
";

fn load(app: &TestApp, files: &[&Path]) -> Output {
    let mut args = vec!["load".to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_echoed(erp_command(app, &args), &args)
}

/// What the files say, parsed in-process the way `erp load` parses them.
fn expected(path: &Path, kind: Kind, format: Format) -> Vec<SourceCommand> {
    let mut s = source::Source::new(
        kind,
        format,
        &path.file_name().unwrap().to_string_lossy(),
        0,
    );
    let (ok, _) = source::parse_all(&mut s, std::fs::read(path).unwrap().as_slice());
    ok.into_iter().map(|(_, c)| c).collect()
}

/// Event counts per topic: what the processors did.
fn effects(app: &TestApp) -> BTreeMap<String, usize> {
    [
        app.topics.order_events(),
        app.topics.inventory_events(),
        app.topics.customer_events(),
        app.topics.payment_events(),
    ]
    .into_iter()
    .map(|t| {
        let n = app.read_raw(&t).len();
        (t, n)
    })
    .collect()
}

#[test]
fn a_file_with_bad_lines_loads_its_good_lines_once_even_when_loaded_twice() {
    let app = TestApp::new("source");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let customers = write("customers.csv", CUSTOMERS);
    let products = write("products.ndjson", PRODUCTS);
    let orders = write("orders.ndjson", ORDERS);
    let restocks = write("restocks.csv", RESTOCKS);
    let instance = Instance::spawn(&app, "i1", &app.state_path());
    instance.wait_ready();

    let out = load(&app, &[&customers, &products]);
    assert_eq!(out.status.code(), Some(2), "bad lines: exit 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("customers.csv:4: email \"nobody\" is not an email address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("products.ndjson:3: initial_stock must be at least 0, got -4"),
        "{stderr}"
    );
    for email in ["ada@example.com", "grace@example.com"] {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/customers/{}",
            instance.port,
            source::customer_id_for_email(email)
        );
        eventually(Duration::from_secs(60), "customer visible", || {
            let v: serde_json::Value = reqwest::blocking::get(&url).ok()?.json().ok()?;
            (v["visible_to_orders"] == true).then_some(())
        });
    }
    let out = load(&app, &[&orders, &restocks]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("orders.ndjson:3: lines[1]: quantity must be at least 1, got -1"),
        "{stderr}"
    );
    assert!(stderr.contains("orders.ndjson:4: not JSON"), "{stderr}");
    assert!(
        stderr.contains("restocks.csv:3: quantity must be at least 1, got -3"),
        "{stderr}"
    );
    assert!(stderr.contains("3 line(s) skipped"), "{stderr}");

    // The round trip: the command topics hold exactly the good lines' commands.
    let strip_order = |mut c: wire::OrderCommand| {
        c.issued_at = 0;
        c
    };
    let got: Vec<wire::OrderCommand> = app
        .read::<wire::OrderCommand>(&app.topics.order_commands(), SchemaKind::OrderCommand)
        .into_iter()
        .map(|r| strip_order(r.value))
        .collect();
    let want: Vec<wire::OrderCommand> = expected(&orders, Kind::Orders, Format::Ndjson)
        .into_iter()
        .map(|c| match c {
            SourceCommand::Order(o) => strip_order(o),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(want.len(), 4, "lines 1, 2, 6 and 7 (two identical orders)");
    let by_id = |v: &[wire::OrderCommand]| -> BTreeMap<String, wire::OrderCommand> {
        v.iter()
            .map(|c| (c.command_id.clone(), c.clone()))
            .collect()
    };
    assert_eq!(by_id(&got), by_id(&want));
    assert_eq!(got.len(), want.len(), "each once");
    let inventory: Vec<wire::InventoryCommand> = app
        .read::<wire::InventoryCommand>(
            &app.topics.inventory_commands(),
            SchemaKind::InventoryCommand,
        )
        .into_iter()
        .map(|r| r.value)
        .collect();
    assert_eq!(
        inventory
            .iter()
            .filter(|c| c.register_product.is_some())
            .count(),
        2
    );
    assert_eq!(
        inventory
            .iter()
            .filter_map(|c| c.restock.as_ref())
            .map(|r| r.quantity)
            .collect::<Vec<_>>(),
        vec![10]
    );

    // The processors acted on them: four orders placed, stock restocked.
    wait_caught_up(&app, Duration::from_secs(60));
    let created = app
        .read::<wire::OrderEvent>(&app.topics.order_events(), SchemaKind::OrderEvent)
        .into_iter()
        .filter(|r| r.value.order_created.is_some())
        .count();
    assert_eq!(created, 4);
    let before = effects(&app);

    // Loading everything again publishes the same commands, which change nothing.
    assert_eq!(load(&app, &[&customers, &products]).status.code(), Some(2));
    assert_eq!(load(&app, &[&orders, &restocks]).status.code(), Some(2));
    let again = app.read_raw(&app.topics.order_commands()).len();
    assert_eq!(again, 2 * want.len(), "the commands were published again");
    wait_caught_up(&app, Duration::from_secs(60));
    assert_eq!(effects(&app), before, "no new events");
    let restocked = app
        .read::<wire::InventoryEvent>(&app.topics.inventory_events(), SchemaKind::InventoryEvent)
        .into_iter()
        .filter(|r| r.value.stock_restocked.is_some())
        .count();
    assert_eq!(restocked, 1, "restocked once");
}
