//! Global stores, like Kafka Streams' GlobalKTable: every instance holds the whole
//! table, restored from its source topic (which doubles as its changelog) before the
//! stream thread processes anything, then kept current by a tailing thread. Processors
//! read them; only the source topic writes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use erp_state_stores::{RocksDbBackend, StoreBackend, StoreError, StoreRegistry};

use super::EngineError;
use super::config::EngineConfig;
use super::metrics::EngineMetrics;
use super::restore::{RestoreTarget, poll_burst, restore};

/// A global store fed by `topic`: keys and values are stored as they are on the topic
/// (a null value deletes the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalStoreSpec {
    pub name: String,
    pub topic: String,
}

/// Read-only handles of the global stores, by name (one backend per source partition).
#[derive(Clone, Default)]
pub struct GlobalStores {
    stores: BTreeMap<String, Vec<Arc<dyn StoreBackend>>>,
}

impl GlobalStores {
    pub fn get(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(parts) = self.stores.get(store) else {
            panic!("global store {store} is not declared by the topology");
        };
        for backend in parts {
            if let Some(v) = backend.get(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    pub(crate) fn insert(&mut self, name: &str, backends: Vec<Arc<dyn StoreBackend>>) {
        self.stores.insert(name.to_string(), backends);
    }
}

/// Opens and restores every global store, then starts one thread tailing their topics.
pub(crate) fn start_global_stores(
    config: &EngineConfig,
    application_id: &str,
    specs: &[GlobalStoreSpec],
    registry: &StoreRegistry,
    metrics: &EngineMetrics,
    shutdown: Arc<AtomicBool>,
) -> Result<(GlobalStores, Option<JoinHandle<()>>), EngineError> {
    let mut globals = GlobalStores::default();
    if specs.is_empty() {
        return Ok((globals, None));
    }
    let meta: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .create()
        .map_err(|e| EngineError::Kafka(e.to_string()))?;
    let mut targets = Vec::new();
    for spec in specs {
        let md = meta
            .fetch_metadata(Some(&spec.topic), Duration::from_secs(30))
            .map_err(|e| EngineError::Kafka(format!("metadata of {}: {e}", spec.topic)))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(EngineError::Config(format!(
                "global store {}: topic {} does not exist",
                spec.name, spec.topic
            )));
        }
        let mut backends: Vec<Arc<dyn StoreBackend>> = Vec::new();
        for p in partitions {
            let path = config
                .state_dir
                .join(application_id)
                .join("global")
                .join(&spec.name)
                .join(p.to_string());
            let backend: Arc<dyn StoreBackend> =
                Arc::new(RocksDbBackend::open(&spec.name, &path, &config.rocksdb)?);
            registry.register(&spec.name, p, backend.clone());
            targets.push(RestoreTarget {
                store: spec.name.clone(),
                topic: spec.topic.clone(),
                partition: p,
                backend: backend.clone(),
            });
            backends.push(backend);
        }
        globals.insert(&spec.name, backends);
    }
    let restored = restore(
        &config.bootstrap_servers,
        &format!("{application_id}-global"),
        &targets,
        metrics,
    )?;
    tracing::info!(application_id, ?restored, "global stores restored");
    let bootstrap = config.bootstrap_servers.clone();
    let handle = std::thread::Builder::new()
        .name(format!("global-{application_id}"))
        .spawn(move || {
            if let Err(e) = tail(&bootstrap, &targets, &shutdown) {
                tracing::error!(error = %e, "global store thread stopped; stopping the process");
                shutdown.store(true, Ordering::Relaxed);
            }
        })
        .expect("spawn global store thread");
    Ok((globals, Some(handle)))
}

pub(crate) const GLOBAL_GROUP: &str = "erp-global-unused";

/// Applies new records of the global topics as they are committed.
fn tail(
    bootstrap: &str,
    targets: &[RestoreTarget],
    shutdown: &AtomicBool,
) -> Result<(), EngineError> {
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GLOBAL_GROUP)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| EngineError::Kafka(format!("global consumer: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    let mut by_tp: HashMap<(String, i32), &RestoreTarget> = HashMap::new();
    for t in targets {
        let from = t
            .backend
            .checkpoint()?
            .map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(&t.topic, t.partition, from)
            .map_err(|e| EngineError::Kafka(e.to_string()))?;
        by_tp.insert((t.topic.clone(), t.partition), t);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| EngineError::Kafka(e.to_string()))?;
    while !shutdown.load(Ordering::Relaxed) {
        let batches = poll_burst(&consumer)?;
        for (tp, (writes, checkpoint)) in batches {
            if let Some(t) = by_tp.get(&tp) {
                t.backend.write_batch(&writes, Some(checkpoint))?;
            }
        }
    }
    Ok(())
}
