use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::{Entry, StoreBackend, StoreError};

/// Backends by (store name, partition).
type Hosted = BTreeMap<(String, i32), Arc<dyn StoreBackend>>;

/// The stores this instance hosts, by store name and partition, for interactive queries.
/// Reads go to committed state only: what a read_committed consumer could also see.
#[derive(Clone, Default)]
pub struct StoreRegistry {
    stores: Arc<RwLock<Hosted>>,
}

impl StoreRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&self, store: &str, partition: i32, backend: Arc<dyn StoreBackend>) {
        self.stores
            .write()
            .expect("poisoned")
            .insert((store.to_string(), partition), backend);
    }

    pub fn unregister(&self, store: &str, partition: i32) {
        self.stores
            .write()
            .expect("poisoned")
            .remove(&(store.to_string(), partition));
    }

    /// Partitions of `store` hosted here.
    pub fn partitions(&self, store: &str) -> Vec<i32> {
        self.stores
            .read()
            .expect("poisoned")
            .keys()
            .filter(|(s, _)| s == store)
            .map(|(_, p)| *p)
            .collect()
    }

    fn backends(&self, store: &str) -> Vec<Arc<dyn StoreBackend>> {
        self.stores
            .read()
            .expect("poisoned")
            .iter()
            .filter(|((s, _), _)| s == store)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Whether partition `partition` of `store` is hosted here.
    pub fn hosts(&self, store: &str, partition: i32) -> bool {
        self.stores
            .read()
            .expect("poisoned")
            .contains_key(&(store.to_string(), partition))
    }

    /// Looks `key` up in one partition of `store` (None when it is not hosted here).
    pub fn get_in(
        &self,
        store: &str,
        partition: i32,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let backend = self
            .stores
            .read()
            .expect("poisoned")
            .get(&(store.to_string(), partition))
            .cloned();
        match backend {
            Some(b) => b.get(key),
            None => Ok(None),
        }
    }

    /// Looks `key` up in every local partition of `store` (a key lives in exactly one).
    pub fn get(&self, store: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        for backend in self.backends(store) {
            if let Some(v) = backend.get(key)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }

    /// Every committed entry of `store` across local partitions.
    pub fn entries(&self, store: &str) -> Result<Vec<Entry>, StoreError> {
        let mut all = Vec::new();
        for backend in self.backends(store) {
            all.extend(backend.entries()?);
        }
        all.sort();
        Ok(all)
    }
}

/// Readiness of the components of a process: ready when every registered component
/// (e.g. each processor: joined its group and restored every assigned store) says so.
#[derive(Clone, Default)]
pub struct Readiness {
    parts: Arc<RwLock<BTreeMap<String, bool>>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self, component: &str, ready: bool) {
        self.parts
            .write()
            .expect("poisoned")
            .insert(component.to_string(), ready);
    }

    pub fn is_ready(&self) -> bool {
        let parts = self.parts.read().expect("poisoned");
        !parts.is_empty() && parts.values().all(|r| *r)
    }

    pub fn report(&self) -> BTreeMap<String, bool> {
        self.parts.read().expect("poisoned").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[test]
    fn get_finds_a_key_in_whichever_partition_holds_it() {
        let reg = StoreRegistry::new();
        let p0 = Arc::new(MemoryBackend::new("orders"));
        let p1 = Arc::new(MemoryBackend::new("orders"));
        p1.write_batch(&[(b"a".to_vec(), Some(b"1".to_vec()))], None)
            .unwrap();
        reg.register("orders", 0, p0);
        reg.register("orders", 1, p1);
        assert_eq!(reg.get("orders", b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(reg.get("orders", b"b").unwrap(), None);
        assert_eq!(reg.get("other", b"a").unwrap(), None);
        reg.unregister("orders", 1);
        assert_eq!(reg.get("orders", b"a").unwrap(), None);
    }

    #[test]
    fn readiness_needs_every_component() {
        let r = Readiness::new();
        assert!(!r.is_ready());
        r.set("order", true);
        r.set("inventory", false);
        assert!(!r.is_ready());
        r.set("inventory", true);
        assert!(r.is_ready());
    }
}
