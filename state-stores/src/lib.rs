//! Key-value state stores in the layers Kafka Streams users know:
//! `MeteredStore` → `ChangeLoggingStore` → `TransactionalStore` → a backend
//! (`RocksDbBackend`, or `MemoryBackend`, its in-memory twin with the same trait).
//!
//! Writes inside a Kafka transaction are staged in the transactional layer (reads see
//! them). After Kafka commits, the staged writes and the changelog offset go to the
//! backend in one atomic batch; after an abort they are dropped. A crash therefore never
//! leaves uncommitted state on disk, and a restart restores only the changelog tail after
//! the checkpoint.

mod backend;
mod layers;
mod memory;
mod metrics;
mod registry;
mod rocksdb;

pub use backend::{Entry, StoreBackend, Write};
pub use layers::{
    ChangeLoggingStore, ChangelogCollector, KeyValueStore, MeteredStore, TransactionalStore,
};
pub use memory::MemoryBackend;
pub use metrics::StoreMetrics;
pub use registry::{Readiness, StoreRegistry};
pub use rocksdb::{RocksDbBackend, RocksDbOptions};

/// Errors of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb error in store {store}: {source}")]
    RocksDb {
        store: String,
        #[source]
        source: ::rocksdb::Error,
    },
    #[error("store {store} at {path} could not be opened: {reason}")]
    Open {
        store: String,
        path: String,
        reason: String,
    },
    #[error("changelog write of store {store} failed: {reason}")]
    Changelog { store: String, reason: String },
}

/// The changelog topic of a store, named as Kafka Streams names it.
pub fn changelog_topic(application_id: &str, store: &str) -> String {
    format!("{application_id}-{store}-changelog")
}

#[cfg(test)]
mod tests {
    #[test]
    fn changelog_topic_follows_kafka_streams_naming() {
        assert_eq!(
            super::changelog_topic("erp-order", "orders"),
            "erp-order-orders-changelog"
        );
    }
}
