use std::path::PathBuf;
use std::time::Duration;

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
    /// Commit early once a transaction holds this many input records.
    pub max_records_per_transaction: usize,
    /// Partitions of every topic this engine creates.
    pub partitions: i32,
    pub replication_factor: i32,
    pub transaction_timeout: Duration,
    pub session_timeout: Duration,
}

impl EngineConfig {
    pub fn new(bootstrap_servers: &str, instance_id: &str, state_dir: PathBuf) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.to_string(),
            instance_id: instance_id.to_string(),
            state_dir,
            commit_interval: Duration::from_millis(100),
            max_records_per_transaction: 2000,
            partitions: 4,
            replication_factor: 1,
            transaction_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
        }
    }
}
