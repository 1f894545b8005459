//! `erp bench …` (hidden): the measuring tools the scripts under `bench/` drive. Each
//! prints one JSON object on stdout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Subcommand;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde_json::json;

use erp_connectors::{CommandPublisher, sample};
use erp_processors::app::{Context, Engines, SagaSettings, topic_specs};
use erp_processors::bench::{self, LatencyProbe, Percentiles, Schedule};
use erp_processors::config::Settings;
use erp_processors::engine::{TopicSpec, ensure_topics};
use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// L0/L1: produce N records of SIZE bytes as fast as possible.
    Produce {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        records: u64,
        #[arg(long, default_value_t = 200)]
        size: usize,
        /// Transactions like the engine's (every commit interval or 2,000 records).
        #[arg(long)]
        transactional: bool,
    },
    /// L2/L3: the engine as a passthrough from --input to --output (until SIGTERM).
    Passthrough {
        #[arg(long)]
        application_id: String,
        /// Co-partitioned inputs (two make the engine journal its input order).
        #[arg(long, required = true)]
        input: Vec<String>,
        #[arg(long)]
        output: String,
        /// Also write every record to a RocksDB store (L3).
        #[arg(long)]
        store: bool,
    },
    /// Waits until a consumer group has committed everything now in --topic, and
    /// reports the rate (and, with --pid, that process's CPU and peak RSS) from the
    /// group's first commit to the last, so start-up (a JVM's included) is left out.
    WaitGroup {
        #[arg(long)]
        group: String,
        #[arg(long, required = true)]
        topic: Vec<String>,
        #[arg(long)]
        pid: Option<String>,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Feeds one saga step's input: `pricing` (customer table rows, then PlaceOrder
    /// commands) or `inventory` (products, then ReserveStock and, 50 orders later, the
    /// CommitReservation of each order). With --latency-topic, measures input → output.
    StepLoad {
        #[arg(long, value_parser = ["pricing", "inventory"])]
        step: String,
        #[arg(long, default_value_t = 1000)]
        orders: u64,
        /// Per second, open loop (default: as fast as the producer goes).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 200)]
        customers: usize,
        #[arg(long, default_value_t = 50)]
        products: usize,
        /// Only the customers/products (before the processors start).
        #[arg(long, conflicts_with = "no_catalogue")]
        only_catalogue: bool,
        #[arg(long)]
        no_catalogue: bool,
        /// Output topic(s) to time (record timestamp → arrival, read_committed).
        #[arg(long)]
        latency_topic: Vec<String>,
        /// Records expected on the latency topics.
        #[arg(long)]
        expect: Option<u64>,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// A raw read_committed consume of --topic from start to end (no decoding): the
    /// baseline of restore.
    Consume {
        #[arg(long, required = true)]
        topic: Vec<String>,
    },
    /// Deletes every topic whose name starts with --prefix (a finished run's topics:
    /// thousands of idle partitions slow the single local broker down).
    DropTopics {
        #[arg(long)]
        prefix: String,
    },
    /// The whole saga under an open-loop load: latency from each PlaceOrder's scheduled
    /// time to its order's terminal event (completed, cancelled or rejected), read
    /// read_committed; the carrier dispatches and delivers every shipment.
    Saga {
        #[command(flatten)]
        shape: super::ShapeArgs,
        /// Query API of the order processor (to wait until customers are visible).
        #[arg(long)]
        query_url: String,
        /// Give up waiting for outcomes after this many seconds past the last order.
        #[arg(long, default_value_t = 60)]
        drain_secs: u64,
    },
}

pub(crate) fn run(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    command: BenchCommand,
) -> anyhow::Result<()> {
    let bootstrap = settings.bootstrap_servers.as_str();
    match command {
        BenchCommand::Produce {
            topic,
            records,
            size,
            transactional,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(ensure_topics(
                bootstrap,
                &[TopicSpec::new(
                    topic.clone(),
                    settings.partitions,
                    settings.replication(),
                )],
            ))?;
            let txn =
                transactional.then_some((Duration::from_millis(settings.commit_interval_ms), 2000));
            let report = bench::produce(bootstrap, &topic, records, size, txn)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        BenchCommand::Passthrough {
            application_id,
            input,
            output,
            store,
        } => {
            let topology = bench::passthrough_topology(application_id, input, output, store);
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(ensure_topics(
                bootstrap,
                &topic_specs(
                    std::slice::from_ref(&topology),
                    settings.partitions,
                    settings.replication(),
                ),
            ))?;
            let engines = Engines::start(settings, vec![topology])?;
            rt.block_on(super::shutdown_signal());
            engines.stop()
        }
        BenchCommand::WaitGroup {
            group,
            topic,
            pid,
            timeout_secs,
        } => wait_group(bootstrap, &group, &topic, pid.as_deref(), timeout_secs),
        BenchCommand::StepLoad {
            step,
            orders,
            rate,
            customers,
            products,
            only_catalogue,
            no_catalogue,
            latency_topic,
            expect,
            seed,
        } => {
            let publisher = CommandPublisher::new(bootstrap, serde.clone(), topics.clone())?;
            let mut rng = sample::Rng::new(seed);
            let at = erp_processors::bench::now_ms();
            let customer_ids = step_catalogue(
                &publisher,
                &serde,
                topics,
                &step,
                &mut rng,
                customers,
                products,
                at,
                !no_catalogue,
            )?;
            publisher.flush()?;
            if only_catalogue {
                println!("{}", json!({"step": step, "catalogue": true}));
                return Ok(());
            }
            let probe = if latency_topic.is_empty() {
                None
            } else {
                Some(LatencyProbe::start(bootstrap, &latency_topic)?)
            };
            let started = Instant::now();
            let sent = step_orders(
                &publisher,
                &step,
                &mut rng,
                orders,
                rate,
                products,
                &customer_ids,
            )?;
            publisher.flush()?;
            let publish_s = started.elapsed().as_secs_f64();
            let latency = match probe {
                Some(p) => {
                    // Inventory answers every command on the reply topic (reserve and
                    // commit); pricing emits one OrderCreated per order.
                    let all = if step == "inventory" { sent } else { orders };
                    let sample = p.finish(expect.unwrap_or(all), Duration::from_secs(10))?;
                    Some(Percentiles::of(sample))
                }
                None => None,
            };
            println!(
                "{}",
                json!({
                    "step": step, "orders": orders, "records": sent, "rate": rate,
                    "publish_seconds": publish_s, "latency": latency,
                })
            );
            Ok(())
        }
        BenchCommand::DropTopics { prefix } => {
            if prefix.len() < 6 {
                bail!("refusing to drop topics of a prefix this short: {prefix:?}");
            }
            let consumer: BaseConsumer = erp_connectors::kafka::client()
                .set("bootstrap.servers", bootstrap)
                .create()?;
            let md = consumer.fetch_metadata(None, Duration::from_secs(10))?;
            let names: Vec<&str> = md
                .topics()
                .iter()
                .map(|t| t.name())
                .filter(|n| n.starts_with(&prefix))
                .collect();
            erp_processors::ops::delete_topics(bootstrap, &names)?;
            println!("{}", json!({"dropped": names.len()}));
            Ok(())
        }
        BenchCommand::Consume { topic } => {
            let started = Instant::now();
            let (records, bytes) = super::raw_consume(bootstrap, &topic)?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({"records": records, "bytes": bytes, "seconds": seconds,
                       "records_per_s": records as f64 / seconds})
            );
            Ok(())
        }
        BenchCommand::Saga {
            shape,
            query_url,
            drain_secs,
        } => saga(
            settings,
            topics,
            serde,
            shape.shape()?,
            &query_url,
            Duration::from_secs(drain_secs),
        ),
    }
}

fn wait_group(
    bootstrap: &str,
    group: &str,
    topics: &[String],
    pid: Option<&str>,
    timeout_secs: u64,
) -> anyhow::Result<()> {
    let w = bench::wait_caught_up(
        bootstrap,
        group,
        topics,
        pid,
        Duration::from_secs(timeout_secs),
    )?;
    let seconds = w.window.as_secs_f64().max(1e-3);
    let cpu = w.cpu_seconds;
    println!(
        "{}",
        json!({
            "group": group, "records": w.records, "seconds": seconds,
            "records_per_s": w.records as f64 / seconds,
            "cpu_seconds": cpu, "cpu_seconds_per_1000": cpu.map(|c| c * 1000.0 / w.records.max(1) as f64),
            "peak_rss_mib": w.peak_rss_mib, "to_first_commit_seconds": w.to_first_commit.as_secs_f64(),
        })
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn step_catalogue(
    publisher: &CommandPublisher,
    serde: &AvroSerde,
    topics: &Topics,
    step: &str,
    rng: &mut sample::Rng,
    customers: usize,
    products: usize,
    at: i64,
    publish: bool,
) -> anyhow::Result<Vec<String>> {
    const TIERS: [&str; 4] = ["BRONZE", "SILVER", "GOLD", "PLATINUM"];
    let mut ids = Vec::new();
    if step == "pricing" {
        // The customer table directly (no customer processor in this step).
        let topic = topics.customers();
        for i in 0..customers.max(1) {
            let row = wire::CustomerRow {
                customer_id: rng.uuid(),
                name: format!("Customer {i}"),
                email: format!("c{i}@example.com"),
                tier: TIERS[i % TIERS.len()].to_string(),
                version: 1,
            };
            if publish {
                let value = serde.encode(&topic, SchemaKind::Customer, &row)?;
                publisher.send_raw(&topic, row.customer_id.as_bytes(), &value, at, &[])?;
            }
            ids.push(row.customer_id);
        }
    } else if publish {
        // Enough stock that no reservation fails: the step's cost, not its refusals.
        for cmd in sample::products(rng, products, 10_000_000, at) {
            publisher.inventory(&cmd)?;
        }
    }
    Ok(ids)
}

/// Publishes the step's commands; returns how many records were sent.
fn step_orders(
    publisher: &CommandPublisher,
    step: &str,
    rng: &mut sample::Rng,
    orders: u64,
    rate: Option<f64>,
    products: usize,
    customer_ids: &[String],
) -> anyhow::Result<u64> {
    const COMMIT_AFTER: u64 = 50;
    let schedule = Schedule::new(rate);
    let mut sent = 0;
    let mut held: std::collections::VecDeque<(String, String)> = Default::default();
    for i in 0..orders {
        let at = schedule.due(i);
        if step == "pricing" {
            let o = sample::order(rng, products, customer_ids, sample::Mix::NONE, at);
            publisher.order(&o.command)?;
            sent += 1;
            continue;
        }
        // Skewed like the saga's orders: low SKU numbers are hot.
        let r = rng.below(1000) as f64 / 1000.0;
        let sku = sample::sku(((r * r) * products as f64) as usize);
        let order_id = rng.uuid();
        let mut c = wire::InventoryCommand::empty(rng.uuid(), sku.clone(), at);
        c.reserve_stock = Some(wire::ReserveStock {
            order_id: order_id.clone(),
            line_no: 0,
            quantity: 1 + rng.below(3) as i32,
            channel: None,
        });
        publisher.inventory(&c)?;
        sent += 1;
        held.push_back((sku, order_id));
        if held.len() as u64 > COMMIT_AFTER
            && let Some((sku, order_id)) = held.pop_front()
        {
            let mut c = wire::InventoryCommand::empty(rng.uuid(), sku, at);
            c.commit_reservation = Some(wire::CommitReservation { order_id });
            publisher.inventory(&c)?;
            sent += 1;
        }
    }
    Ok(sent)
}

fn saga(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    shape: erp_connectors::generator::Shape,
    query_url: &str,
    drain: Duration,
) -> anyhow::Result<()> {
    let bootstrap = settings.bootstrap_servers.as_str();
    let publisher = CommandPublisher::new(bootstrap, serde.clone(), topics.clone())?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let n_orders = shape.orders;
    let mut generator = erp_connectors::generator::Generator::new(shape);
    let catalogue = generator.catalogue(Some(&publisher), bench::now_ms())?;
    super::wait_customers_visible(
        &http,
        query_url,
        &catalogue.customer_ids,
        Duration::from_secs(60),
    )?;
    let carrier = erp_connectors::Carrier::start(
        bootstrap,
        &format!("{}erp-bench-carrier", topics.prefix),
        serde.clone(),
        CommandPublisher::new(bootstrap, serde.clone(), topics.clone())?,
    )?;
    // Every processor's inputs: what the engines worked through during the run.
    let mut inputs: Vec<String> = Context::all_topologies(
        &Context::ALL,
        topics,
        serde.clone(),
        SagaSettings::from(settings),
    )
    .into_iter()
    .flat_map(|t| t.source_topics)
    .collect();
    inputs.sort();
    inputs.dedup();
    // Outcomes as a downstream consumer sees them, from the end of the topic now.
    let issued: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let outcomes = OutcomeWatch::start(bootstrap, &topics.order_events(), serde.clone())?;
    let started = Instant::now();
    let published = generator.orders(&publisher, &catalogue, |o| {
        issued
            .lock()
            .expect("poisoned")
            .insert(o.command.order_id.clone(), o.command.issued_at);
    })?;
    let publish_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + drain;
    let ids: Vec<String> = published.order_ids.clone();
    while outcomes.count_of(&ids) < ids.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_in_s = started.elapsed().as_secs_f64();
    // Exact: every record now in the inputs is this run's (a fresh topic prefix).
    let (input_records, _) = super::raw_consume(bootstrap, &inputs)?;
    let seen = outcomes.stop()?;
    carrier.stop()?;
    let issued = issued.lock().expect("poisoned");
    let mut latencies = Vec::new();
    let mut kinds: HashMap<&'static str, usize> = HashMap::new();
    for id in &ids {
        if let Some((kind, at)) = seen.get(id) {
            *kinds.entry(kind).or_default() += 1;
            latencies.push((at - issued[id]) as f64);
        }
    }
    let missing = ids.len() - latencies.len();
    println!(
        "{}",
        json!({
            "orders": n_orders, "rate": generator.shape.rate, "publish_seconds": publish_s,
            "all_outcomes_seconds": all_in_s, "outcomes": kinds, "missing": missing,
            "processor_input_records": input_records,
            "generator_max_lag_ms": published.max_lag.as_millis() as u64,
            "latency": Percentiles::of(latencies),
        })
    );
    if missing > 0 {
        bail!(
            "{missing} of {} orders had no outcome within {drain:?} of the last order",
            ids.len()
        );
    }
    Ok(())
}

/// First terminal event per order on the order-event topic, with its arrival time.
struct OutcomeWatch {
    stop: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<Mutex<HashMap<String, (&'static str, i64)>>>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl OutcomeWatch {
    fn start(bootstrap: &str, topic: &str, serde: Arc<AvroSerde>) -> anyhow::Result<Self> {
        let consumer = bench::reader_at_end(bootstrap, &[topic.to_string()])
            .context("reading the order events")?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen: Arc<Mutex<HashMap<String, (&'static str, i64)>>> = Arc::default();
        let (flag, map) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let mut created = std::collections::HashSet::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let Some(msg) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let msg = msg?;
                let now = bench::now_ms();
                let Some(bytes) = msg.payload() else { continue };
                let event: wire::OrderEvent = serde.decode(SchemaKind::OrderEvent, bytes)?;
                let Some(kind) = super::outcome_of(&event, &mut created) else {
                    continue;
                };
                map.lock()
                    .expect("poisoned")
                    .entry(event.order_id)
                    .or_insert((kind, now));
            }
            Ok(())
        });
        Ok(Self { stop, seen, thread })
    }

    fn count_of(&self, ids: &[String]) -> usize {
        let seen = self.seen.lock().expect("poisoned");
        ids.iter().filter(|id| seen.contains_key(*id)).count()
    }

    fn stop(self) -> anyhow::Result<HashMap<String, (&'static str, i64)>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("outcome watcher panicked"))??;
        Ok(std::mem::take(&mut *self.seen.lock().expect("poisoned")))
    }
}
