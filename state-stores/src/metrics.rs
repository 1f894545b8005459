use prometheus::{HistogramOpts, HistogramVec, Registry};

/// Store operation latencies, shared by every metered store of a process.
#[derive(Clone)]
pub struct StoreMetrics {
    latency: HistogramVec,
}

impl StoreMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "erp_store_operation_seconds",
                "Latency of state store operations by store and operation",
            )
            .buckets(vec![1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]),
            &["store", "op"],
        )?;
        registry.register(Box::new(latency.clone()))?;
        Ok(Self { latency })
    }

    pub fn observe(&self, store: &str, op: &str, seconds: f64) {
        self.latency
            .with_label_values(&[store, op])
            .observe(seconds);
    }
}
