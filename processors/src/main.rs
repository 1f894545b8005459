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
use erp_processors::app::{Context, Engines, SagaSettings, prepare};
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
    /// Check the saga's invariants on the committed event topics (exactly one outcome
    /// per order, money and stock conserved, nothing oversold); exit 1 on a violation.
    CheckSaga {
        /// Keep re-reading until everything settled, at most this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Publish a sample load (customers, products, then a mixed load of orders and
    /// cancels), act as the carrier (dispatch + deliver every shipment), wait for every
    /// order's outcome and print a summary.
    DemoLoad {
        #[arg(long, default_value_t = 20)]
        products: usize,
        #[arg(long, default_value_t = 300)]
        orders: usize,
        #[arg(long, default_value_t = 50)]
        customers: usize,
        /// Initial stock of each product.
        #[arg(long, default_value_t = 500)]
        stock: i32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// `acceptance` (10 % declines, 10 % out of stock, 5 % cancels, 2 % undeliverable,
        /// 2 % failed captures) or `none` (every order goes through).
        #[arg(long, default_value = "acceptance")]
        mix: String,
        /// Give up waiting for outcomes after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Base URL of the query API to read stock from.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        query_url: String,
    },
    /// The query API benchmark's baseline: a bare axum handler answering
    /// `GET /api/v1/orders/{id}` with a fixed JSON body (bench/query_api.sh).
    #[command(hide = true)]
    BenchHttpBaseline {
        #[arg(long)]
        addr: std::net::SocketAddr,
        /// The body to answer with (a real order, for the same bytes on the wire).
        #[arg(long)]
        body_file: PathBuf,
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
        Command::BenchHttpBaseline { addr, body_file } => {
            let body = std::fs::read(&body_file)
                .with_context(|| format!("reading {}", body_file.display()))?;
            tokio::runtime::Runtime::new()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                tracing::info!(%addr, "baseline HTTP handler listening");
                erp_query_api::serve(
                    listener,
                    erp_query_api::bench::baseline_app(body.into()),
                    Box::pin(shutdown_signal()),
                )
                .await?;
                anyhow::Ok(())
            })
        }
        Command::Processor { context } => serve(&settings, &topics, serde, &[context]),
        Command::Setup => {
            let rt = tokio::runtime::Runtime::new()?;
            let topologies = Context::all_topologies(
                &Context::ALL,
                &topics,
                serde.clone(),
                SagaSettings::from(&settings),
            );
            rt.block_on(prepare(&settings, &topics, &topologies, serde.clone()))?;
            println!("topics and schemas ready");
            Ok(())
        }
        Command::CheckSaga { timeout_secs } => {
            let report = erp_processors::audit::audit_until_settled(
                &settings.bootstrap_servers,
                &serde,
                &topics,
                Duration::from_secs(timeout_secs),
            )?;
            println!("{report}");
            if !report.is_clean() {
                bail!("the saga's invariants do not hold (or orders are still open)");
            }
            Ok(())
        }
        Command::DemoLoad {
            products,
            orders,
            customers,
            stock,
            seed,
            mix,
            timeout_secs,
            query_url,
        } => {
            let mix = match mix.as_str() {
                "acceptance" => sample::Mix::ACCEPTANCE,
                "none" => sample::Mix::NONE,
                other => bail!("unknown --mix {other:?}: use acceptance or none"),
            };
            demo_load(
                &settings,
                topics,
                serde,
                DemoShape {
                    products,
                    orders,
                    customers,
                    stock,
                    seed,
                    mix,
                },
                Duration::from_secs(timeout_secs),
                &query_url,
            )
        }
    }
}

fn serve(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    contexts: &[Context],
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let topologies = Context::all_topologies(
        contexts,
        topics,
        serde.clone(),
        SagaSettings::from(settings),
    );
    rt.block_on(prepare(settings, topics, &topologies, serde.clone()))
        .with_context(|| {
            format!(
                "preparing topics and schemas (Kafka at {}, registry at {})",
                settings.bootstrap_servers, settings.schema_registry_url
            )
        })?;
    let engines = Engines::start(settings, topologies)?;
    let mut state = engines.state.clone();
    let publisher =
        CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?;
    state.commands = Some(Arc::new(erp_processors::app::KafkaCommandBus(publisher)));
    state.locator = Some(Arc::new(erp_processors::routing::GroupLocator::new(
        &settings.bootstrap_servers,
        topics.clone(),
        settings.partitions,
        state.stores.clone(),
        settings.advertised(),
    )?));
    state.gateway = settings.gateway()?;
    let grpc = match settings.grpc_addr {
        None => None,
        Some(addr) => {
            let outcomes = Arc::new(erp_query_api::grpc::Outcomes::default());
            erp_processors::app::watch_inventory_outcomes(
                settings,
                topics,
                serde.clone(),
                outcomes.clone(),
                engines.shutdown.clone(),
            )
            .context("starting the gRPC service's outcome consumer")?;
            Some((
                addr,
                erp_query_api::grpc::InventoryGrpc::server(state.clone(), outcomes),
            ))
        }
    };
    let router = erp_query_api::app(state);
    let addr = settings.http_addr;
    let server_result: anyhow::Result<()> = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the query API to {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "query API listening");
        let (grpc_stop, grpc_stopped) = tokio::sync::watch::channel(false);
        let grpc_task = match grpc {
            None => None,
            Some((addr, service)) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the gRPC service to {addr}"))?;
                tracing::info!(addr = %listener.local_addr()?, "gRPC inventory service listening");
                let mut stopped = grpc_stopped.clone();
                Some(tokio::spawn(erp_query_api::grpc::serve(
                    listener,
                    service,
                    Box::pin(async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    }),
                )))
            }
        };
        // A stream thread that dies (fenced, broken state) takes the process down:
        // crash-only, a restart recovers from the committed log.
        let stopping = engines.shutdown.clone();
        let watcher = async move {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            tracing::error!("a stream thread stopped; shutting down");
        };
        // Graceful: in-flight requests finish, then the engines commit and stop.
        erp_query_api::serve(
            listener,
            router,
            Box::pin(async move {
                tokio::select! {
                    _ = shutdown_signal() => tracing::info!("shutdown requested"),
                    _ = watcher => {},
                }
            }),
        )
        .await
        .context("query API server")?;
        let _ = grpc_stop.send(true);
        if let Some(task) = grpc_task {
            task.await?.context("gRPC server")?;
        }
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

struct DemoShape {
    products: usize,
    orders: usize,
    customers: usize,
    stock: i32,
    seed: u64,
    mix: sample::Mix,
}

/// Waits until the order processor behind `query_url` sees every customer, so no order
/// is refused as "unknown customer" only because the customer table is still on its way.
fn wait_customers_visible(
    http: &reqwest::blocking::Client,
    query_url: &str,
    ids: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    for id in ids {
        let url = format!("{query_url}/api/v1/customers/{id}");
        loop {
            let visible = match http.get(&url).send() {
                Ok(r) if r.status().is_success() => {
                    let v: serde_json::Value = r.json()?;
                    v["visible_to_orders"] != serde_json::Value::Bool(false)
                }
                Ok(_) => false,
                Err(e) if e.is_connect() => {
                    bail!(
                        "the query API at {query_url} is unreachable ({e}): is `erp run` running?"
                    )
                }
                Err(_) => false,
            };
            if visible {
                break;
            }
            if Instant::now() > deadline {
                bail!("customer {id} was not visible to the order processor within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn demo_load(
    settings: &Settings,
    topics: Topics,
    serde: Arc<AvroSerde>,
    shape: DemoShape,
    timeout: Duration,
    query_url: &str,
) -> anyhow::Result<()> {
    let DemoShape {
        products: n_products,
        orders: n_orders,
        customers: n_customers,
        stock,
        seed,
        mix,
    } = shape;
    let publisher =
        CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut rng = sample::Rng::new(seed);
    let now = chrono::Utc::now().timestamp_millis();
    let started = Instant::now();
    let registrations = sample::customers(&mut rng, n_customers.max(1), now);
    let customer_ids: Vec<String> = registrations
        .iter()
        .map(|c| c.customer_id.clone())
        .collect();
    for cmd in &registrations {
        publisher.customer(cmd)?;
    }
    for cmd in sample::products(&mut rng, n_products, stock, now) {
        publisher.inventory(&cmd)?;
    }
    publisher.flush()?;
    wait_customers_visible(&http, query_url, &customer_ids, Duration::from_secs(60))?;
    // The carrier dispatches and delivers every shipment the saga creates.
    let carrier = erp_connectors::Carrier::start(
        &settings.bootstrap_servers,
        &format!("{}erp-demo-carrier", topics.prefix),
        serde.clone(),
        CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?,
    )?;
    let pb = bar(n_orders as u64, "orders");
    let mut order_ids = HashSet::new();
    // Cancels go out a little later than their order, so they meet the saga at
    // different steps.
    let mut cancels: Vec<(usize, String)> = Vec::new();
    for i in 0..n_orders {
        let at = chrono::Utc::now().timestamp_millis();
        let o = sample::order(&mut rng, n_products, &customer_ids, mix, at);
        order_ids.insert(o.command.order_id.clone());
        publisher.order(&o.command)?;
        if o.cancel {
            cancels.push((i + rng.below(40) as usize, o.command.order_id.clone()));
        }
        cancels.retain(|(due, id)| {
            if *due > i {
                return true;
            }
            let c = sample::cancel(&mut rng, id, at);
            publisher.order(&c).is_err()
        });
        pb.inc(1);
    }
    for (_, id) in cancels {
        publisher.order(&sample::cancel(
            &mut rng,
            &id,
            chrono::Utc::now().timestamp_millis(),
        ))?;
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
    let mut created: HashSet<String> = HashSet::new();
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
        if event.order_created.is_some() {
            created.insert(event.order_id.clone());
        }
        let outcome = if event.order_completed.is_some() {
            "completed"
        } else if let Some(c) = &event.order_cancelled {
            let kind = c
                .reason
                .split([':', '('])
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            *cancel_reasons.entry(kind).or_default() += 1;
            "cancelled"
        } else if event.command_rejected.is_some() && !created.contains(&event.order_id) {
            // A PlaceOrder that was refused: the order never existed.
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
    let delivered = carrier.delivered();
    carrier.stop()?;
    let count = |o: &str| outcomes.values().filter(|v| **v == o).count();
    println!();
    println!("== demo summary ==");
    println!("customers registered: {n_customers}");
    println!(
        "products registered : {n_products} (stock {stock} each) + {}",
        sample::EMPTY_SKU
    );
    println!(
        "orders published    : {n_orders} in {:.2}s ({mix:?})",
        published_in.as_secs_f64()
    );
    println!(
        "completed           : {} (shipped and delivered: {delivered})",
        count("completed")
    );
    println!("cancelled           : {}", count("cancelled"));
    for (reason, n) in &cancel_reasons {
        println!("  {n:>6}  {reason}");
    }
    println!("rejected            : {}", count("rejected"));
    println!(
        "all outcomes in     : {:.2}s ({:.0} orders/s end to end)",
        elapsed.as_secs_f64(),
        n_orders as f64 / elapsed.as_secs_f64()
    );
    println!();
    println!("stock left (from {query_url}/api/v1/inventory/<sku>):");
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
    println!("  curl {query_url}/api/v1/payments/{some_order}");
    println!("  curl {query_url}/api/v1/shipments/{some_order}");
    println!("  curl {query_url}/api/v1/customers/{}", customer_ids[0]);
    println!("  curl {query_url}/api/v1/inventory/{}", sample::sku(0));
    println!("  curl {query_url}/health/ready");
    println!("  curl {query_url}/metrics");
    Ok(())
}
