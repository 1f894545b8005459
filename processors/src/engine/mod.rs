//! The stream-processing engine, in Kafka Streams' vocabulary.
//!
//! One [`StreamThread`] per processor (bounded context) and process: one consumer
//! (read_committed, group = application id), one transactional producer (EOS v2: the
//! consumer group metadata fences zombies), a [`task::StreamTask`] per input partition
//! holding the partition's stores. Each commit is one Kafka transaction carrying the
//! output records, the changelog records and the input offsets; after Kafka commits,
//! the stores flush their staged writes with the changelog checkpoint in one RocksDB
//! batch (see [`commit`]).

mod admin;
mod collector;
mod commit;
mod config;
mod dlq;
mod driver;
mod global;
mod guard;
pub mod journal;
mod metrics;
mod partitioner;
mod processor;
mod restore;
mod runtime;
pub mod shadow;
mod standby;
mod task;
pub mod trace;

pub use admin::{Replication, TopicSpec, ensure_topics};

/// Group ids of the consumers that only `assign` (restore, standby, global stores): they
/// never join or commit, but librdkafka still looks their coordinator up, which a
/// secured cluster allows with Describe on the group (granted by `erp acls`).
pub const ASSIGN_ONLY_GROUPS: [&str; 3] = [
    restore::RESTORE_GROUP,
    standby::STANDBY_GROUP,
    global::GLOBAL_GROUP,
];
pub use config::{EngineConfig, PoisonPolicy};
pub use driver::{ChangelogRecord, TopologyTestDriver};
pub use global::{GlobalStoreSpec, GlobalStores};
pub use metrics::EngineMetrics;
pub use partitioner::{murmur2, partition_for};
pub(crate) use processor::wall_clock_ms;
pub use processor::{
    Header, InputRecord, OutputRecord, ProcessError, Processor, ProcessorContext, PunctuationType,
    Topology,
};
pub(crate) use restore::watermarks;
pub use runtime::{EngineError, ReplayMarks, StreamThread};
