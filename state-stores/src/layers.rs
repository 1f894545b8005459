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
    /// Savepoint: the writes after this belong to one record.
    fn begin_record(&mut self);
    /// Undoes the current record's writes (a poison record's partial effects), keeping
    /// the rest of the transaction; returns the keys it put back.
    fn discard_record(&mut self) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The committed storage underneath, shared with interactive queries.
    fn backend(&self) -> Arc<dyn StoreBackend>;
}

/// What a key was staged as before the current record touched it (None: not staged).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// Stages writes of the open transaction over a committed backend.
pub struct TransactionalStore {
    backend: Arc<dyn StoreBackend>,
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Undo log of the current record, from `begin_record`.
    undo: Vec<Undo>,
}

impl TransactionalStore {
    pub fn new(backend: Arc<dyn StoreBackend>) -> Self {
        Self {
            backend,
            staged: BTreeMap::new(),
            undo: Vec::new(),
        }
    }

    fn remember(&mut self, key: &[u8]) {
        if !self.undo.iter().any(|(k, _)| k == key) {
            self.undo
                .push((key.to_vec(), self.staged.get(key).cloned()));
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
        self.remember(key);
        self.staged.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.remember(key);
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
        self.undo.clear();
    }

    fn begin_record(&mut self) {
        self.undo.clear();
    }

    fn discard_record(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut keys = Vec::new();
        for (key, before) in self.undo.drain(..).rev() {
            match before {
                None => self.staged.remove(&key),
                Some(v) => self.staged.insert(key.clone(), v),
            };
            keys.push(key);
        }
        Ok(keys)
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
    fn begin_record(&mut self) {
        self.inner.begin_record()
    }
    /// The discarded writes were already logged: log each key's restored value after
    /// them, so the changelog ends where the store does.
    fn discard_record(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
        let keys = self.inner.discard_record()?;
        for key in &keys {
            let value = self.inner.get(key)?;
            self.log(key, value.as_deref())?;
        }
        Ok(keys)
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
    fn begin_record(&mut self) {
        self.inner.begin_record()
    }
    fn discard_record(&mut self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.discard_record()
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
    fn discarding_a_record_undoes_its_writes_and_relogs_the_restored_values() {
        let backend = Arc::new(MemoryBackend::new("s"));
        backend
            .write_batch(&[(b"c".to_vec(), Some(b"c0".to_vec()))], Some(1))
            .unwrap();
        let sink = Arc::new(Sink::default());
        let mut store = stack(backend.clone(), sink.clone());
        store.begin_record();
        store.put(b"a", b"a1").unwrap();
        store.begin_record(); // the poison record starts here
        store.put(b"a", b"a2").unwrap();
        store.put(b"b", b"b1").unwrap();
        store.delete(b"c").unwrap();
        let mut keys = store.discard_record().unwrap();
        keys.sort();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(store.get(b"a").unwrap(), Some(b"a1".to_vec()));
        assert_eq!(store.get(b"b").unwrap(), None);
        assert_eq!(store.get(b"c").unwrap(), Some(b"c0".to_vec()));
        // The changelog's last word on each key matches the store.
        let log = sink.0.lock().unwrap().clone();
        let last = |k: &[u8]| {
            log.iter()
                .rev()
                .find(|(_, _, key, _)| key == k)
                .unwrap()
                .3
                .clone()
        };
        assert_eq!(last(b"a"), Some(b"a1".to_vec()));
        assert_eq!(last(b"b"), None);
        assert_eq!(last(b"c"), Some(b"c0".to_vec()));
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
