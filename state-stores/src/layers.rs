use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::{StoreBackend, StoreError, StoreMetrics, Write};

/// What a processor sees of a store: reads see its own uncommitted writes.
pub trait KeyValueStore: Send {
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError>;
    /// Kafka committed: make the staged writes durable with the changelog checkpoint.
    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StoreError>;
    /// Kafka aborted: forget the staged writes.
    fn abort(&mut self);
    /// The committed storage underneath, shared with interactive queries.
    fn backend(&self) -> Arc<dyn StoreBackend>;
}

/// Stages writes of the open transaction over a committed backend.
pub struct TransactionalStore {
    backend: Arc<dyn StoreBackend>,
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl TransactionalStore {
    pub fn new(backend: Arc<dyn StoreBackend>) -> Self {
        Self {
            backend,
            staged: BTreeMap::new(),
        }
    }
}

impl KeyValueStore for TransactionalStore {
    fn name(&self) -> &str {
        self.backend.name()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.staged.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.backend.get(key),
        }
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.staged.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.staged.insert(key.to_vec(), None);
        Ok(())
    }

    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StoreError> {
        if self.staged.is_empty() && checkpoint.is_none() {
            return Ok(());
        }
        let writes: Vec<Write> = std::mem::take(&mut self.staged).into_iter().collect();
        self.backend.write_batch(&writes, checkpoint)
    }

    fn abort(&mut self) {
        self.staged.clear();
    }

    fn backend(&self) -> Arc<dyn StoreBackend> {
        self.backend.clone()
    }
}

/// Where changelog records go: the engine's transactional producer (or a test sink).
pub trait ChangelogCollector: Send + Sync {
    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), String>;
}

/// Logs every write to the store's compacted changelog partition (a delete is a
/// tombstone), inside the same Kafka transaction as the write.
pub struct ChangeLoggingStore {
    inner: Box<dyn KeyValueStore>,
    topic: String,
    partition: i32,
    collector: Arc<dyn ChangelogCollector>,
}

impl ChangeLoggingStore {
    pub fn new(
        inner: Box<dyn KeyValueStore>,
        topic: String,
        partition: i32,
        collector: Arc<dyn ChangelogCollector>,
    ) -> Self {
        Self {
            inner,
            topic,
            partition,
            collector,
        }
    }

    fn log(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        self.collector
            .send(&self.topic, self.partition, key, value)
            .map_err(|reason| StoreError::Changelog {
                store: self.inner.name().to_string(),
                reason,
            })
    }
}

impl KeyValueStore for ChangeLoggingStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.inner.put(key, value)?;
        self.log(key, Some(value))
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.delete(key)?;
        self.log(key, None)
    }
    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StoreError> {
        self.inner.commit(checkpoint)
    }
    fn abort(&mut self) {
        self.inner.abort()
    }
    fn backend(&self) -> Arc<dyn StoreBackend> {
        self.inner.backend()
    }
}

/// Times every operation into Prometheus, labelled by store and operation.
pub struct MeteredStore {
    inner: Box<dyn KeyValueStore>,
    metrics: StoreMetrics,
}

impl MeteredStore {
    pub fn new(inner: Box<dyn KeyValueStore>, metrics: StoreMetrics) -> Self {
        Self { inner, metrics }
    }

    fn timed<T>(&self, op: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.metrics
            .observe(self.inner.name(), op, start.elapsed().as_secs_f64());
        out
    }
}

impl KeyValueStore for MeteredStore {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("get", || self.inner.get(key))
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let start = Instant::now();
        let out = self.inner.put(key, value);
        self.metrics
            .observe(self.inner.name(), "put", start.elapsed().as_secs_f64());
        out
    }
    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let start = Instant::now();
        let out = self.inner.delete(key);
        self.metrics
            .observe(self.inner.name(), "delete", start.elapsed().as_secs_f64());
        out
    }
    fn commit(&mut self, checkpoint: Option<i64>) -> Result<(), StoreError> {
        let start = Instant::now();
        let out = self.inner.commit(checkpoint);
        self.metrics
            .observe(self.inner.name(), "commit", start.elapsed().as_secs_f64());
        out
    }
    fn abort(&mut self) {
        self.inner.abort()
    }
    fn backend(&self) -> Arc<dyn StoreBackend> {
        self.inner.backend()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::MemoryBackend;

    /// (topic, partition, key, value) of each changelog record.
    type Logged = (String, i32, Vec<u8>, Option<Vec<u8>>);

    #[derive(Default)]
    struct Sink(Mutex<Vec<Logged>>);
    impl ChangelogCollector for Sink {
        fn send(&self, t: &str, p: i32, k: &[u8], v: Option<&[u8]>) -> Result<(), String> {
            self.0
                .lock()
                .unwrap()
                .push((t.to_string(), p, k.to_vec(), v.map(<[u8]>::to_vec)));
            Ok(())
        }
    }

    fn stack(backend: Arc<dyn StoreBackend>, sink: Arc<Sink>) -> MeteredStore {
        let metrics = StoreMetrics::new(&prometheus::Registry::new()).unwrap();
        MeteredStore::new(
            Box::new(ChangeLoggingStore::new(
                Box::new(TransactionalStore::new(backend)),
                "app-s-changelog".into(),
                3,
                sink,
            )),
            metrics,
        )
    }

    #[test]
    fn staged_writes_are_visible_before_commit_and_durable_only_after() {
        let backend = Arc::new(MemoryBackend::new("s"));
        let sink = Arc::new(Sink::default());
        let mut store = stack(backend.clone(), sink.clone());
        store.put(b"k", b"v1").unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(
            backend.get(b"k").unwrap(),
            None,
            "not durable before commit"
        );
        store.commit(Some(7)).unwrap();
        assert_eq!(backend.get(b"k").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(backend.checkpoint().unwrap(), Some(7));
        let logged = sink.0.lock().unwrap().clone();
        assert_eq!(
            logged,
            vec![(
                "app-s-changelog".to_string(),
                3,
                b"k".to_vec(),
                Some(b"v1".to_vec())
            )]
        );
    }

    #[test]
    fn abort_drops_staged_writes_and_keeps_committed_state() {
        let backend = Arc::new(MemoryBackend::new("s"));
        let mut store = stack(backend.clone(), Arc::new(Sink::default()));
        store.put(b"k", b"v1").unwrap();
        store.commit(Some(1)).unwrap();
        store.put(b"k", b"v2").unwrap();
        store.delete(b"k").unwrap();
        assert_eq!(store.get(b"k").unwrap(), None);
        store.abort();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(backend.checkpoint().unwrap(), Some(1));
    }
}
