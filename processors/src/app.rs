//! Wiring: topics, schemas, engines and the query API of one process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use erp_query_api::AppState;
use erp_schemas::AvroSerde;
use erp_schemas::topics::Topics;
use erp_state_stores::{Readiness, RocksDbOptions, StoreMetrics, StoreRegistry};

use crate::config::Settings;
use crate::engine::{
    EngineConfig, EngineError, EngineMetrics, Replication, StreamThread, TopicSpec, Topology,
    ensure_topics,
};
use crate::{customer, inventory, order, payment, shipping};

/// The bounded contexts this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Context {
    Order,
    Inventory,
    Payment,
    Shipping,
    Customer,
}

/// Business settings the topologies need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaSettings {
    pub reservation_ttl: Duration,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            reservation_ttl: Duration::from_millis(Settings::default().reservation_ttl_ms),
        }
    }
}

impl From<&Settings> for SagaSettings {
    fn from(s: &Settings) -> Self {
        Self {
            reservation_ttl: Duration::from_millis(s.reservation_ttl_ms),
        }
    }
}

impl Context {
    pub const ALL: [Context; 5] = [
        Context::Order,
        Context::Inventory,
        Context::Payment,
        Context::Shipping,
        Context::Customer,
    ];

    /// The context's topologies: one processor each, plus the customer context's
    /// loyalty repartition step.
    pub fn topologies(
        self,
        topics: &Topics,
        serde: Arc<AvroSerde>,
        saga: SagaSettings,
    ) -> Vec<Topology> {
        match self {
            Context::Order => vec![order::processor::topology(topics, serde)],
            Context::Inventory => vec![inventory::processor::topology(
                topics,
                serde,
                saga.reservation_ttl,
            )],
            Context::Payment => vec![payment::processor::topology(topics, serde)],
            Context::Shipping => vec![shipping::processor::topology(topics, serde)],
            Context::Customer => vec![
                customer::processor::topology(topics, serde.clone()),
                customer::processor::loyalty_topology(topics, serde),
            ],
        }
    }

    /// The topologies of several contexts.
    pub fn all_topologies(
        contexts: &[Context],
        topics: &Topics,
        serde: Arc<AvroSerde>,
        saga: SagaSettings,
    ) -> Vec<Topology> {
        contexts
            .iter()
            .flat_map(|c| c.topologies(topics, serde.clone(), saga))
            .collect()
    }
}

/// Every topic the given topologies need, internal ones included.
pub fn topic_specs(
    topologies: &[Topology],
    partitions: i32,
    replication: Replication,
) -> Vec<TopicSpec> {
    let mut specs: Vec<TopicSpec> = Vec::new();
    let mut add = |spec: TopicSpec| {
        if !specs.iter().any(|s| s.name == spec.name) {
            specs.push(spec);
        }
    };
    // Tables read as global stores are compacted, whoever writes them.
    for t in topologies {
        for g in &t.global_stores {
            add(TopicSpec::new(g.topic.clone(), partitions, replication).compacted());
        }
    }
    for t in topologies {
        for name in t.source_topics.iter().chain(&t.sink_topics) {
            add(TopicSpec::new(name.clone(), partitions, replication));
        }
        for name in t.changelog_topics() {
            add(TopicSpec::new(name, partitions, replication).compacted());
        }
        add(TopicSpec::new(t.dlq_topic(), partitions, replication));
        if t.journaled() {
            add(TopicSpec::new(t.journal_topic(), partitions, replication));
        }
    }
    specs
}

/// Creates topics and registers every schema. Blocking HTTP runs off the async workers.
pub async fn prepare(
    settings: &Settings,
    topics: &Topics,
    topologies: &[Topology],
    serde: Arc<AvroSerde>,
) -> anyhow::Result<()> {
    let replication = settings.replication();
    let mut specs = topic_specs(topologies, settings.partitions, replication);
    for name in topics.data_topics() {
        if let Some(spec) = specs.iter_mut().find(|s| s.name == name) {
            // The customer table is compacted even where no topology reads it.
            if name == topics.customers() {
                *spec = TopicSpec::new(name, settings.partitions, replication).compacted();
            }
        } else if name == topics.customers() {
            specs.push(TopicSpec::new(name, settings.partitions, replication).compacted());
        } else {
            specs.push(TopicSpec::new(name, settings.partitions, replication));
        }
    }
    specs.push(TopicSpec::new(
        topics.analytics_sink_dlq(),
        settings.partitions,
        replication,
    ));
    ensure_topics(&settings.bootstrap_servers, &specs).await?;
    let subjects = topics.subjects();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (topic, kind) in subjects {
            serde.register(&topic, kind)?;
        }
        Ok(())
    })
    .await??;
    Ok(())
}

/// The query API's command bus: the same publisher clients use (idempotent, acks=all),
/// flushed per command so a 202 means the broker has the command.
pub struct KafkaCommandBus(pub erp_connectors::CommandPublisher);

impl erp_query_api::CommandBus for KafkaCommandBus {
    fn send(
        &self,
        command: erp_query_api::Command,
        trace: Option<erp_schemas::traceparent::TraceParent>,
    ) -> Result<(), String> {
        use erp_connectors::AnyCommand;
        use erp_query_api::Command as C;
        let command = match &command {
            C::Order(c) => AnyCommand::Order(c),
            C::Customer(c) => AnyCommand::Customer(c),
            C::Inventory(c) => AnyCommand::Inventory(c),
            C::Shipping(c) => AnyCommand::Shipping(c),
        };
        let traceparent = trace.map(|t| t.header());
        let extra: Vec<(&str, &str)> = traceparent
            .iter()
            .map(|t| (crate::engine::trace::TRACEPARENT, t.as_str()))
            .collect();
        self.0
            .command(command, &extra)
            .and_then(|()| self.0.flush())
            .map_err(|e| e.to_string())
    }
}

/// The engines of one process and what they share with the query API.
pub struct Engines {
    pub state: AppState,
    pub shutdown: Arc<AtomicBool>,
    pub handles: Vec<(String, JoinHandle<Result<(), EngineError>>)>,
}

impl Engines {
    pub fn start(settings: &Settings, topologies: Vec<Topology>) -> anyhow::Result<Self> {
        let metrics = Arc::new(prometheus::Registry::new());
        let engine_metrics = EngineMetrics::new(&metrics)?;
        let store_metrics = StoreMetrics::new(&metrics)?;
        let registry = StoreRegistry::new();
        let readiness = Readiness::new();
        let shutdown = Arc::new(AtomicBool::new(false));
        let mut config = EngineConfig::new(
            &settings.bootstrap_servers,
            &settings.instance_id,
            settings.state_dir.clone(),
        );
        config.partitions = settings.partitions;
        config.commit_interval = Duration::from_millis(settings.commit_interval_ms);
        config.commit_when_idle = settings.commit_when_idle;
        config.rocksdb = RocksDbOptions::with_memory_budget(settings.store_memory_mb << 20);
        config.poison_policy = settings.poison_policy.parse().map_err(anyhow::Error::msg)?;
        config.allow_topology_change = settings.allow_topology_change;
        config.standby_replicas = settings.standby_replicas;
        config.advertised_addr = Some(settings.advertised());
        // process_resident_memory_bytes & co., for the memory budget's effect on RSS.
        metrics.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let mut handles = Vec::new();
        for topology in topologies {
            // Registered before the thread starts so readiness is false until restored.
            readiness.set(&topology.application_id, false);
            let name = topology.application_id.clone();
            let thread = StreamThread {
                config: config.clone(),
                topology,
                registry: registry.clone(),
                readiness: readiness.clone(),
                metrics: engine_metrics.clone(),
                store_metrics: store_metrics.clone(),
                shutdown: shutdown.clone(),
            };
            handles.push((name, thread.spawn()));
        }
        Ok(Self {
            state: AppState {
                stores: registry,
                readiness,
                metrics,
                commands: None,
                locator: None,
                gateway: erp_query_api::Gateway::default(),
            },
            shutdown,
            handles,
        })
    }

    /// Stops every engine (committing open work) and reports the first failure.
    pub fn stop(self) -> anyhow::Result<()> {
        self.shutdown.store(true, Ordering::Relaxed);
        let mut first_error = None;
        for (name, h) in self.handles {
            match h.join() {
                Ok(Ok(())) => tracing::info!(application_id = %name, "engine stopped"),
                Ok(Err(e)) => {
                    first_error.get_or_insert_with(|| anyhow::anyhow!("{name}: {e}"));
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| anyhow::anyhow!("{name}: thread panicked"));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Feeds the gRPC service's [`Outcomes`](erp_query_api::grpc::Outcomes): a
/// read_committed consumer of `inventory-events` from the current end of every partition
/// (positions fixed before this returns, so no answer to a later command is missed),
/// handing each event to the command that caused it.
pub fn watch_inventory_outcomes(
    settings: &Settings,
    topics: &Topics,
    serde: Arc<AvroSerde>,
    outcomes: Arc<erp_query_api::grpc::Outcomes>,
    shutdown: Arc<AtomicBool>,
) -> anyhow::Result<JoinHandle<()>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let topic = topics.inventory_events();
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set(
            "group.id",
            format!("{}-grpc-outcomes", settings.instance_id),
        )
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let timeout = Duration::from_secs(10);
    let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
    let partitions = metadata
        .topics()
        .first()
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        // Retried: right after the topics are created the broker may still answer
        // "not leader" for a moment (seen as a failed demo start).
        let (_, high) = crate::engine::watermarks(&consumer, &topic, p)?;
        assignment.add_partition_offset(&topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&assignment)?;
    Ok(std::thread::Builder::new()
        .name("grpc-outcomes".into())
        .spawn(move || {
            while !shutdown.load(Ordering::Relaxed) {
                let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                    continue;
                };
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "inventory outcome consumer");
                        continue;
                    }
                };
                let Some(bytes) = message.payload() else {
                    continue;
                };
                match serde.decode::<erp_schemas::wire::InventoryEvent>(
                    erp_schemas::SchemaKind::InventoryEvent,
                    bytes,
                ) {
                    Ok(event) => {
                        if let Some((cause, answer)) =
                            erp_query_api::grpc::Outcomes::of_event(&event)
                        {
                            outcomes.answered(&cause, answer);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "undecodable inventory event skipped"),
                }
            }
        })?)
}
