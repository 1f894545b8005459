//! Harness for tests against the real local stack (`scripts/stack.sh up`): a broker,
//! the registry, RocksDB. Each test gets its own topic prefix, so tests share one broker
//! without seeing each other's records.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;

use erp_connectors::{Carrier, CommandPublisher};
use erp_processors::app::{Context, Engines, SagaSettings, prepare};
use erp_processors::audit::{AuditReport, EndIsNotAnError, audit_until_settled};
use erp_processors::config::Settings;
use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

pub mod otlp;
pub mod process;

pub fn bootstrap() -> String {
    std::env::var("ERP_BOOTSTRAP_SERVERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn registry_url() -> String {
    std::env::var("ERP_SCHEMA_REGISTRY_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081/apis/ccompat/v7".into())
}

/// Fails loudly when the stack is not up: these tests never pass without it.
pub fn require_stack() {
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap())
        .create()
        .expect("client");
    if let Err(e) = consumer.fetch_metadata(None, Duration::from_secs(10)) {
        panic!(
            "Kafka is not reachable at {} ({e}); start it with scripts/stack.sh up",
            bootstrap()
        );
    }
    let url = format!("{}/subjects", registry_url());
    match reqwest::blocking::get(&url) {
        Ok(r) if r.status().is_success() => {}
        other => panic!(
            "schema registry is not reachable at {url} ({other:?}); start it with scripts/stack.sh up"
        ),
    }
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what`.
pub fn eventually<T>(timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct Read<T> {
    pub key: String,
    pub value: T,
    pub partition: i32,
    pub offset: i64,
    pub headers: HashMap<String, String>,
}

pub struct TestApp {
    pub topics: Topics,
    pub settings: Settings,
    pub serde: Arc<AvroSerde>,
    pub saga: SagaSettings,
    pub state_dir: tempfile::TempDir,
}

/// The customer most tests order for (registered by [`TestApp::register_customer`]).
pub const CUSTOMER: &str = "0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33";

impl TestApp {
    pub fn new(name: &str) -> Self {
        Self::with_partitions(name, 3)
    }

    pub fn with_partitions(name: &str, partitions: i32) -> Self {
        Self::with_saga(name, partitions, SagaSettings::default())
    }

    pub fn with_saga(name: &str, partitions: i32, saga: SagaSettings) -> Self {
        require_stack();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .with_test_writer()
            .try_init();
        let prefix = format!(
            "t-{name}-{}-",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let state_dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            bootstrap_servers: bootstrap(),
            schema_registry_url: registry_url(),
            state_dir: state_dir.path().to_path_buf(),
            partitions,
            topic_prefix: prefix.clone(),
            reservation_ttl_ms: saga.reservation_ttl.as_millis() as u64,
            ..Settings::default()
        };
        let app = Self {
            topics: Topics::new(prefix),
            serde: Arc::new(AvroSerde::new(&settings.schema_registry_url)),
            settings,
            saga,
            state_dir,
        };
        let topologies =
            Context::all_topologies(&Context::ALL, &app.topics, app.serde.clone(), app.saga);
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(prepare(
                &app.settings,
                &app.topics,
                &topologies,
                app.serde.clone(),
            ))
            .expect("topics and schemas");
        app
    }

    pub fn state_path(&self) -> PathBuf {
        self.state_dir.path().to_path_buf()
    }

    /// Starts every processor in this process.
    pub fn start(&self) -> Engines {
        self.start_contexts(&Context::ALL)
    }

    /// Starts some processors (the others' commands wait in their topics).
    pub fn start_contexts(&self, contexts: &[Context]) -> Engines {
        let topologies =
            Context::all_topologies(contexts, &self.topics, self.serde.clone(), self.saga);
        let engines = Engines::start(&self.settings, topologies).expect("engines");
        let readiness = engines.state.readiness.clone();
        eventually(Duration::from_secs(60), "engines ready", || {
            readiness.is_ready().then_some(())
        });
        engines
    }

    /// Committed records in every changelog of the saga's stores: what a full restore
    /// of this application reads.
    pub fn changelog_records(&self) -> usize {
        Context::all_topologies(&Context::ALL, &self.topics, self.serde.clone(), self.saga)
            .iter()
            .flat_map(|t| t.changelog_topics())
            .map(|t| read_committed(&t).len())
            .sum()
    }

    /// A RegisterCustomer command for `id`.
    pub fn registration(id: &str) -> wire::CustomerCommand {
        let mut c = wire::CustomerCommand::empty(
            uuid::Uuid::new_v4().to_string(),
            id.to_string(),
            1_767_225_600_000,
        );
        c.register_customer = Some(wire::RegisterCustomer {
            name: "Ann Example".into(),
            email: "ann@example.com".into(),
            phone: Some("+14155550100".into()),
            address: wire::Address {
                street: "1 Main St".into(),
                city: "Springfield".into(),
                postal_code: "10001".into(),
                country: "US".into(),
            },
        });
        c
    }

    /// Registers `id` and waits until the in-process order processor's customer table
    /// (global store) has it, so orders for it are priced rather than refused.
    pub fn register_customer(&self, engines: &Engines, id: &str) {
        let p = self.publisher();
        p.customer(&Self::registration(id)).unwrap();
        p.flush().unwrap();
        let stores = engines.state.stores.clone();
        eventually(
            Duration::from_secs(30),
            "the customer in the order processor's table",
            || {
                stores
                    .get("customer-table", id.as_bytes())
                    .ok()
                    .flatten()
                    .map(|_| ())
            },
        );
    }

    /// A simulated carrier that dispatches and delivers every shipment of this app.
    pub fn carrier(&self) -> Carrier {
        Carrier::start(
            &self.settings.bootstrap_servers,
            &format!("{}carrier", self.topics.prefix),
            self.serde.clone(),
            self.publisher(),
        )
        .expect("carrier")
    }

    /// The saga's invariants on the committed topics, once everything settled.
    pub fn audit(&self) -> AuditReport {
        audit_until_settled(
            &self.settings.bootstrap_servers,
            &self.serde,
            &self.topics,
            Duration::from_secs(120),
        )
        .expect("audit")
    }

    pub fn publisher(&self) -> CommandPublisher {
        CommandPublisher::new(
            &self.settings.bootstrap_servers,
            self.serde.clone(),
            self.topics.clone(),
        )
        .expect("publisher")
    }

    /// Offsets held by `topic` over all partitions (high − low); 0 once it is deleted.
    pub fn topic_span(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = erp_connectors::kafka::client()
            .set("bootstrap.servers", bootstrap())
            .create()
            .expect("consumer");
        let Ok(md) = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) else {
            return 0;
        };
        md.topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions())
            .filter_map(|p| {
                consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .ok()
            })
            .map(|(low, high)| high - low)
            .sum()
    }

    /// Every committed record of `topic` (read_committed, from the beginning to the end).
    pub fn read_raw(&self, topic: &str) -> Vec<Read<Vec<u8>>> {
        read_committed(topic)
    }

    /// Every committed record of `topic`, decoded as `kind`.
    pub fn read<T: DeserializeOwned>(&self, topic: &str, kind: SchemaKind) -> Vec<Read<T>> {
        read_committed(topic)
            .into_iter()
            .map(|r| Read {
                value: self
                    .serde
                    .decode(kind, &r.value)
                    .unwrap_or_else(|e| panic!("{topic}@{}: {e}", r.offset)),
                key: r.key,
                partition: r.partition,
                offset: r.offset,
                headers: r.headers,
            })
            .collect()
    }
}

pub fn read_committed(topic: &str) -> Vec<Read<Vec<u8>>> {
    let consumer: BaseConsumer<EndIsNotAnError> = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap())
        .set("group.id", "erp-tests-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(EndIsNotAnError)
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut pending = std::collections::HashSet::new();
    for p in md.topics().iter().flat_map(|t| t.partitions()) {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("tpl");
        pending.insert(p.id());
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic} did not reach its end"
        );
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => out.push(Read {
                key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                value: m.payload().unwrap_or_default().to_vec(),
                partition: m.partition(),
                offset: m.offset(),
                headers: m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
        }
    }
    out
}
