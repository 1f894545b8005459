use std::path::PathBuf;
use std::time::Duration;

use erp_state_stores::RocksDbOptions;

/// What to do with a record that cannot be decoded or processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonPolicy {
    /// Write it to `<application id>-dlq` with the reason, in the transaction; go on.
    DeadLetter,
    /// Log and count it, commit past it.
    Skip,
    /// Stop the thread (and the process): an operator decides.
    Fail,
}

impl std::str::FromStr for PoisonPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dlq" => Ok(Self::DeadLetter),
            "skip" => Ok(Self::Skip),
            "fail" => Ok(Self::Fail),
            other => Err(format!(
                "poison policy must be dlq, skip or fail, got {other:?}"
            )),
        }
    }
}

/// Engine settings of one process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub bootstrap_servers: String,
    /// Stable per process: with the application id it forms the transactional id, so a
    /// restarted instance fences its own zombie.
    pub instance_id: String,
    pub state_dir: PathBuf,
    /// Upper bound on how long a transaction stays open (Kafka Streams' EOS default: 100 ms).
    pub commit_interval: Duration,
    /// Commit as soon as a poll finds nothing waiting (adaptive: each commit then
    /// carries what arrived during the previous one).
    pub commit_when_idle: bool,
    /// Commit early once a transaction holds this many input records.
    pub max_records_per_transaction: usize,
    /// Partitions of every topic this engine creates.
    pub partitions: i32,
    pub transaction_timeout: Duration,
    pub session_timeout: Duration,
    pub poison_policy: PoisonPolicy,
    /// One block cache and write-buffer budget for every store of the process.
    pub rocksdb: RocksDbOptions,
    /// Start even if the stores differ from what this application id had before.
    pub allow_topology_change: bool,
    /// Warm replicas per owned partition kept of other partitions' stores (0: none).
    pub standby_replicas: usize,
    /// The query API's address as other instances reach it; published in the consumer's
    /// client id so interactive queries can find a partition's owner.
    pub advertised_addr: Option<String>,
}

impl EngineConfig {
    pub fn new(bootstrap_servers: &str, instance_id: &str, state_dir: PathBuf) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_string(),
            instance_id: instance_id.to_string(),
            state_dir,
            commit_interval: Duration::from_millis(100),
            commit_when_idle: true,
            max_records_per_transaction: 2000,
            partitions: 4,
            transaction_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            poison_policy: PoisonPolicy::DeadLetter,
            rocksdb: RocksDbOptions::default(),
            allow_topology_change: false,
            standby_replicas: 0,
            advertised_addr: None,
        }
    }
}
