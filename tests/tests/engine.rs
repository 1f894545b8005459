//! The EOS engine on its own, with a tiny counting topology: an abortable failure in
//! the middle of a transaction rolls back outputs and store writes, rewinds, and every
//! input is still reflected exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use erp_processors::app::{Engines, topic_specs};
use erp_processors::engine::{
    GlobalStoreSpec, InputRecord, OutputRecord, ProcessError, Processor, ProcessorContext,
    PunctuationType, TopicSpec, Topology, ensure_topics,
};
use erp_tests::{TestApp, eventually, read_committed};

/// Counts records per key in a store and forwards `key=count`; fails transiently the
/// first time it meets the value "boom".
struct Counter {
    out: String,
    booms: Arc<AtomicUsize>,
}

impl Processor for Counter {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let key = String::from_utf8_lossy(record.key.unwrap_or_default()).into_owned();
        let store = ctx.store("counts");
        let n = store
            .get(key.as_bytes())?
            .map(|v| String::from_utf8(v).unwrap().parse::<u64>().unwrap())
            .unwrap_or(0)
            + 1;
        store.put(key.as_bytes(), n.to_string().as_bytes())?;
        ctx.forward(OutputRecord {
            topic: self.out.clone(),
            key: key.clone().into_bytes(),
            value: format!("{key}={n}").into_bytes(),
            timestamp: record.timestamp,
            headers: vec![],
        });
        if record.value == Some(b"boom".as_slice())
            && self.booms.fetch_add(1, Ordering::SeqCst) == 0
        {
            return Err(ProcessError::Transient("simulated registry outage".into()));
        }
        Ok(())
    }
}

#[test]
fn an_abort_mid_transaction_rolls_back_and_reprocesses_exactly_once() {
    let app = TestApp::new("abort");
    let prefix = &app.topics.prefix;
    let (input, output) = (format!("{prefix}in"), format!("{prefix}out"));
    let booms = Arc::new(AtomicUsize::new(0));
    let topology = {
        let (out, booms) = (output.clone(), booms.clone());
        Topology {
            application_id: format!("{prefix}counter"),
            source_topics: vec![input.clone()],
            sink_topics: vec![output.clone()],
            stores: vec!["counts".into()],
            global_stores: vec![],
            processor: Arc::new(move |_| {
                Box::new(Counter {
                    out: out.clone(),
                    booms: booms.clone(),
                })
            }),
        }
    };
    let specs = topic_specs(
        std::slice::from_ref(&topology),
        app.settings.partitions,
        app.settings.replication(),
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ensure_topics(&app.settings.bootstrap_servers, &specs))
        .unwrap();

    // Everything is in the log before the engine starts, so the failure lands in a
    // transaction that already holds earlier records.
    let p = app.publisher();
    let keys = ["a", "b", "c", "d"];
    let mut expected = 0;
    for i in 0..40 {
        let value = if i == 25 { "boom" } else { "x" };
        p.send_raw(&input, keys[i % 4].as_bytes(), value.as_bytes(), 1, &[])
            .unwrap();
        expected += 1;
    }
    p.flush().unwrap();

    let engines = Engines::start(&app.settings, vec![topology]).unwrap();
    let out = eventually(
        Duration::from_secs(60),
        "every input reflected in the output",
        || {
            let out = read_committed(&output);
            (out.len() >= expected).then_some(out)
        },
    );
    assert_eq!(
        booms.load(Ordering::SeqCst),
        2,
        "the failing record was processed again"
    );
    assert_eq!(out.len(), expected, "no output twice, none lost");
    for k in keys {
        let mut counts: Vec<u64> = out
            .iter()
            .filter(|r| r.key == k)
            .map(|r| {
                String::from_utf8_lossy(&r.value)
                    .split('=')
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        counts.sort();
        assert_eq!(
            counts,
            (1..=10).collect::<Vec<_>>(),
            "key {k}: counts 1..=10 exactly once"
        );
        let stored = engines.state.stores.get("counts", k.as_bytes()).unwrap();
        assert_eq!(
            stored.as_deref(),
            Some(b"10".as_slice()),
            "store rolled back and reapplied"
        );
    }
    let aborted: f64 = engines
        .state
        .metrics
        .gather()
        .iter()
        .filter(|f| f.name() == "erp_transactions_aborted_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value())
                .collect::<Vec<_>>()
        })
        .sum();
    assert!(aborted >= 1.0, "an abort happened");
    engines.stop().unwrap();
}

/// Counts records; every 200 ms of wall clock reports the running total if it changed
/// (so the output goes quiet, and a reader can reach its end, once the input stops).
struct Totaliser {
    out: String,
    reported: u64,
}

impl Processor for Totaliser {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        _: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let store = ctx.store("totals");
        let n = store
            .get(b"total")?
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()))
            + 1;
        store.put(b"total", &n.to_be_bytes())?;
        Ok(())
    }

    fn punctuations(&self) -> Vec<(PunctuationType, Duration)> {
        vec![(PunctuationType::WallClockTime, Duration::from_millis(200))]
    }

    fn punctuate(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        _: PunctuationType,
        now: i64,
    ) -> Result<(), ProcessError> {
        let n = ctx
            .store("totals")
            .get(b"total")?
            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
        if n == self.reported {
            return Ok(());
        }
        self.reported = n;
        ctx.forward(OutputRecord {
            topic: self.out.clone(),
            key: format!("p{}", ctx.partition).into_bytes(),
            value: n.to_string().into_bytes(),
            timestamp: now,
            headers: vec![],
        });
        Ok(())
    }
}

#[test]
fn wall_clock_punctuations_run_inside_transactions_on_the_real_broker() {
    let app = TestApp::new("punct");
    let prefix = &app.topics.prefix;
    let (input, output) = (format!("{prefix}in"), format!("{prefix}out"));
    let topology = {
        let out = output.clone();
        Topology {
            application_id: format!("{prefix}totaliser"),
            source_topics: vec![input.clone()],
            sink_topics: vec![output.clone()],
            stores: vec!["totals".into()],
            global_stores: vec![],
            processor: Arc::new(move |_| {
                Box::new(Totaliser {
                    out: out.clone(),
                    reported: 0,
                })
            }),
        }
    };
    let specs = topic_specs(
        std::slice::from_ref(&topology),
        app.settings.partitions,
        app.settings.replication(),
    );
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ensure_topics(&app.settings.bootstrap_servers, &specs))
        .unwrap();
    let engines = Engines::start(&app.settings, vec![topology]).unwrap();
    let p = app.publisher();
    for i in 0..30 {
        p.send_raw(&input, format!("k{i}").as_bytes(), b"x", 1, &[])
            .unwrap();
    }
    p.flush().unwrap();
    // Each task reports its own total; the latest reports add up to every record.
    eventually(
        Duration::from_secs(60),
        "punctuated totals to add up to 30",
        || {
            let mut latest = std::collections::BTreeMap::new();
            for r in read_committed(&output) {
                latest.insert(
                    r.key.clone(),
                    String::from_utf8_lossy(&r.value).parse::<u64>().unwrap(),
                );
            }
            (latest.values().sum::<u64>() == 30).then_some(())
        },
    );
    engines.stop().unwrap();
}

/// Looks each input key up in the global store "prices".
struct Pricer {
    out: String,
}

impl Processor for Pricer {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let key = record.key.unwrap_or_default();
        let price = ctx
            .global("prices", key)?
            .unwrap_or_else(|| b"unknown".to_vec());
        ctx.forward(OutputRecord {
            topic: self.out.clone(),
            key: key.to_vec(),
            value: price,
            timestamp: record.timestamp,
            headers: vec![],
        });
        Ok(())
    }
}

#[test]
fn global_stores_are_complete_before_processing_and_follow_their_topic() {
    let app = TestApp::new("global");
    let prefix = &app.topics.prefix;
    let (input, output, prices) = (
        format!("{prefix}in"),
        format!("{prefix}out"),
        format!("{prefix}prices"),
    );
    let topology = {
        let out = output.clone();
        Topology {
            application_id: format!("{prefix}pricer"),
            source_topics: vec![input.clone()],
            sink_topics: vec![output.clone()],
            stores: vec![],
            global_stores: vec![GlobalStoreSpec {
                name: "prices".into(),
                topic: prices.clone(),
            }],
            processor: Arc::new(move |_| Box::new(Pricer { out: out.clone() })),
        }
    };
    let mut specs = topic_specs(
        std::slice::from_ref(&topology),
        app.settings.partitions,
        app.settings.replication(),
    );
    // The global topic need not be co-partitioned with the input: give it 2 partitions.
    specs.retain(|s| s.name != prices);
    specs.push(TopicSpec::new(prices.clone(), 2, app.settings.replication()).compacted());
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(ensure_topics(&app.settings.bootstrap_servers, &specs))
        .unwrap();
    let p = app.publisher();
    for i in 0..200 {
        p.send_raw(
            &prices,
            format!("SKU-{i}").as_bytes(),
            format!("{}", 10 + i).as_bytes(),
            1,
            &[],
        )
        .unwrap();
    }
    p.flush().unwrap();

    // Inputs are already waiting when the engine starts: they must all see the prices.
    for k in ["SKU-0", "SKU-199", "SKU-X"] {
        p.send_raw(&input, k.as_bytes(), b"?", 1, &[]).unwrap();
    }
    p.flush().unwrap();
    let engines = Engines::start(&app.settings, vec![topology]).unwrap();
    let priced = |want: usize| {
        eventually(Duration::from_secs(60), "priced outputs", || {
            let out = read_committed(&output);
            (out.len() >= want).then_some(out)
        })
    };
    let out = priced(3);
    let got: std::collections::BTreeMap<_, _> = out
        .iter()
        .map(|r| {
            (
                r.key.clone(),
                String::from_utf8_lossy(&r.value).into_owned(),
            )
        })
        .collect();
    assert_eq!(got["SKU-0"], "10");
    assert_eq!(got["SKU-199"], "209");
    assert_eq!(got["SKU-X"], "unknown");

    // An update on the topic reaches the global store, and later records see it.
    p.send_raw(&prices, b"SKU-0", b"99", 2, &[]).unwrap();
    p.flush().unwrap();
    let stores = engines.state.stores.clone();
    eventually(
        Duration::from_secs(30),
        "the update in the global store",
        || {
            (stores.get("prices", b"SKU-0").unwrap().as_deref() == Some(b"99".as_slice()))
                .then_some(())
        },
    );
    p.send_raw(&input, b"SKU-0", b"?", 3, &[]).unwrap();
    p.flush().unwrap();
    let out = priced(4);
    assert_eq!(
        out.iter()
            .rev()
            .find(|r| r.key == "SKU-0")
            .map(|r| r.value.clone()),
        Some(b"99".to_vec())
    );
    engines.stop().unwrap();
}
