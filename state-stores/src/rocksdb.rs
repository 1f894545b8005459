use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch,
    WriteBufferManager, WriteOptions,
};

use crate::{Entry, StoreBackend, StoreError, Write};

const DATA_CF: &str = "data";
const META_CF: &str = "meta";
const CHECKPOINT_KEY: &[u8] = b"changelog-checkpoint";

/// Memory shared by every store of a process: one LRU block cache and one write-buffer
/// manager charged to it, so all memtables and cached blocks together stay within
/// `total_bytes` however many stores (tasks × stores) are open. Kafka Streams users get
/// this only by writing a `RocksDBConfigSetter`.
#[derive(Clone)]
pub struct RocksDbOptions {
    pub total_bytes: usize,
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl std::fmt::Debug for RocksDbOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksDbOptions")
            .field("total_bytes", &self.total_bytes)
            .finish()
    }
}

impl RocksDbOptions {
    /// `total_bytes` bounds block cache + memtables; half of it may be memtables.
    pub fn with_memory_budget(total_bytes: usize) -> Self {
        let cache = Cache::new_lru_cache(total_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            total_bytes / 2,
            false,
            cache.clone(),
        );
        Self {
            total_bytes,
            cache,
            write_buffers,
        }
    }

    /// Bytes currently held by the shared block cache (memtables are charged to it too).
    pub fn cache_usage_bytes(&self) -> usize {
        self.cache.get_usage()
    }

    fn apply(&self, opts: &mut Options) {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        table.set_cache_index_and_filter_blocks(true);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&self.write_buffers);
        // Small memtables: many stores share one budget, and the write-buffer manager
        // flushes the largest when the total passes half the budget.
        opts.set_write_buffer_size((self.total_bytes / 32).clamp(256 << 10, 8 << 20));
    }
}

impl Default for RocksDbOptions {
    /// 128 MiB: leaves room for the process within the seed's 512 MiB pod limit.
    fn default() -> Self {
        Self::with_memory_budget(128 << 20)
    }
}

/// A RocksDB database holding one store's partition: data in one column family, the
/// changelog checkpoint in another, both written in one `WriteBatch`.
pub struct RocksDbBackend {
    name: String,
    path: PathBuf,
    db: DB,
}

impl RocksDbBackend {
    pub fn open(name: &str, path: &Path, options: &RocksDbOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| StoreError::Open {
            store: name.to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_open_files(256);
        options.apply(&mut db_opts);
        let cfs = [DATA_CF, META_CF].iter().map(|cf| {
            let mut cf_opts = Options::default();
            options.apply(&mut cf_opts);
            ColumnFamilyDescriptor::new(*cf, cf_opts)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| StoreError::Open {
            store: name.to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            db,
        })
    }

    /// Opens a store read-only, e.g. an operator inspecting a running instance's state:
    /// no lock is taken and nothing is written.
    pub fn open_read_only(name: &str, path: &Path) -> Result<Self, StoreError> {
        let opts = Options::default();
        let db =
            DB::open_cf_for_read_only(&opts, path, [DATA_CF, META_CF], false).map_err(|e| {
                StoreError::Open {
                    store: name.to_string(),
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            name: name.to_string(),
            path: path.to_path_buf(),
            db,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rocksdb::Error) -> StoreError {
        StoreError::RocksDb {
            store: self.name.clone(),
            source,
        }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family is created on open")
    }
}

impl StoreBackend for RocksDbBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_cf(self.cf(DATA_CF), key)
            .map_err(|e| self.err(e))
    }

    fn write_batch(&self, writes: &[Write], checkpoint: Option<i64>) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let data = self.cf(DATA_CF);
        for (k, v) in writes {
            match v {
                Some(v) => batch.put_cf(data, k, v),
                None => batch.delete_cf(data, k),
            }
        }
        if let Some(offset) = checkpoint {
            batch.put_cf(self.cf(META_CF), CHECKPOINT_KEY, offset.to_be_bytes());
        }
        // The WAL stays on: the batch is the only copy of committed state between
        // Kafka's commit and the next restore, and a checkpoint must never outrun data.
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        self.db.write_opt(batch, &opts).map_err(|e| self.err(e))
    }

    fn checkpoint(&self) -> Result<Option<i64>, StoreError> {
        let raw = self
            .db
            .get_cf(self.cf(META_CF), CHECKPOINT_KEY)
            .map_err(|e| self.err(e))?;
        Ok(raw.and_then(|b| {
            <[u8; 8]>::try_from(b.as_slice())
                .ok()
                .map(i64::from_be_bytes)
        }))
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        self.db
            .iterator_cf(self.cf(DATA_CF), IteratorMode::Start)
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| self.err(e))
            })
            .collect()
    }

    fn approximate_len(&self) -> u64 {
        self.db
            .property_int_value_cf(self.cf(DATA_CF), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn wipe(&self) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        for item in self.db.iterator_cf(self.cf(DATA_CF), IteratorMode::Start) {
            let (k, _) = item.map_err(|e| self.err(e))?;
            batch.delete_cf(self.cf(DATA_CF), k);
        }
        batch.delete_cf(self.cf(META_CF), CHECKPOINT_KEY);
        self.db.write(batch).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_stores_share_one_memory_budget() {
        let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
        let opts = RocksDbOptions::with_memory_budget(8 << 20);
        let dbs: Vec<_> = dirs
            .iter()
            .map(|d| RocksDbBackend::open("s", d.path(), &opts).unwrap())
            .collect();
        let value = vec![7u8; 1024];
        for round in 0..8u32 {
            for (i, db) in dbs.iter().enumerate() {
                let writes: Vec<Write> = (0..1000u32)
                    .map(|k| (format!("{i}-{round}-{k}").into_bytes(), Some(value.clone())))
                    .collect();
                db.write_batch(&writes, Some(1)).unwrap();
            }
        }
        // 64 MB written across 8 stores (16 column families); the shared cache, charged
        // with the memtables, stays bounded: the 8 MiB budget plus about 1 MiB of memtable
        // reservation per column family (a soft limit, independent of the data size).
        let usage = opts.cache_usage_bytes();
        assert!(usage <= 24 << 20, "usage {usage}");
        assert_eq!(dbs[3].get(b"3-7-999").unwrap(), Some(value));
    }

    #[test]
    fn batch_writes_data_and_checkpoint_together_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = RocksDbBackend::open("s", dir.path(), &RocksDbOptions::default()).unwrap();
            assert_eq!(db.checkpoint().unwrap(), None);
            db.write_batch(
                &[
                    (b"a".to_vec(), Some(b"1".to_vec())),
                    (b"b".to_vec(), Some(b"2".to_vec())),
                ],
                Some(42),
            )
            .unwrap();
            db.write_batch(&[(b"a".to_vec(), None)], Some(43)).unwrap();
        }
        let db = RocksDbBackend::open("s", dir.path(), &RocksDbOptions::default()).unwrap();
        assert_eq!(db.get(b"a").unwrap(), None);
        assert_eq!(db.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(db.checkpoint().unwrap(), Some(43));
        assert_eq!(db.entries().unwrap(), vec![(b"b".to_vec(), b"2".to_vec())]);
        // An operator's read-only view, while the writer has it open.
        let view = RocksDbBackend::open_read_only("s", dir.path()).unwrap();
        assert_eq!(view.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(view.checkpoint().unwrap(), Some(43));
        assert!(view.write_batch(&[], Some(44)).is_err());
        drop(view);
        db.wipe().unwrap();
        assert_eq!(db.entries().unwrap(), vec![]);
        assert_eq!(db.checkpoint().unwrap(), None);
    }
}
