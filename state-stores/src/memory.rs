use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Entry, StoreBackend, StoreError, Write};

type Data = BTreeMap<Vec<u8>, Vec<u8>>;

/// In-memory twin of [`crate::RocksDbBackend`] with the same semantics, for tests and
/// broker-free topology runs.
pub struct MemoryBackend {
    name: String,
    /// Data and the changelog checkpoint, changed together under one lock.
    inner: Mutex<(Data, Option<i64>)>,
}

impl MemoryBackend {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            inner: Mutex::new((BTreeMap::new(), None)),
        }
    }
}

impl StoreBackend for MemoryBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.lock().expect("poisoned").0.get(key).cloned())
    }

    fn write_batch(&self, writes: &[Write], checkpoint: Option<i64>) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("poisoned");
        for (k, v) in writes {
            match v {
                Some(v) => inner.0.insert(k.clone(), v.clone()),
                None => inner.0.remove(k),
            };
        }
        if checkpoint.is_some() {
            inner.1 = checkpoint;
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.inner.lock().expect("poisoned").1)
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let inner = self.inner.lock().expect("poisoned");
        Ok(inner
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn approximate_len(&self) -> u64 {
        self.inner.lock().expect("poisoned").0.len() as u64
    }

    fn wipe(&self) -> Result<(), StoreError> {
        let mut inner = self.inner.lock().expect("poisoned");
        inner.0.clear();
        inner.1 = None;
        Ok(())
    }
}
