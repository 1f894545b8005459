use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::EngineError;

/// How a topic is replicated: `factor` copies, and a write is acknowledged (acks=all)
/// once `min_insync` of them have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub factor: i32,
    pub min_insync: i32,
}

impl Replication {
    /// One broker (the default local stack).
    pub const SINGLE: Replication = Replication {
        factor: 1,
        min_insync: 1,
    };
}

/// A topic this project creates if it does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: Replication,
    pub compacted: bool,
}

impl TopicSpec {
    pub fn new(name: impl Into<String>, partitions: i32, replication: Replication) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication,
            compacted: false,
        }
    }

    pub fn compacted(mut self) -> Self {
        self.compacted = true;
        self
    }
}

/// Creates missing topics and checks that existing ones have the expected partition
/// count: co-partitioned inputs with different counts would silently split keys.
pub async fn ensure_topics(bootstrap: &str, specs: &[TopicSpec]) -> Result<(), EngineError> {
    let admin: AdminClient<DefaultClientContext> = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| EngineError::Kafka(format!("admin client: {e}")))?;
    let min_insync: Vec<String> = specs
        .iter()
        .map(|s| s.replication.min_insync.to_string())
        .collect();
    let new_topics: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&min_insync)
        .map(|(s, min_insync)| {
            let t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication.factor),
            )
            .set("min.insync.replicas", min_insync);
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new_topics.iter(), &opts)
        .await
        .map_err(|e| EngineError::Kafka(format!("create topics on {bootstrap} failed: {e}")))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            // On a secured cluster a processor may create only its own internal topics;
            // the shared ones are the operator's (`erp setup` as the super user).
            Err((name, RDKafkaErrorCode::TopicAuthorizationFailed)) => {
                tracing::debug!(topic = %name, "not authorized to create; left to the operator");
            }
            Err((name, code)) => {
                return Err(EngineError::Kafka(format!("create topic {name}: {code}")));
            }
        }
    }
    let bootstrap = bootstrap.to_string();
    let specs = specs.to_vec();
    tokio::task::spawn_blocking(move || check_partitions(&bootstrap, &specs))
        .await
        .map_err(|e| EngineError::Kafka(e.to_string()))?
}

fn check_partitions(bootstrap: &str, specs: &[TopicSpec]) -> Result<(), EngineError> {
    let consumer: BaseConsumer = erp_connectors::kafka::client()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| EngineError::Kafka(e.to_string()))?;
    for spec in specs {
        // Freshly created topics may take a moment to show up in metadata.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let md = consumer
                .fetch_metadata(Some(&spec.name), Duration::from_secs(10))
                .map_err(|e| EngineError::Kafka(format!("metadata of {}: {e}", spec.name)))?;
            let topic = md.topics().iter().find(|t| t.name() == spec.name);
            if topic.and_then(|t| t.error()).map(RDKafkaErrorCode::from)
                == Some(RDKafkaErrorCode::TopicAuthorizationFailed)
            {
                // Not ours to see (a secured cluster's least privilege): a topic this
                // process does use fails loudly when it subscribes or produces.
                tracing::debug!(topic = %spec.name, "not authorized to describe; not checked");
                break;
            }
            let found = topic
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().len() as i32);
            match found {
                Some(n) if n == spec.partitions => break,
                Some(n) if n > 0 => {
                    return Err(EngineError::Config(format!(
                        "topic {} has {n} partitions, expected {}: co-partitioned topics \
                         must agree (set ERP_PARTITIONS to match or recreate the topic)",
                        spec.name, spec.partitions
                    )));
                }
                _ if std::time::Instant::now() > deadline => {
                    return Err(EngineError::Kafka(format!(
                        "topic {} did not appear in metadata",
                        spec.name
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(())
}
