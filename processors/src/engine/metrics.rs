use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Engine metrics, labelled by application id.
#[derive(Clone)]
pub struct EngineMetrics {
    pub records_processed: IntCounterVec,
    pub records_dead_lettered: IntCounterVec,
    pub records_skipped: IntCounterVec,
    pub restore_remaining: IntGaugeVec,
    pub store_memory_bytes: IntGaugeVec,
    pub transactions_committed: IntCounterVec,
    pub transactions_aborted: IntCounterVec,
    pub producers_renewed: IntCounterVec,
    pub commit_seconds: HistogramVec,
    pub records_restored: IntCounterVec,
    pub assigned_tasks: IntGaugeVec,
    pub process_seconds: Histogram,
    pub end_to_end_seconds: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub store_keys: IntGaugeVec,
}

impl EngineMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            records_processed: IntCounterVec::new(
                Opts::new("erp_records_processed_total", "Input records processed"),
                &["application_id", "topic"],
            )?,
            records_dead_lettered: IntCounterVec::new(
                Opts::new(
                    "erp_dlq_records_total",
                    "Records sent to the dead-letter topic",
                ),
                &["application_id", "class"],
            )?,
            records_skipped: IntCounterVec::new(
                Opts::new(
                    "erp_poison_skipped_total",
                    "Poison records skipped (policy skip)",
                ),
                &["application_id", "class"],
            )?,
            restore_remaining: IntGaugeVec::new(
                Opts::new(
                    "erp_restore_remaining_records",
                    "Changelog records still to restore (0 when every store is up to date)",
                ),
                &["application_id"],
            )?,
            store_memory_bytes: IntGaugeVec::new(
                Opts::new(
                    "erp_store_memory_bytes",
                    "Bytes held by the shared RocksDB block cache and memtables",
                ),
                &["application_id"],
            )?,
            transactions_committed: IntCounterVec::new(
                Opts::new(
                    "erp_transactions_committed_total",
                    "Kafka transactions committed",
                ),
                &["application_id"],
            )?,
            transactions_aborted: IntCounterVec::new(
                Opts::new(
                    "erp_transactions_aborted_total",
                    "Kafka transactions aborted",
                ),
                &["application_id"],
            )?,
            producers_renewed: IntCounterVec::new(
                Opts::new(
                    "erp_producers_renewed_total",
                    "Transactional producers replaced after failing unfenced (instead of a process restart)",
                ),
                &["application_id"],
            )?,
            commit_seconds: HistogramVec::new(
                HistogramOpts::new("erp_commit_seconds", "Latency of a transaction commit")
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    ]),
                &["application_id"],
            )?,
            records_restored: IntCounterVec::new(
                Opts::new("erp_records_restored_total", "Changelog records restored"),
                &["application_id", "store"],
            )?,
            assigned_tasks: IntGaugeVec::new(
                Opts::new("erp_assigned_tasks", "Tasks (input partitions) owned"),
                &["application_id"],
            )?,
            process_seconds: Histogram::with_opts(
                HistogramOpts::new("erp_process_seconds", "Time to process one record")
                    .buckets(vec![1e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 0.1]),
            )?,
            end_to_end_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "erp_end_to_end_latency_seconds",
                    "From an input record's timestamp (the command's time, carried along the saga) to its processing",
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                &["application_id", "topic"],
            )?,
            consumer_lag: IntGaugeVec::new(
                Opts::new("erp_consumer_lag_records", "Records behind the end of each input partition"),
                &["application_id", "topic", "partition"],
            )?,
            store_keys: IntGaugeVec::new(
                Opts::new("erp_store_keys", "Approximate keys per store on this instance"),
                &["application_id", "store"],
            )?,
        };
        registry.register(Box::new(m.end_to_end_seconds.clone()))?;
        registry.register(Box::new(m.consumer_lag.clone()))?;
        registry.register(Box::new(m.store_keys.clone()))?;
        registry.register(Box::new(m.records_processed.clone()))?;
        registry.register(Box::new(m.records_dead_lettered.clone()))?;
        registry.register(Box::new(m.records_skipped.clone()))?;
        registry.register(Box::new(m.restore_remaining.clone()))?;
        registry.register(Box::new(m.store_memory_bytes.clone()))?;
        registry.register(Box::new(m.transactions_committed.clone()))?;
        registry.register(Box::new(m.transactions_aborted.clone()))?;
        registry.register(Box::new(m.producers_renewed.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.records_restored.clone()))?;
        registry.register(Box::new(m.assigned_tasks.clone()))?;
        registry.register(Box::new(m.process_seconds.clone()))?;
        Ok(m)
    }
}
