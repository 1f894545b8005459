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
    /// `PLAINTEXT`, `SASL_PLAINTEXT`, `SSL` or `SASL_SSL` (`ERP_KAFKA_SECURITY_PROTOCOL`;
    /// the secured local stack, `ERP_STACK=secure`, wants SASL_PLAINTEXT).
    pub kafka_security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (`ERP_KAFKA_SASL_MECHANISM`).
    pub kafka_sasl_mechanism: Option<String>,
    /// This process's principal (`ERP_KAFKA_SASL_USERNAME`; one per processor context).
    pub kafka_sasl_username: Option<String>,
    /// Its password (`ERP_KAFKA_SASL_PASSWORD`). Never logged.
    pub kafka_sasl_password: Option<Secret>,
    /// CA certificate (PEM) of the brokers, SSL protocols (`ERP_KAFKA_SSL_CA_LOCATION`).
    pub kafka_ssl_ca_location: Option<String>,
    /// Confluent-compatible registry base URL (`ERP_SCHEMA_REGISTRY_URL`).
    pub schema_registry_url: String,
    /// The analytics sink's database (`ERP_POSTGRES_URL`; `scripts/stack.sh up` starts one).
    pub postgres_url: String,
    /// The PostgreSQL schema the sink writes its tables in (`ERP_POSTGRES_SCHEMA`).
    pub postgres_schema: String,
    /// Where RocksDB stores live (`ERP_STATE_DIR`).
    pub state_dir: PathBuf,
    /// Query API listen address (`ERP_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Partitions of every topic the project creates (`ERP_PARTITIONS`).
    pub partitions: i32,
    /// Replicas of every topic the project creates (`ERP_REPLICATION_FACTOR`; 3 on the
    /// local cluster, `ERP_STACK=cluster scripts/stack.sh up`).
    pub replication_factor: i32,
    /// `min.insync.replicas` of every topic the project creates
    /// (`ERP_MIN_INSYNC_REPLICAS`; 2 with 3 replicas: a write survives one broker loss).
    pub min_insync_replicas: i32,
    /// Longest time a transaction stays open (`ERP_COMMIT_INTERVAL_MS`).
    pub commit_interval_ms: u64,
    /// Commit as soon as no record is waiting, not only every `commit_interval_ms`
    /// (`ERP_COMMIT_WHEN_IDLE`, default true): low latency when idle, big transactions
    /// under load.
    pub commit_when_idle: bool,
    /// Stable id of this process among instances of one application (`ERP_INSTANCE_ID`).
    pub instance_id: String,
    /// Prefix of every topic and application id (`ERP_TOPIC_PREFIX`).
    pub topic_prefix: String,
    /// `text` or `json` (`ERP_LOG_FORMAT`).
    pub log_format: String,
    /// OTLP/gRPC collector the record spans are exported to, e.g. `http://otel:4317`
    /// (`ERP_OTLP_ENDPOINT`; none: no export). The standard `OTEL_EXPORTER_OTLP_*`
    /// (headers, timeout) and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` variables
    /// apply too.
    pub otlp_endpoint: Option<String>,
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
    /// gRPC inventory service listen address (`ERP_GRPC_ADDR`; none: no gRPC).
    pub grpc_addr: Option<SocketAddr>,
    /// Bearer JWTs signed with this HS256 secret are required (`ERP_JWT_HS256_SECRET`,
    /// at least 32 bytes). Never logged.
    pub jwt_hs256_secret: Option<Secret>,
    /// Or: signed by the holder of this public key, PEM RSA / EC / Ed25519
    /// (`ERP_JWT_PUBLIC_KEY_FILE`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` of tokens (`ERP_JWT_ISSUER`).
    pub jwt_issuer: Option<String>,
    /// Required `aud` of tokens (`ERP_JWT_AUDIENCE`).
    pub jwt_audience: Option<String>,
    /// Requests per minute per client, 0 = unlimited (`ERP_RATE_LIMIT_PER_MINUTE`; the
    /// seed's gateway uses 100).
    pub rate_limit_per_minute: u32,
    /// Comma-separated origins browsers may call from, `*` for any (`ERP_CORS_ORIGINS`;
    /// empty: no CORS).
    pub cors_origins: String,
}

/// A secret setting: deserialized like a string, never printed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Settings {
    pub fn cors_origin_list(&self) -> Vec<String> {
        self.cors_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The query API's gateway rules (auth, rate limit, CORS) from these settings.
    pub fn gateway(&self) -> Result<erp_query_api::Gateway, ConfigError> {
        use erp_query_api::gateway::{JwtAuth, RateLimiter};
        let invalid = |e: erp_query_api::gateway::GatewayError| ConfigError::Invalid(e.to_string());
        let auth = match (&self.jwt_hs256_secret, &self.jwt_public_key_file) {
            (Some(secret), _) => Some(JwtAuth::hs256(secret.0.as_bytes()).map_err(invalid)?),
            (None, Some(file)) => {
                let pem = std::fs::read(file).map_err(|e| {
                    ConfigError::Invalid(format!("jwt_public_key_file {}: {e}", file.display()))
                })?;
                Some(JwtAuth::public_key_pem(&pem).map_err(invalid)?)
            }
            (None, None) => None,
        }
        .map(|a| {
            std::sync::Arc::new(a.expect(self.jwt_issuer.as_deref(), self.jwt_audience.as_deref()))
        });
        Ok(erp_query_api::Gateway {
            auth,
            limiter: RateLimiter::per_minute(self.rate_limit_per_minute).map(std::sync::Arc::new),
            cors_origins: self.cors_origin_list(),
        })
    }

    /// How every Kafka client of this process authenticates.
    pub fn kafka_security(&self) -> erp_connectors::kafka::KafkaSecurity {
        erp_connectors::kafka::KafkaSecurity {
            protocol: self.kafka_security_protocol.clone(),
            sasl_mechanism: self.kafka_sasl_mechanism.clone(),
            sasl_username: self.kafka_sasl_username.clone(),
            sasl_password: self.kafka_sasl_password.as_ref().map(|s| s.0.clone()),
            ssl_ca_location: self.kafka_ssl_ca_location.clone(),
        }
    }

    /// Where other instances reach this instance's query API.
    pub fn advertised(&self) -> String {
        self.advertised_addr
            .clone()
            .unwrap_or_else(|| self.http_addr.to_string())
    }
}

const FIELDS: [&str; 33] = [
    "otlp_endpoint",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_ca_location",
    "replication_factor",
    "min_insync_replicas",
    "postgres_url",
    "postgres_schema",
    "grpc_addr",
    "jwt_hs256_secret",
    "jwt_public_key_file",
    "jwt_issuer",
    "jwt_audience",
    "rate_limit_per_minute",
    "cors_origins",
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
    "commit_when_idle",
    "instance_id",
    "topic_prefix",
    "log_format",
];

impl Default for Settings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            kafka_security_protocol: "PLAINTEXT".into(),
            kafka_sasl_mechanism: None,
            kafka_sasl_username: None,
            kafka_sasl_password: None,
            kafka_ssl_ca_location: None,
            schema_registry_url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
            postgres_url: "postgres://erp@127.0.0.1:5433/erp".into(),
            postgres_schema: "analytics".into(),
            state_dir: PathBuf::from("erp-state"),
            http_addr: "127.0.0.1:8080".parse().expect("valid default"),
            partitions: 4,
            replication_factor: 1,
            min_insync_replicas: 1,
            commit_interval_ms: 100,
            commit_when_idle: true,
            instance_id: "instance-1".into(),
            topic_prefix: String::new(),
            log_format: "text".into(),
            otlp_endpoint: None,
            store_memory_mb: 128,
            poison_policy: "dlq".into(),
            allow_topology_change: false,
            standby_replicas: 0,
            reservation_ttl_ms: 15 * 60 * 1000,
            advertised_addr: None,
            grpc_addr: None,
            jwt_hs256_secret: None,
            jwt_public_key_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            rate_limit_per_minute: 0,
            cors_origins: String::new(),
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
    /// How every topic the project creates is replicated.
    pub fn replication(&self) -> crate::engine::Replication {
        crate::engine::Replication {
            factor: self.replication_factor,
            min_insync: self.min_insync_replicas,
        }
    }

    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError::MissingFile(f.to_path_buf()));
            }
            fig = fig.merge(Toml::file(f));
        }
        let mut s: Settings = fig
            // Only our own keys: other ERP_* variables (the scripts' ERP_CACHE, …) are not
            // settings. Unknown keys in the file are still refused.
            .merge(Env::prefixed("ERP_").only(&FIELDS))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        // `ERP_OTLP_ENDPOINT=` (compose's default) means no export.
        if s.otlp_endpoint
            .as_deref()
            .is_some_and(|e| e.trim().is_empty())
        {
            s.otlp_endpoint = None;
        }
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
        if !(1..=16).contains(&self.replication_factor) {
            return bad(format!(
                "replication_factor must be 1..=16, got {}",
                self.replication_factor
            ));
        }
        if !(1..=self.replication_factor).contains(&self.min_insync_replicas) {
            return bad(format!(
                "min_insync_replicas must be 1..=replication_factor ({}), got {}",
                self.replication_factor, self.min_insync_replicas
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
        if !erp_connectors::sink::valid_schema_name(&self.postgres_schema) {
            return bad(format!(
                "postgres_schema must be a lower-case SQL identifier (a-z, 0-9, _; not starting with a digit; at most 63), got {:?}",
                self.postgres_schema
            ));
        }
        if let Err(e) = self.kafka_security().validate() {
            return bad(e.to_string());
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
        if self.jwt_hs256_secret.is_some() && self.jwt_public_key_file.is_some() {
            return bad("set jwt_hs256_secret or jwt_public_key_file, not both".into());
        }
        if let Err(e) = erp_query_api::gateway::check_origins(&self.cors_origin_list()) {
            return bad(e.to_string());
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !endpoint.starts_with("http://")
            && !endpoint.starts_with("https://")
        {
            return bad(format!(
                "otlp_endpoint must be an http(s) URL (OTLP/gRPC, usually port 4317), got {endpoint:?}"
            ));
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
            jail.set_env("ERP_PARTITIONS", "2");
            jail.set_env("ERP_OTLP_ENDPOINT", "");
            assert_eq!(Settings::load(None).unwrap().otlp_endpoint, None);
            jail.set_env("ERP_OTLP_ENDPOINT", "otel:4317");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains("otlp_endpoint must be an http(s) URL"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn gateway_settings_are_checked_and_the_secret_is_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ERP_JWT_HS256_SECRET", "0123456789abcdef0123456789abcdef");
            jail.set_env("ERP_RATE_LIMIT_PER_MINUTE", "100");
            jail.set_env(
                "ERP_CORS_ORIGINS",
                "https://app.example.com, http://localhost:3000",
            );
            let s = Settings::load(None).unwrap();
            assert!(!format!("{s:?}").contains("0123456789abcdef"));
            let g = s.gateway().unwrap();
            assert!(g.auth.is_some() && g.limiter.is_some());
            assert_eq!(g.cors_origins.len(), 2);
            jail.set_env("ERP_JWT_HS256_SECRET", "short");
            let err = Settings::load(None).unwrap().gateway().err().unwrap();
            assert!(err.to_string().contains("32 bytes"), "{err}");
            jail.set_env("ERP_CORS_ORIGINS", "app.example.com");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("app.example.com"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn kafka_credentials_come_from_the_environment_and_are_never_printed() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ERP_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT");
            jail.set_env("ERP_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256");
            jail.set_env("ERP_KAFKA_SASL_USERNAME", "erp-order");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("kafka_sasl_password"), "{err}");
            jail.set_env("ERP_KAFKA_SASL_PASSWORD", "pa55-w0rd-of-erp-order");
            let s = Settings::load(None).unwrap();
            let props = s.kafka_security().properties();
            assert!(props.contains(&("sasl.username", "erp-order".to_string())));
            assert!(!format!("{s:?}").contains("pa55-w0rd"));
            jail.set_env("ERP_KAFKA_SECURITY_PROTOCOL", "sasl");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("kafka_security_protocol"), "{err}");
            Ok(())
        });
    }
}
