//! `erp`: the saga's processors, query API and operator tools in one binary.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use erp_connectors::{CommandPublisher, sample};
use erp_processors::app::{Context, Engines, prepare};
use erp_processors::config::Settings;
use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

#[derive(Parser)]
#[command(
    name = "erp",
    version,
    about = "Exactly-once order-to-shipment saga on Apache Kafka"
)]
struct Cli {
    /// TOML settings file; `ERP_*` environment variables override it.
    #[arg(long, env = "ERP_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every processor and the query API in this process.
    Run,
    /// Run one bounded context's processor (and the query API over its stores).
    Processor {
        #[arg(long, value_enum)]
        context: Context,
    },
    /// Create the topics and register every schema, then exit.
    Setup,
    /// Publish a sample load (products, then orders), wait for every order's outcome and
    /// print a summary.
    DemoLoad {
        #[arg(long, default_value_t = 20)]
        products: usize,
        #[arg(long, default_value_t = 300)]
        orders: usize,
        /// Initial stock of each product.
        #[arg(long, default_value_t = 100)]
        stock: i32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Give up waiting for outcomes after this many seconds.
        #[arg(long, default_value_t = 180)]
        timeout_secs: u64,
        /// Base URL of the query API to read stock from.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        query_url: String,
    },
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    init_logging(&settings);
    let topics = Topics::new(settings.topic_prefix.clone());
    let serde = Arc::new(AvroSerde::new(&settings.schema_registry_url));
    match cli.command {
        Command::Run => serve(&settings, &topics, serde, &Context::ALL),
        Command::Processor { context } => serve(&settings, &topics, serde, &[context]),
        Command::Setup => {
            let rt = tokio::runtime::Runtime::new()?;
            let topologies: Vec<_> = Context::ALL
                .iter()
                .map(|c| c.topology(&topics, serde.clone()))
                .collect();
            rt.block_on(prepare(&settings, &topics, &topologies, serde.clone()))?;
            println!("topics and schemas ready");
            Ok(())
        }
        Command::DemoLoad {
            products,
            orders,
            stock,
            seed,
            timeout_secs,
            query_url,
        } => demo_load(
            &settings,
            topics,
            serde,
            products,
            orders,
            stock,
            seed,
            Duration::from_secs(timeout_secs),
            &query_url,
        ),
    }
}

fn serve(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    contexts: &[Context],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let topologies: Vec<_> = contexts
        .iter()
        .map(|c| c.topology(topics, serde.clone()))
        .collect();
    rt.block_on(prepare(settings, topics, &topologies, serde.clone()))
        .with_context(|| {
            format!(
                "preparing topics and schemas (Kafka at {}, registry at {})",
                settings.bootstrap_servers, settings.schema_registry_url
            )
        })?;
    let engines = Engines::start(settings, topologies)?;
    let router = erp_query_api::app(engines.state.clone());
    let addr = settings.http_addr;
    let server_result: anyhow::Result<()> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the query API to {addr}"))?;
        tracing::info!(%addr, "query API listening");
        // A stream thread that dies (fenced, broken state) takes the process down:
        // crash-only, a restart recovers from the committed log.
        let stopping = engines.shutdown.clone();
        let watcher = async move {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            tracing::error!("a stream thread stopped; shutting down");
        };
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutdown requested"),
                    _ = watcher => {},
                }
            })
            .await
            .context("query API server")?;
        Ok(())
    });
    let stop_result = engines.stop();
    server_result?;
    stop_result
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

#[allow(clippy::too_many_arguments)]
fn demo_load(
    settings: &Settings,
    topics: Topics,
    serde: Arc<AvroSerde>,
    n_products: usize,
    n_orders: usize,
    stock: i32,
    seed: u64,
    timeout: Duration,
    query_url: &str,
) -> anyhow::Result<()> {
    let publisher =
        CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?;
    let mut rng = sample::Rng::new(seed);
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    for cmd in sample::products(&mut rng, n_products, stock, now) {
        publisher.inventory(&cmd)?;
    }
    publisher.flush()?;
    let pb = bar(n_orders as u64, "orders");
    let mut order_ids = HashSet::new();
    for _ in 0..n_orders {
        let cmd = sample::order(&mut rng, n_products, chrono::Utc::now().timestamp_millis());
        order_ids.insert(cmd.order_id.clone());
        publisher.order(&cmd)?;
        pb.inc(1);
    }
    publisher.flush()?;
    pb.finish();
    let published_in = started.elapsed();

    // Outcomes as any downstream consumer sees them: read_committed, from the start.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", "erp-demo-summary")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()?;
    let topic = topics.order_events();
    let md = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let pb = bar(n_orders as u64, "outcomes");
    let mut outcomes: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut cancel_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    while outcomes.len() < order_ids.len() {
        if Instant::now() > deadline {
            pb.abandon();
            bail!(
                "only {} of {} orders reached an outcome within {:?}: is `erp run` running?",
                outcomes.len(),
                order_ids.len(),
                timeout
            );
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg?;
        let Some(bytes) = msg.payload() else { continue };
        let event: wire::OrderEvent = serde.decode(SchemaKind::OrderEvent, bytes)?;
        if !order_ids.contains(&event.order_id) {
            continue;
        }
        let outcome = if event.order_confirmed.is_some() {
            "confirmed"
        } else if let Some(c) = &event.order_cancelled {
            let kind = c.reason.split(':').next().unwrap_or("").to_string();
            *cancel_reasons.entry(kind).or_default() += 1;
            "cancelled"
        } else if event.command_rejected.is_some() {
            "rejected"
        } else {
            continue;
        };
        if outcomes.insert(event.order_id.clone(), outcome).is_none() {
            pb.inc(1);
        }
    }
    pb.finish();
    let elapsed = started.elapsed();
    let count = |o: &str| outcomes.values().filter(|v| **v == o).count();
    println!();
    println!("== demo summary ==");
    println!("products registered : {n_products} (stock {stock} each)");
    println!(
        "orders published    : {n_orders} in {:.2}s",
        published_in.as_secs_f64()
    );
    println!("confirmed           : {}", count("confirmed"));
    println!(
        "cancelled           : {} (stock unavailable)",
        count("cancelled")
    );
    println!("rejected            : {}", count("rejected"));
    println!(
        "all outcomes in     : {:.2}s ({:.0} orders/s end to end)",
        elapsed.as_secs_f64(),
        n_orders as f64 / elapsed.as_secs_f64()
    );
    println!();
    println!("stock left (from {query_url}/api/v1/inventory/<sku>):");
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    for i in 0..n_products.min(10) {
        let sku = sample::sku(i);
        let url = format!("{query_url}/api/v1/inventory/{sku}");
        match http
            .get(&url)
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
        {
            Ok(p) => println!(
                "  {sku}: on_hand {} reserved {} available {}",
                p["on_hand"], p["reserved"], p["available"]
            ),
            Err(e) => println!("  {sku}: query failed ({e})"),
        }
    }
    if n_products > 10 {
        println!("  … {} more", n_products - 10);
    }
    let some_order = order_ids.iter().next().cloned().unwrap_or_default();
    println!();
    println!("try:");
    println!("  curl {query_url}/api/v1/orders/{some_order}");
    println!("  curl {query_url}/api/v1/inventory/{}", sample::sku(0));
    println!("  curl {query_url}/health/ready");
    println!("  curl {query_url}/metrics");
    Ok(())
}
