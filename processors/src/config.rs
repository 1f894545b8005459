//! Settings: defaults ← TOML file (`--config` / `ERP_CONFIG`) ← environment (`ERP_*`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Kafka bootstrap servers (`ERP_BOOTSTRAP_SERVERS`).
    pub bootstrap_servers: String,
    /// Confluent-compatible registry base URL (`ERP_SCHEMA_REGISTRY_URL`).
    pub schema_registry_url: String,
    /// Where RocksDB stores live (`ERP_STATE_DIR`).
    pub state_dir: PathBuf,
    /// Query API listen address (`ERP_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Partitions of every topic the project creates (`ERP_PARTITIONS`).
    pub partitions: i32,
    /// Longest time a transaction stays open (`ERP_COMMIT_INTERVAL_MS`).
    pub commit_interval_ms: u64,
    /// Stable id of this process among instances of one application (`ERP_INSTANCE_ID`).
    pub instance_id: String,
    /// Prefix of every topic and application id (`ERP_TOPIC_PREFIX`).
    pub topic_prefix: String,
    /// `text` or `json` (`ERP_LOG_FORMAT`).
    pub log_format: String,
    /// Budget for all RocksDB block caches and memtables of the process (`ERP_STORE_MEMORY_MB`).
    pub store_memory_mb: usize,
    /// `dlq`, `skip` or `fail`: what happens to undecodable records (`ERP_POISON_POLICY`).
    pub poison_policy: String,
    /// Start even though stores of this application id disappeared (`ERP_ALLOW_TOPOLOGY_CHANGE`).
    pub allow_topology_change: bool,
    /// Warm standby replicas of other instances' stores (`ERP_STANDBY_REPLICAS`, 0 = none).
    pub standby_replicas: usize,
    /// How long stock stays held for an order that is not paid yet
    /// (`ERP_RESERVATION_TTL_MS`); then the hold expires and the order is cancelled.
    pub reservation_ttl_ms: u64,
    /// host:port other instances use to reach this query API (`ERP_ADVERTISED_ADDR`;
    /// default: `http_addr`). Lookups of keys hosted elsewhere are forwarded there.
    pub advertised_addr: Option<String>,
}

impl Settings {
    /// Where other instances reach this instance's query API.
    pub fn advertised(&self) -> String {
        self.advertised_addr
            .clone()
            .unwrap_or_else(|| self.http_addr.to_string())
    }
}

const FIELDS: [&str; 15] = [
    "advertised_addr",
    "reservation_ttl_ms",
    "standby_replicas",
    "store_memory_mb",
    "poison_policy",
    "allow_topology_change",
    "bootstrap_servers",
    "schema_registry_url",
    "state_dir",
    "http_addr",
    "partitions",
    "commit_interval_ms",
    "instance_id",
    "topic_prefix",
    "log_format",
];

impl Default for Settings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            schema_registry_url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
            state_dir: PathBuf::from("erp-state"),
            http_addr: "127.0.0.1:8080".parse().expect("valid default"),
            partitions: 4,
            commit_interval_ms: 100,
            instance_id: "instance-1".into(),
            topic_prefix: String::new(),
            log_format: "text".into(),
            store_memory_mb: 128,
            poison_policy: "dlq".into(),
            allow_topology_change: false,
            standby_replicas: 0,
            reservation_ttl_ms: 15 * 60 * 1000,
            advertised_addr: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::MissingFile(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file(f));
        }
        let s: Settings = fig
            // Only our own keys: other ERP_* variables (the scripts' ERP_CACHE, …) are not
            // settings. Unknown keys in the file are still refused.
            .merge(Env::prefixed("ERP_").only(&FIELDS))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        s.validate()?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(1..=1024).contains(&self.partitions) {
            return bad(format!(
                "partitions must be 1..=1024, got {}",
                self.partitions
            ));
        }
        if !(1..=60_000).contains(&self.commit_interval_ms) {
            return bad(format!(
                "commit_interval_ms must be 1..=60000, got {}",
                self.commit_interval_ms
            ));
        }
        if !self.schema_registry_url.starts_with("http://")
            && !self.schema_registry_url.starts_with("https://")
        {
            return bad(format!(
                "schema_registry_url must be an http(s) URL, got {:?}",
                self.schema_registry_url
            ));
        }
        if self.bootstrap_servers.trim().is_empty() {
            return bad("bootstrap_servers must not be empty".into());
        }
        if self.instance_id.is_empty()
            || !self
                .instance_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(format!(
                "instance_id must be [A-Za-z0-9_-]+, got {:?}",
                self.instance_id
            ));
        }
        if !(8..=65_536).contains(&self.store_memory_mb) {
            return bad(format!(
                "store_memory_mb must be 8..=65536, got {}",
                self.store_memory_mb
            ));
        }
        if let Err(e) = self.poison_policy.parse::<crate::engine::PoisonPolicy>() {
            return bad(e);
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return bad(format!(
                "log_format must be text or json, got {:?}",
                self.log_format
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn file_then_environment_override_defaults_and_errors_are_clear() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("erp.toml", "partitions = 8\nhttp_addr = \"127.0.0.1:9000\"")?;
            let s = Settings::load(Some(Path::new("erp.toml"))).unwrap();
            assert_eq!((s.partitions, s.http_addr.port()), (8, 9000));
            jail.set_env("ERP_PARTITIONS", "2");
            jail.set_env("ERP_CACHE", "/elsewhere");
            assert_eq!(
                Settings::load(Some(Path::new("erp.toml")))
                    .unwrap()
                    .partitions,
                2
            );
            jail.set_env("ERP_PARTITIONS", "zero");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("PARTITIONS") && err.contains("ERP_"), "{err}");
            jail.set_env("ERP_PARTITIONS", "0");
            assert!(
                Settings::load(None)
                    .unwrap_err()
                    .to_string()
                    .contains("1..=1024")
            );
            assert!(matches!(
                Settings::load(Some(Path::new("nope.toml"))),
                Err(ConfigError::MissingFile(_))
            ));
            Ok(())
        });
    }
}
