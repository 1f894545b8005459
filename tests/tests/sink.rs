//! The analytics sink on the real broker and PostgreSQL: `kill -9` in the middle of a
//! load, restart, and every event of the event topics is a row exactly once; the
//! payment reconciliation balances for every order.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use erp_connectors::sample::{self, Mix};
use erp_tests::process::{Instance, erp_binary, seed_customers};
use erp_tests::{TestApp, eventually};

fn postgres_url() -> String {
    std::env::var("ERP_POSTGRES_URL").unwrap_or_else(|_| "postgres://erp@127.0.0.1:5433/erp".into())
}

fn sink(app: &TestApp, args: &[&str]) -> Command {
    let mut c = Command::new(erp_binary());
    c.arg("sink")
        .args(args)
        .env("ERP_BOOTSTRAP_SERVERS", &app.settings.bootstrap_servers)
        .env("ERP_SCHEMA_REGISTRY_URL", &app.settings.schema_registry_url)
        .env("ERP_TOPIC_PREFIX", &app.topics.prefix)
        .env("ERP_POSTGRES_URL", postgres_url())
        .env("RUST_LOG", "warn");
    c
}

#[test]
fn kill_dash_nine_of_the_sink_neither_loses_nor_doubles_a_row() {
    let app = TestApp::new("sink");
    let state = app.state_path();
    let instance = Instance::spawn(&app, "i1", &state);
    instance.wait_ready();
    let mut rng = sample::Rng::new(5);
    let customers = seed_customers(&app, &[&instance], &mut rng, 10);
    let p = app.publisher();
    for cmd in sample::products(&mut rng, 6, 1000, 1) {
        p.inventory(&cmd).unwrap();
    }
    p.flush().unwrap();
    let carrier = app.carrier();
    let orders: Vec<_> = (0..150)
        .map(|i| sample::order(&mut rng, 6, &customers, Mix::ACCEPTANCE, 1000 + i).command)
        .collect();
    for o in &orders {
        p.order(o).unwrap();
    }
    p.flush().unwrap();
    let report = app.audit();
    assert!(report.is_clean(), "{report}");
    carrier.stop().unwrap();
    instance.stop();

    let topics = [
        app.topics.order_events(),
        app.topics.payment_events(),
        app.topics.shipping_events(),
        app.topics.inventory_events(),
        app.topics.customer_events(),
    ];
    let events: usize = topics.iter().map(|t| app.read_raw(t).len()).sum();
    let mut pg = postgres::Client::connect(&postgres_url(), postgres::NoTls).unwrap();
    let prefix = format!("{}%", app.topics.prefix);
    let rows = |pg: &mut postgres::Client| -> (i64, i64) {
        let r = pg
            .query_one(
                "SELECT count(*), count(DISTINCT id) FROM event_store WHERE metadata->>'topic' LIKE $1",
                &[&prefix],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };

    let mut first = sink(&app, &[]).stdout(Stdio::null()).spawn().unwrap();
    let at_kill = eventually(Duration::from_secs(60), "sink under way", || {
        let (n, _) = rows(&mut pg);
        (n > 0).then_some(n)
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let (after_kill, _) = rows(&mut pg);
    assert!(
        (after_kill as usize) < events,
        "the kill must land mid-load ({after_kill} of {events} rows, first seen {at_kill})"
    );
    let out = sink(&app, &["--until-caught-up"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (n, distinct) = rows(&mut pg);
    assert_eq!(
        (n as usize, distinct as usize),
        (events, events),
        "rows = events, once each"
    );

    let ids: Vec<uuid::Uuid> = orders
        .iter()
        .map(|o| uuid::Uuid::parse_str(&o.order_id).unwrap())
        .collect();
    let r = pg
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE balanced) FROM payment_reconciliation
             WHERE order_id = ANY($1)",
            &[&ids],
        )
        .unwrap();
    let (orders_seen, balanced): (i64, i64) = (r.get(0), r.get(1));
    assert_eq!(orders_seen as usize, orders.len());
    assert_eq!(
        balanced, orders_seen,
        "captured − refunded = total for every order"
    );
    let statuses: HashSet<String> = pg
        .query(
            "SELECT DISTINCT status FROM orders WHERE id = ANY($1)",
            &[&ids],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        statuses
            .iter()
            .all(|s| s == "COMPLETED" || s == "CANCELLED"),
        "{statuses:?}"
    );
}
