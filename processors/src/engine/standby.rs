//! Standby replicas: warm copies of stores of partitions this instance does not own,
//! kept by tailing their changelogs into the same state directory an active task would
//! use, so a failover restores only the short tail since the last standby write.
//!
//! Placement: librdkafka offers no custom assignor to place standby tasks the way Kafka
//! Streams does, so placement is derived from what an instance knows, its own
//! assignment. With `n` replicas an instance shadows the `n × owned` partitions that
//! follow its own ones on the partition ring. Under the range assignor (contiguous
//! ranges) every instance thereby shadows its neighbour's range: each partition gets
//! about `n` standbys, spread over the other instances.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use erp_state_stores::{RocksDbBackend, StoreBackend};

use super::EngineError;
use super::config::EngineConfig;
use super::processor::Topology;
use super::restore::poll_burst;

/// Shared between the stream thread (which owns partitions) and the standby thread.
#[derive(Default)]
pub(crate) struct Standbys {
    owned: BTreeSet<i32>,
    /// Warm replicas by (partition, store).
    replicas: BTreeMap<(i32, String), Arc<dyn StoreBackend>>,
}

pub(crate) type SharedStandbys = Arc<Mutex<Standbys>>;

impl Standbys {
    /// The stream thread takes `partitions` over: their replicas are closed so the
    /// active task can open the same RocksDB directories (already nearly current).
    pub(crate) fn take_over(&mut self, partitions: &[i32]) {
        self.owned.extend(partitions.iter().copied());
        self.replicas.retain(|(p, _), _| !partitions.contains(p));
    }

    pub(crate) fn release(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.owned.remove(p);
        }
    }
}

/// The partitions to shadow: the `replicas × owned` ones after the owned ones, ring-wise.
pub(crate) fn placement(owned: &BTreeSet<i32>, partitions: i32, replicas: usize) -> BTreeSet<i32> {
    let want =
        (owned.len() * replicas).min(partitions as usize - owned.len().min(partitions as usize));
    let Some(&last) = owned.iter().max() else {
        return BTreeSet::new();
    };
    (1..partitions)
        .map(|i| (last + i) % partitions)
        .filter(|p| !owned.contains(p))
        .take(want)
        .collect()
}

pub(crate) fn start_standbys(
    config: &EngineConfig,
    topology: &Topology,
    shared: SharedStandbys,
    shutdown: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    if config.standby_replicas == 0 || topology.stores.is_empty() {
        return None;
    }
    let config = config.clone();
    let topology = topology.clone();
    let handle = std::thread::Builder::new()
        .name(format!("standby-{}", topology.application_id))
        .spawn(move || {
            if let Err(e) = run(&config, &topology, &shared, &shutdown) {
                // Standbys are an optimisation: losing them costs restore time, not data.
                tracing::error!(error = %e, "standby thread stopped");
            }
        })
        .expect("spawn standby thread");
    Some(handle)
}

pub(crate) const STANDBY_GROUP: &str = "erp-standby-unused";

fn run(
    config: &EngineConfig,
    topology: &Topology,
    shared: &SharedStandbys,
    shutdown: &AtomicBool,
) -> Result<(), EngineError> {
    let app = &topology.application_id;
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", &config.bootstrap_servers)
        .set("group.id", STANDBY_GROUP)
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .map_err(|e| EngineError::Kafka(format!("standby consumer: {e}")))?;
    let mut assigned: BTreeSet<i32> = BTreeSet::new();
    while !shutdown.load(Ordering::Relaxed) {
        // Reconcile what we shadow with the current ownership.
        let desired = {
            let mut s = shared.lock().expect("poisoned");
            let desired = placement(&s.owned, config.partitions, config.standby_replicas);
            s.replicas.retain(|(p, _), _| desired.contains(p));
            for &p in &desired {
                for store in &topology.stores {
                    if s.replicas.contains_key(&(p, store.clone())) {
                        continue;
                    }
                    let path = config.state_dir.join(app).join(p.to_string()).join(store);
                    match RocksDbBackend::open(store, &path, &config.rocksdb) {
                        Ok(b) => {
                            s.replicas.insert((p, store.clone()), Arc::new(b));
                        }
                        // Still held by a task being closed: try again next round.
                        Err(e) => {
                            tracing::debug!(error = %e, partition = p, "standby open deferred")
                        }
                    }
                }
            }
            desired
        };
        if desired != assigned {
            let mut tpl = TopicPartitionList::new();
            let s = shared.lock().expect("poisoned");
            for ((p, store), backend) in &s.replicas {
                let from = backend
                    .checkpoint()?
                    .map_or(Offset::Beginning, Offset::Offset);
                let topic = erp_state_stores::changelog_topic(app, store);
                tpl.add_partition_offset(&topic, *p, from)
                    .map_err(|e| EngineError::Kafka(e.to_string()))?;
            }
            drop(s);
            consumer
                .assign(&tpl)
                .map_err(|e| EngineError::Kafka(format!("standby assign: {e}")))?;
            tracing::info!(application_id = %app, partitions = ?desired, "standby replicas");
            assigned = desired;
        }
        let batches = poll_burst(&consumer)?;
        let s = shared.lock().expect("poisoned");
        for ((topic, p), (writes, checkpoint)) in batches {
            let store = topic
                .strip_prefix(&format!("{app}-"))
                .and_then(|t| t.strip_suffix("-changelog"))
                .unwrap_or_default()
                .to_string();
            // A replica taken over meanwhile is the active task's now: leave it alone.
            if let Some(backend) = s.replicas.get(&(p, store)) {
                backend.write_batch(&writes, Some(checkpoint))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_instance_shadows_the_range_after_its_own() {
        let owned: BTreeSet<i32> = [2, 3].into();
        assert_eq!(placement(&owned, 6, 1), [4, 5].into());
        assert_eq!(placement(&owned, 6, 2), [4, 5, 0, 1].into());
        assert_eq!(placement(&[4, 5].into(), 6, 1), [0, 1].into());
        assert_eq!(
            placement(&owned, 6, 9),
            [0, 1, 4, 5].into(),
            "never more than the others"
        );
        assert_eq!(placement(&BTreeSet::new(), 6, 1), BTreeSet::new());
    }
}
