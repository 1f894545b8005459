//! `erp`: the saga's processors, query API and operator tools in one binary.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

mod bench_cli;

use erp_connectors::{CommandPublisher, sample};
use erp_processors::app::{Context, Engines, SagaSettings, prepare};
use erp_processors::config::Settings;
use erp_processors::engine::Topology;
use erp_processors::ops::{self, ResetKind};
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
    /// Print the least-privilege ACLs of the secured stack (one principal per context,
    /// `erp-client`, `erp-audit`), one line of Kafka AclCommand arguments each:
    /// `erp acls | scripts/stack.sh acls` applies them.
    Acls,
    /// Check the saga's invariants on the committed event topics (exactly one outcome
    /// per order, money and stock conserved, nothing oversold); exit 1 on a violation.
    CheckSaga {
        /// Keep re-reading until everything settled, at most this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Check every exactly-once invariant over all committed commands, events and
    /// dead letters (accepted orders answered and ended once, unique event ids, the stock
    /// ledger, money, legal saga order, poison dead-lettered with its bytes); exit
    /// non-zero on any violation.
    Check {
        /// Keep re-reading until nothing is under way, at most this many seconds.
        #[arg(long, default_value_t = 120)]
        settle_secs: u64,
        /// Longest time one read of one topic may take.
        #[arg(long, default_value_t = 600)]
        read_timeout_secs: u64,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Publish a sample load (customers, products, then a mixed load of orders and
    /// cancels), act as the carrier (dispatch + deliver every shipment), wait for every
    /// order's outcome and print a summary.
    DemoLoad {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Give up waiting for outcomes after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Base URL of the query API to read stock from.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        query_url: String,
    },
    /// Publish a synthetic load, open loop at --rate: customers, products, then orders
    /// and cancels in the shares given. Does not wait for outcomes (see check-saga).
    Generate {
        #[command(flatten)]
        shape: ShapeArgs,
        /// Wait until the order processor behind this query API sees every customer
        /// before the first order (else early orders may meet "unknown customer").
        #[arg(long)]
        query_url: Option<String>,
        /// Skip registering customers and products (another run with this seed did).
        #[arg(long)]
        no_catalogue: bool,
    },
    /// Publish commands from NDJSON (.ndjson/.jsonl) or CSV (.csv) files. Every bad line
    /// is reported with its number and skipped; exit 2 if there was one. Re-running a
    /// file publishes nothing new: command ids derive from the file name and content.
    Load {
        /// The files, in order (load customers and products before the orders on them).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// orders, customers, products or restocks (default: from each file's name).
        #[arg(long)]
        kind: Option<String>,
        /// ndjson or csv (default: from each file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Names the file in derived command ids instead of its file name (needed when
        /// two different files have the same name: same name and same line = same
        /// command, which the processors take once).
        #[arg(long)]
        source_id: Option<String>,
        /// Validate only; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Move an application's input offsets, keeping its state (like `kafka-consumer-groups
    /// --reset-offsets`). Prints the plan; changes nothing without --execute.
    Reset(ResetArgs),
    /// Rebuild an application from its inputs (like Kafka's StreamsResetter plus
    /// cleanUp): input offsets to the start, changelogs deleted, local state wiped; the
    /// input journal is kept so reprocessing repeats the original order. With a
    /// --to-datetime/--by-duration/--to-offset target, records before it rebuild state
    /// silently and only later ones send outputs again. Prints the plan; changes nothing
    /// without --execute.
    Replay(ResetArgs),
    /// Rebuild every store into a shadow directory — from the inputs (in journal order)
    /// and from the changelogs — and compare them key by key with each other and with
    /// the local state. Exit 1 on any difference. The application must be stopped.
    Verify {
        #[command(flatten)]
        apps: AppArgs,
        /// Where to rebuild (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        shadow_dir: Option<PathBuf>,
        /// Wait up to this long for the group to empty before refusing.
        #[arg(long, default_value_t = 15)]
        wait_secs: u64,
    },
    /// Look into stores, consumer lag and checkpoints.
    Inspect {
        #[command(subcommand)]
        what: Inspect,
    },
    /// Print a topic's records as JSON lines, Avro decoded with the writer's schema
    /// (a kcat for this project's topics: commands, events, changelogs, journals, DLQs).
    Tail {
        topic: String,
        /// Start at the beginning (default: the last 10 records of each partition).
        #[arg(long, conflicts_with = "last")]
        from_beginning: bool,
        /// The last N records of each partition.
        #[arg(long)]
        last: Option<i64>,
        /// Keep waiting for new records.
        #[arg(short, long)]
        follow: bool,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
    },
    /// The analytics sink: event topics into PostgreSQL (`ERP_POSTGRES_URL`), exactly once
    /// (offsets stored in the same transaction as the rows). Runs until SIGTERM, or with
    /// --until-caught-up until every partition is read to its current end.
    Sink {
        #[arg(long)]
        until_caught_up: bool,
        /// Drop the sink's schema (`ERP_POSTGRES_SCHEMA`) with its tables and offsets
        /// first, and read the event topics again from the start.
        #[arg(long)]
        fresh: bool,
        /// Records per PostgreSQL transaction (at most).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        batch_size: u32,
    },
    /// The replay benchmark's baseline: a raw read_committed consume (no decoding, no
    /// processing) of every application's input topics, from the start to the end.
    #[command(hide = true)]
    BenchConsume {
        /// The analytics sink's event topics instead (bench/sink.sh).
        #[arg(long)]
        event_topics: bool,
    },
    /// The outside world's carrier on its own (the chaos runner's): dispatches and
    /// delivers every shipment the saga creates until SIGTERM; a restart resumes from
    /// the group's committed offsets.
    #[command(hide = true)]
    Carrier,
    /// The benchmarks' measuring tools (bench/).
    #[command(hide = true)]
    Bench {
        #[command(subcommand)]
        what: bench_cli::BenchCommand,
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

#[derive(clap::Args)]
struct ShapeArgs {
    #[arg(long, default_value_t = 20)]
    products: usize,
    #[arg(long, default_value_t = 300)]
    orders: usize,
    #[arg(long, default_value_t = 50)]
    customers: usize,
    /// Initial stock of each product.
    #[arg(long, default_value_t = 500)]
    stock: i32,
    /// Same seed, same commands (and the same command ids: use another seed for
    /// another load on the same topics).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `acceptance` (10 % declines, 10 % out of stock, 5 % cancels, 2 % undeliverable,
    /// 2 % failed captures) or `none` (every order goes through); the --*-pct options
    /// override single shares.
    #[arg(long, default_value = "acceptance")]
    mix: String,
    /// Percent of orders paid with a card the gateway declines.
    #[arg(long)]
    declined_pct: Option<u64>,
    /// Percent of orders with a line on a product that has no stock.
    #[arg(long)]
    out_of_stock_pct: Option<u64>,
    /// Percent of orders the customer cancels shortly after placing.
    #[arg(long)]
    cancelled_pct: Option<u64>,
    /// Percent of orders shipped to a postal code no carrier serves.
    #[arg(long)]
    undeliverable_pct: Option<u64>,
    /// Percent of orders whose payment capture fails.
    #[arg(long)]
    capture_fails_pct: Option<u64>,
    /// Orders per second, open loop (default: as fast as the producer goes).
    #[arg(long)]
    rate: Option<f64>,
    /// Percent of orders followed by one bad record (bad magic byte, unknown schema id,
    /// truncated Avro, or an invalid business value), marked with an `erp-chaos` header.
    #[arg(long, default_value_t = 0.0)]
    poison_pct: f64,
}

impl ShapeArgs {
    fn shape(&self) -> anyhow::Result<erp_connectors::generator::Shape> {
        let mut mix = match self.mix.as_str() {
            "acceptance" => sample::Mix::ACCEPTANCE,
            "none" => sample::Mix::NONE,
            other => bail!("unknown --mix {other:?}: use acceptance or none"),
        };
        let set = |v: Option<u64>, field: &mut u64| {
            if let Some(v) = v {
                *field = v;
            }
        };
        set(self.declined_pct, &mut mix.declined);
        set(self.out_of_stock_pct, &mut mix.out_of_stock);
        set(self.cancelled_pct, &mut mix.cancelled);
        set(self.undeliverable_pct, &mut mix.undeliverable);
        set(self.capture_fails_pct, &mut mix.capture_fails);
        let total =
            mix.declined + mix.out_of_stock + mix.cancelled + mix.undeliverable + mix.capture_fails;
        if total > 100 {
            bail!("the mix's shares add up to {total} %, more than 100 %");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            bail!("--rate must be a positive number of orders per second, got {r}");
        }
        if self.products == 0 || self.customers == 0 {
            bail!("--products and --customers must be at least 1");
        }
        if !(0.0..=100.0).contains(&self.poison_pct) {
            bail!("--poison-pct must be 0..=100, got {}", self.poison_pct);
        }
        Ok(erp_connectors::generator::Shape {
            customers: self.customers,
            products: self.products,
            stock: self.stock,
            orders: self.orders,
            seed: self.seed,
            mix,
            rate: self.rate,
            poison_pct: self.poison_pct,
        })
    }
}

#[derive(clap::Args)]
struct AppArgs {
    /// The application (consumer group) id, e.g. erp-order; `erp inspect apps` lists them.
    #[arg(long = "application-id", required_unless_present = "all")]
    application_id: Option<String>,
    /// Every application of the saga.
    #[arg(long, conflicts_with = "application_id")]
    all: bool,
}

#[derive(clap::Args)]
#[group(id = "target", multiple = false)]
struct TargetArgs {
    /// The first offset still in the log (the default).
    #[arg(long)]
    to_earliest: bool,
    /// The end of the log.
    #[arg(long)]
    to_latest: bool,
    /// The first record at or after this time (RFC 3339, e.g. 2026-11-27T10:00:00Z).
    #[arg(long)]
    to_datetime: Option<String>,
    /// The first record younger than this (ISO 8601 like PT10M, or 90s, 10m, 2h, 1d).
    #[arg(long)]
    by_duration: Option<String>,
    /// An offset for every partition (N), or per partition (topic:partition=offset,
    /// repeatable; partitions not named keep their position).
    #[arg(long)]
    to_offset: Vec<String>,
    /// Move every partition by N (negative: back).
    #[arg(long, allow_hyphen_values = true)]
    shift_by: Option<i64>,
}

impl TargetArgs {
    fn target(&self) -> anyhow::Result<erp_processors::ops::ResetTo> {
        use erp_processors::ops::ResetTo;
        Ok(if self.to_latest {
            ResetTo::Latest
        } else if let Some(t) = &self.to_datetime {
            ResetTo::datetime(t)?
        } else if let Some(d) = &self.by_duration {
            ResetTo::duration(d)?
        } else if let [single] = self.to_offset.as_slice()
            && let Ok(n) = single.parse::<i64>()
        {
            ResetTo::Offset(n)
        } else if !self.to_offset.is_empty() {
            ResetTo::explicit(&self.to_offset)?
        } else if let Some(n) = self.shift_by {
            ResetTo::ShiftBy(n)
        } else {
            ResetTo::Earliest
        })
    }
}

#[derive(clap::Args)]
struct ResetArgs {
    #[command(flatten)]
    apps: AppArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// Print the plan only (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Carry the plan out.
    #[arg(long)]
    execute: bool,
    /// Wait up to this long for the group to empty (a stopped instance stays a member
    /// for the session timeout, 10 s) before refusing.
    #[arg(long, default_value_t = 15)]
    wait_secs: u64,
}

#[derive(Subcommand)]
enum Inspect {
    /// Every application: its inputs, stores, internal topics and group state.
    Apps,
    /// Local stores under the state directory: keys, size, checkpoint against the
    /// changelog's end, and a digest of the content.
    Stores {
        #[arg(long = "application-id")]
        application_id: Option<String>,
    },
    /// One key of a local store, from whichever local partition has it.
    Get {
        #[arg(long = "application-id")]
        application_id: String,
        #[arg(long)]
        store: String,
        #[arg(long)]
        key: String,
    },
    /// Committed offsets, end offsets and lag per input partition (with --follow, a
    /// progress bar until caught up: how a replay is followed).
    Lag {
        #[command(flatten)]
        apps: AppArgs,
        #[arg(short, long)]
        follow: bool,
        /// With --follow: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref()).context("loading settings")?;
    // One principal per process: every Kafka client below starts from these settings.
    erp_connectors::kafka::use_security(settings.kafka_security())
        .context("Kafka security settings")?;
    let server = matches!(
        cli.command,
        Command::Run
            | Command::Processor { .. }
            | Command::BenchHttpBaseline { .. }
            | Command::Sink { .. }
            | Command::Bench { .. }
    );
    // The exported traces' service: one per bounded context, as deployed.
    let service = match &cli.command {
        Command::Processor { context } => format!(
            "erp-{}",
            context
                .to_possible_value()
                .expect("contexts are named")
                .get_name()
        ),
        Command::Sink { .. } => "erp-sink".into(),
        _ => "erp".into(),
    };
    // Flushes the last spans when main returns.
    let _telemetry =
        erp_processors::telemetry::init(&settings, server, &service).context("telemetry")?;
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
        Command::Bench { what } => bench_cli::run(&settings, &topics, serde, what),
        Command::Sink {
            until_caught_up,
            fresh,
            batch_size,
        } => {
            ops::check_broker(&settings.bootstrap_servers)?;
            let mut sink = erp_connectors::sink::AnalyticsSink::connect(
                &settings.bootstrap_servers,
                &settings.postgres_url,
                &settings.postgres_schema,
                fresh,
                serde,
                topics,
            )
            .with_context(|| format!("starting the sink (database {})", settings.postgres_url))?;
            sink.max_batch = batch_size as usize;
            let started = Instant::now();
            tracing::info!(partitions = sink.partitions().len(), "sink connected");
            if until_caught_up {
                // Caught up: every partition written up to its last readable record as
                // of now (transaction markers are not records).
                let partitions = sink.partitions();
                let ends = ops::data_ends(&settings.bootstrap_servers, &partitions)?;
                let targets: Vec<(String, i32, i64)> = partitions
                    .into_iter()
                    .zip(ends)
                    .map(|((t, p), end)| (t, p, end))
                    .collect();
                tracing::info!(elapsed = ?started.elapsed(), "caught-up targets read");
                let mut last_progress = Instant::now();
                while let Some((topic, partition, end)) = targets
                    .iter()
                    .find(|(t, p, end)| sink.position(t, *p) < *end)
                {
                    if last_progress.elapsed() > Duration::from_secs(120) {
                        bail!(
                            "no progress for 120 s: {topic}[{partition}] is at {} of {end}",
                            sink.position(topic, *partition)
                        );
                    }
                    if sink.poll_batch(Duration::from_millis(200))? > 0 {
                        last_progress = Instant::now();
                    }
                }
            } else {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let flag = stop.clone();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                std::thread::spawn(move || {
                    rt.block_on(shutdown_signal());
                    flag.store(true, std::sync::atomic::Ordering::Relaxed);
                });
                sink.run(&stop)?;
            }
            let s = &sink.stats;
            println!(
                "sink: {} records in {} transactions ({} dead letters) in {:.1}s",
                s.records,
                s.batches,
                s.dead_letters,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::BenchConsume { event_topics } => {
            let mut inputs: Vec<String> = if event_topics {
                erp_connectors::sink::event_topics(&topics)
            } else {
                Context::all_topologies(
                    &Context::ALL,
                    &topics,
                    serde,
                    SagaSettings::from(&settings),
                )
                .into_iter()
                .flat_map(|t| t.source_topics)
                .collect()
            };
            inputs.sort();
            inputs.dedup();
            let started = Instant::now();
            let (records, bytes) = raw_consume(&settings.bootstrap_servers, &inputs)?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "records={records} bytes={bytes} seconds={secs:.3} records_per_s={:.0}",
                records as f64 / secs
            );
            Ok(())
        }
        Command::Reset(args) => reset(&settings, &topics, serde, args, ResetKind::Offsets),
        Command::Replay(args) => reset(&settings, &topics, serde, args, ResetKind::Replay),
        Command::Verify {
            apps,
            shadow_dir,
            wait_secs,
        } => verify(
            &settings,
            &topics,
            serde,
            &apps,
            shadow_dir,
            Duration::from_secs(wait_secs),
        ),
        Command::Inspect { what } => inspect(&settings, &topics, serde, what),
        Command::Tail {
            topic,
            from_beginning,
            last,
            follow,
            max,
        } => {
            ops::check_broker(&settings.bootstrap_servers)?;
            ops::check_registry(&settings.schema_registry_url)?;
            let from = if from_beginning {
                ops::TailFrom::Beginning
            } else {
                ops::TailFrom::Last(last.unwrap_or(10))
            };
            let format = ops::value_format(&topic, &topics.data_topics());
            let mut out = std::io::stdout().lock();
            ops::tail(
                &settings.bootstrap_servers,
                &serde,
                &topic,
                ops::TailOptions {
                    format,
                    from,
                    follow,
                    max,
                },
                &mut |json| {
                    use std::io::Write as _;
                    writeln!(out, "{json}").is_ok()
                },
            )?;
            Ok(())
        }
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
        Command::Acls => {
            let grants =
                erp_processors::acls::all_grants(&topics, SagaSettings::from(&settings), serde);
            for grant in grants {
                println!("{}", grant.args().join(" "));
            }
            Ok(())
        }
        Command::Carrier => {
            let carrier = erp_connectors::Carrier::start(
                &settings.bootstrap_servers,
                &format!("{}erp-carrier", topics.prefix),
                serde.clone(),
                CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?,
            )?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(shutdown_signal());
            let delivered = carrier.delivered();
            carrier.stop()?;
            println!("carrier: {delivered} shipment(s) dispatched and delivered");
            Ok(())
        }
        Command::Check {
            settle_secs,
            read_timeout_secs,
            json,
        } => {
            let report = erp_processors::check::check_until_settled(
                &settings.bootstrap_servers,
                &serde,
                &topics,
                Duration::from_secs(settle_secs),
                Duration::from_secs(read_timeout_secs),
            )?;
            println!("{report}");
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            if report.violation_count() > 0 {
                bail!("{} invariant violation(s)", report.violation_count());
            }
            if report.open > 0 {
                bail!("{} order(s) still open after {settle_secs} s", report.open);
            }
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
        Command::Generate {
            shape,
            query_url,
            no_catalogue,
        } => {
            let publisher =
                CommandPublisher::new(&settings.bootstrap_servers, serde, topics.clone())?;
            let mut generator = erp_connectors::generator::Generator::new(shape.shape()?);
            let catalogue = generator
                .catalogue(
                    (!no_catalogue).then_some(&publisher),
                    chrono::Utc::now().timestamp_millis(),
                )
                .context("registering customers and products")?;
            if let Some(url) = &query_url {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?;
                wait_customers_visible(
                    &http,
                    url,
                    &catalogue.customer_ids,
                    Duration::from_secs(60),
                )?;
            }
            let pb = bar(generator.shape.orders as u64, "orders");
            let out = generator.orders(&publisher, &catalogue, |_| pb.inc(1))?;
            pb.finish();
            println!(
                "published {} orders and {} cancels in {:.2}s ({:.0} orders/s; slowest send {} ms behind schedule)",
                out.order_ids.len(),
                out.cancels,
                out.elapsed.as_secs_f64(),
                out.order_ids.len() as f64 / out.elapsed.as_secs_f64().max(1e-9),
                out.max_lag.as_millis()
            );
            if !out.poison.is_empty() {
                let kinds: Vec<String> = out
                    .poison
                    .iter()
                    .map(|(k, n)| format!("{} {n}", k.name()))
                    .collect();
                println!("poison records: {}", kinds.join(", "));
            }
            Ok(())
        }
        Command::Load {
            files,
            kind,
            format,
            source_id,
            dry_run,
        } => load_files(
            &settings,
            topics,
            serde,
            &files,
            LoadOptions {
                kind: kind
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                format: format
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                source_id,
                dry_run,
            },
        ),
        Command::DemoLoad {
            shape,
            timeout_secs,
            query_url,
        } => demo_load(
            &settings,
            topics,
            serde,
            shape.shape()?,
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
    // Set when the engines stopped on their own: the process then exits non-zero even if
    // the failed thread (a global store's tail) had no error to hand back.
    let crashed = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
        let crashed = crashed.clone();
        let watcher = async move {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            crashed.store(true, std::sync::atomic::Ordering::Relaxed);
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
    stop_result?;
    if crashed.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!("a stream or global store thread stopped; see the error above");
    }
    Ok(())
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

struct LoadOptions {
    kind: Option<erp_connectors::source::Kind>,
    format: Option<erp_connectors::source::Format>,
    source_id: Option<String>,
    dry_run: bool,
}

/// `erp load`: every file in turn; bad lines are listed with their numbers.
fn load_files(
    settings: &Settings,
    topics: Topics,
    serde: Arc<AvroSerde>,
    files: &[PathBuf],
    options: LoadOptions,
) -> anyhow::Result<()> {
    use erp_connectors::source::{self, Kind};
    if options.source_id.is_some() && files.len() > 1 {
        // One id for two files would give their identical lines the same command ids,
        // and the processors would drop the second as a repeat.
        bail!("--source-id names one file: load the files one by one");
    }
    let publisher = if options.dry_run {
        None
    } else {
        ops::check_broker(&settings.bootstrap_servers)?;
        ops::check_registry(&settings.schema_registry_url)?;
        Some(CommandPublisher::new(
            &settings.bootstrap_servers,
            serde,
            topics,
        )?)
    };
    let mut skipped = 0;
    for file in files {
        let kind = match options.kind.or_else(|| Kind::from_path(file)) {
            Some(k) => k,
            None => bail!(
                "{}: cannot tell what it holds from its name; pass --kind orders|customers|products|restocks",
                file.display()
            ),
        };
        let started = Instant::now();
        let report = source::load_file(
            file,
            kind,
            options.format,
            options.source_id.as_deref(),
            publisher.as_ref(),
            true,
        )?;
        for e in &report.errors {
            eprintln!("{}:{}: {}", file.display(), e.line, e.message);
        }
        let done = if options.dry_run {
            "valid"
        } else {
            "published"
        };
        println!(
            "{} ({kind}): {} command(s) {done}, {} line(s) skipped, {} line(s) in {:.2}s",
            file.display(),
            report.published,
            report.errors.len(),
            report.lines,
            started.elapsed().as_secs_f64(),
        );
        skipped += report.errors.len();
    }
    if skipped > 0 {
        eprintln!("{skipped} line(s) skipped: see above");
        std::process::exit(2);
    }
    Ok(())
}

/// The outcome an order event announces, if any: completed, cancelled, or rejected (a
/// refused PlaceOrder: the order never existed). `created` collects the orders seen
/// created, which tells a refused PlaceOrder from a refused later command.
fn outcome_of(event: &wire::OrderEvent, created: &mut HashSet<String>) -> Option<&'static str> {
    if event.order_created.is_some() {
        created.insert(event.order_id.clone());
    }
    if event.order_completed.is_some() {
        Some("completed")
    } else if event.order_cancelled.is_some() {
        Some("cancelled")
    } else if event.command_rejected.is_some() && !created.contains(&event.order_id) {
        Some("rejected")
    } else {
        None
    }
}

fn demo_load(
    settings: &Settings,
    topics: Topics,
    serde: Arc<AvroSerde>,
    shape: erp_connectors::generator::Shape,
    timeout: Duration,
    query_url: &str,
) -> anyhow::Result<()> {
    let n_orders = shape.orders;
    let n_customers = shape.customers;
    let n_products = shape.products;
    let (stock, mix) = (shape.stock, shape.mix);
    let publisher =
        CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?;
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let started = Instant::now();
    let mut generator = erp_connectors::generator::Generator::new(shape);
    let catalogue = generator.catalogue(Some(&publisher), chrono::Utc::now().timestamp_millis())?;
    let customer_ids = catalogue.customer_ids.clone();
    wait_customers_visible(&http, query_url, &customer_ids, Duration::from_secs(60))?;
    // The carrier dispatches and delivers every shipment the saga creates.
    let carrier = erp_connectors::Carrier::start(
        &settings.bootstrap_servers,
        &format!("{}erp-demo-carrier", topics.prefix),
        serde.clone(),
        CommandPublisher::new(&settings.bootstrap_servers, serde.clone(), topics.clone())?,
    )?;
    let pb = bar(n_orders as u64, "orders");
    let published = generator.orders(&publisher, &catalogue, |_| pb.inc(1))?;
    let order_ids: HashSet<String> = published.order_ids.iter().cloned().collect();
    pb.finish();
    let published_in = started.elapsed();

    // Outcomes as any downstream consumer sees them: read_committed, from the start.
    let consumer: BaseConsumer = erp_connectors::kafka::client()
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
        let Some(outcome) = outcome_of(&event, &mut created) else {
            continue;
        };
        if let Some(c) = &event.order_cancelled {
            let kind = c
                .reason
                .split([':', '('])
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            *cancel_reasons.entry(kind).or_default() += 1;
        }
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

/// The topologies an operator command is about.
fn selected(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    apps: &AppArgs,
) -> anyhow::Result<Vec<Topology>> {
    let all = Context::all_topologies(&Context::ALL, topics, serde, SagaSettings::from(settings));
    if apps.all {
        return Ok(all);
    }
    let want = apps.application_id.as_deref().unwrap_or_default();
    let known: Vec<String> = all.iter().map(|t| t.application_id.clone()).collect();
    match all.into_iter().find(|t| t.application_id == want) {
        Some(t) => Ok(vec![t]),
        None => bail!(
            "unknown application id {want:?}; known: {}",
            known.join(", ")
        ),
    }
}

fn reset(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    args: ResetArgs,
    kind: ResetKind,
) -> anyhow::Result<()> {
    let bootstrap = &settings.bootstrap_servers;
    ops::check_broker(bootstrap)?;
    let target = args.target.target()?;
    let topologies = selected(settings, topics, serde, &args.apps)?;
    if args.execute {
        // Plan against a quiet group: what is printed is what is done.
        for t in &topologies {
            ops::require_inactive(
                bootstrap,
                &t.application_id,
                Duration::from_secs(args.wait_secs),
            )?;
        }
    }
    let mut plans = Vec::new();
    for t in &topologies {
        let plan = ops::plan_reset(bootstrap, t, &target, kind, &settings.state_dir)
            .with_context(|| format!("planning {}", t.application_id))?;
        println!("{plan}");
        plans.push(plan);
    }
    if !args.execute {
        println!("dry run: nothing changed (add --execute to carry the plan out)");
        return Ok(());
    }
    let pb = ProgressBar::new(plans.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} applications ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    for plan in &plans {
        pb.set_message(plan.application_id.clone());
        ops::execute_reset(bootstrap, plan, Duration::from_secs(args.wait_secs))
            .with_context(|| format!("executing the plan of {}", plan.application_id))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    for plan in &plans {
        println!("{}: done", plan.application_id);
    }
    match kind {
        ResetKind::Replay => println!(
            "start the application(s) now; follow the replay with `erp inspect lag --follow {}`",
            if args.apps.all {
                "--all".to_string()
            } else {
                format!("--application-id {}", plans[0].application_id)
            }
        ),
        ResetKind::Offsets => println!("the group resumes from the new offsets at its next start"),
    }
    Ok(())
}

fn verify(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    apps: &AppArgs,
    shadow_dir: Option<PathBuf>,
    wait: Duration,
) -> anyhow::Result<()> {
    let bootstrap = &settings.bootstrap_servers;
    ops::check_broker(bootstrap)?;
    ops::check_registry(&settings.schema_registry_url)?;
    let (shadow, temporary) = match shadow_dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("erp-verify-{}", std::process::id())),
            true,
        ),
    };
    let mut all_ok = true;
    for t in selected(settings, topics, serde, apps)? {
        if t.stores.is_empty() {
            println!("{}: stateless, nothing to verify", t.application_id);
            continue;
        }
        ops::require_inactive(bootstrap, &t.application_id, wait)?;
        // Offsets to reprocess (records plus transaction markers): the bar's length.
        let mut total = 0i64;
        for topic in &t.source_topics {
            total += ops::committed(bootstrap, &t.application_id, topic)?
                .values()
                .filter_map(|(o, _)| *o)
                .sum::<i64>();
        }
        let pb = ProgressBar::new(total.max(1) as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "rebuilding {msg} [{bar:30}] {pos}/~{len} ({per_sec}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let (mut base, mut last_label, mut last_n) = (0u64, String::new(), 0u64);
        let started = Instant::now();
        let (verdicts, stats) = ops::verify(
            bootstrap,
            &t,
            settings.partitions,
            &settings.state_dir,
            &shadow,
            &mut |label, n| {
                if label != last_label {
                    base += last_n;
                    last_label = label.to_string();
                }
                last_n = n;
                pb.set_message(label.to_string());
                pb.set_position(base + n);
            },
        )
        .with_context(|| format!("verifying {}", t.application_id))?;
        pb.finish_and_clear();
        println!(
            "{}: reprocessed {} input records in {:.1}s ({} poison; journal: {} skipped, {} unscripted)",
            t.application_id,
            stats.records,
            started.elapsed().as_secs_f64(),
            stats.poison,
            stats.journal_skipped,
            stats.journal_unscripted
        );
        let mut by_store: BTreeMap<&str, Vec<&ops::Verdict>> = BTreeMap::new();
        for v in &verdicts {
            by_store.entry(&v.store).or_default().push(v);
        }
        for (store, vs) in by_store {
            let replayed = ops::Digest::combine(&vs.iter().map(|v| v.replayed).collect::<Vec<_>>());
            let changelog =
                ops::Digest::combine(&vs.iter().map(|v| v.changelog).collect::<Vec<_>>());
            let locals: Vec<ops::Digest> = vs.iter().filter_map(|v| v.local).collect();
            let ok = vs.iter().all(|v| v.ok());
            all_ok &= ok;
            println!(
                "  {store:<14} replayed {replayed}  changelog {changelog}  {}",
                if ok { "MATCH" } else { "MISMATCH" }
            );
            if locals.len() == vs.len() {
                println!("  {:<14} local    {}", "", ops::Digest::combine(&locals));
            } else {
                println!(
                    "  {:<14} local    {} of {} partitions here",
                    "",
                    locals.len(),
                    vs.len()
                );
            }
            for v in vs {
                let c = &v.replay_vs_changelog;
                if !c.equal() {
                    println!(
                        "    partition {}: replay vs changelog: {} match, {} differ, {} only replayed, {} only in changelog; first: {}",
                        v.partition,
                        c.matching,
                        c.differing,
                        c.only_left,
                        c.only_right,
                        c.first_differences.join("; ")
                    );
                }
                if let Some(c) = v.local_vs_changelog.as_ref().filter(|c| !c.equal()) {
                    println!(
                        "    partition {}: local vs changelog: {} match, {} differ, {} only local, {} only in changelog; first: {}",
                        v.partition,
                        c.matching,
                        c.differing,
                        c.only_left,
                        c.only_right,
                        c.first_differences.join("; ")
                    );
                }
            }
        }
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&shadow);
    }
    if !all_ok {
        bail!("the rebuilt state differs from the committed state");
    }
    println!("verify: every store matches");
    Ok(())
}

fn inspect(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    what: Inspect,
) -> anyhow::Result<()> {
    let bootstrap = &settings.bootstrap_servers;
    match what {
        Inspect::Apps => {
            ops::check_broker(bootstrap)?;
            let all =
                Context::all_topologies(&Context::ALL, topics, serde, SagaSettings::from(settings));
            for t in all {
                let g = ops::describe_group(bootstrap, &t.application_id)?;
                println!(
                    "{} (group {}, {} member(s))",
                    t.application_id,
                    g.state,
                    g.members.len()
                );
                for m in &g.members {
                    println!("  member   {} ({})", m.client_id, m.host);
                }
                println!("  inputs   {}", t.source_topics.join(", "));
                println!("  outputs  {}", t.sink_topics.join(", "));
                if !t.stores.is_empty() {
                    println!("  stores   {}", t.stores.join(", "));
                    println!("  internal {}", t.internal_topics().join(", "));
                }
                if t.journaled() {
                    println!("  journal  {}", t.journal_topic());
                }
                for g in &t.global_stores {
                    println!("  global   {} (from {})", g.name, g.topic);
                }
            }
        }
        Inspect::Stores { application_id } => {
            let stores = ops::local_stores(&settings.state_dir, application_id.as_deref());
            if stores.is_empty() {
                println!("no stores under {}", settings.state_dir.display());
                return Ok(());
            }
            let broker = ops::check_broker(bootstrap).is_ok();
            println!(
                "{:<22} {:<16} {:>4} {:>8} {:>10} {:>11} {:>11}  DIGEST",
                "APPLICATION", "STORE", "PART", "KEYS", "SIZE", "CHECKPOINT", "CHANGELOG"
            );
            let probe: BaseConsumer = erp_connectors::kafka::client()
                .set("bootstrap.servers", bootstrap)
                .create()?;
            for s in stores {
                let sum = ops::summarize(&s)?;
                let end = if broker {
                    probe
                        .fetch_watermarks(
                            &erp_state_stores::changelog_topic(&s.application_id, &s.store),
                            s.partition,
                            Duration::from_secs(5),
                        )
                        .map(|(_, h)| h.to_string())
                        .unwrap_or_else(|_| "-".into())
                } else {
                    "?".into()
                };
                println!(
                    "{:<22} {:<16} {:>4} {:>8} {:>9.1}K {:>11} {:>11}  {:016x}",
                    s.application_id,
                    s.store,
                    s.partition,
                    sum.keys,
                    sum.bytes as f64 / 1024.0,
                    sum.checkpoint.map_or("-".into(), |c| c.to_string()),
                    end,
                    sum.digest.hash
                );
            }
        }
        Inspect::Get {
            application_id,
            store,
            key,
        } => {
            let found = ops::get_key(&settings.state_dir, &application_id, &store, key.as_bytes())?;
            if found.is_empty() {
                bail!("{key:?} is not in any local partition of {application_id}/{store}");
            }
            for (p, v) in found {
                let json: serde_json::Value = serde_json::from_slice(&v).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&v).into())
                });
                println!("{application_id}/{store} partition {p}:");
                println!("{}", serde_json::to_string_pretty(&json)?);
            }
        }
        Inspect::Lag {
            apps,
            follow,
            timeout_secs,
        } => {
            ops::check_broker(bootstrap)?;
            let topologies = selected(settings, topics, serde, &apps)?;
            let total = |print: bool| -> anyhow::Result<i64> {
                let mut sum = 0;
                for t in &topologies {
                    let rows = ops::lag(bootstrap, t)?;
                    if print {
                        let g = ops::describe_group(bootstrap, &t.application_id)?;
                        println!(
                            "{} (group {}, {} member(s))",
                            t.application_id,
                            g.state,
                            g.members.len()
                        );
                        println!(
                            "  {:<40} {:>4} {:>9} {:>9} {:>7}  METADATA",
                            "TOPIC", "PART", "COMMITTED", "END", "LAG"
                        );
                    }
                    for r in rows {
                        sum += r.lag();
                        if print {
                            println!(
                                "  {:<40} {:>4} {:>9} {:>9} {:>7}  {}",
                                r.topic,
                                r.partition,
                                r.committed.map_or("-".into(), |c| c.to_string()),
                                r.end,
                                r.lag(),
                                r.metadata
                            );
                        }
                    }
                }
                Ok(sum)
            };
            let first = total(!follow)?;
            if follow {
                let pb = ProgressBar::new(first.max(1) as u64);
                pb.set_style(
                    ProgressStyle::with_template(
                        "caught up {pos}/{len} records [{bar:40}] ({per_sec}, eta {eta}) {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                let deadline = Instant::now() + Duration::from_secs(timeout_secs);
                loop {
                    let now = total(false)?;
                    pb.set_length(first.max(now).max(1) as u64);
                    pb.set_position((first - now).max(0) as u64);
                    pb.set_message(format!("lag {now}"));
                    if now == 0 {
                        pb.finish();
                        println!("caught up");
                        break;
                    }
                    if Instant::now() > deadline {
                        pb.abandon();
                        bail!("still {now} records behind after {timeout_secs} s");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
    Ok(())
}

/// Reads `topics` (read_committed, every partition) from the start to the end.
fn raw_consume(bootstrap: &str, topics: &[String]) -> anyhow::Result<(u64, u64)> {
    let consumer = ops::reader(bootstrap)?;
    let mut tpl = TopicPartitionList::new();
    let mut open = HashSet::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10))?;
        for p in md.topics().iter().flat_map(|m| m.partitions()) {
            let (low, high) = consumer.fetch_watermarks(t, p.id(), Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(t, p.id(), Offset::Beginning)?;
                open.insert((t.clone(), p.id()));
            }
        }
    }
    consumer.assign(&tpl)?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Ok(m)) => {
                records += 1;
                bytes += m.payload().map_or(0, <[u8]>::len) as u64;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                // PartitionEOF names the partition only: close the first open topic that
                // has it and whose position reached its end.
                let position = consumer.position()?;
                open.retain(|(t, q)| {
                    *q != p
                        || !position
                            .find_partition(t, *q)
                            .is_some_and(|e| match e.offset() {
                                Offset::Offset(o) => consumer
                                    .fetch_watermarks(t, *q, Duration::from_secs(10))
                                    .is_ok_and(|(_, h)| o >= h),
                                _ => false,
                            })
                });
            }
            Some(Err(e)) => bail!("consuming: {e}"),
        }
    }
    Ok((records, bytes))
}
