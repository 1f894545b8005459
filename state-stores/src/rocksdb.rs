use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::{Entry, StoreBackend, StoreError, Write};

const DATA_CF: &str = "data";
const META_CF: &str = "meta";
const CHECKPOINT_KEY: &[u8] = b"changelog-checkpoint";

/// Tuning shared by every store of an instance.
#[derive(Debug, Clone)]
pub struct RocksDbOptions {
    /// Write-buffer size per store.
    pub write_buffer_bytes: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            write_buffer_bytes: 8 << 20,
        }
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
        db_opts.set_write_buffer_size(options.write_buffer_bytes);
        db_opts.set_max_open_files(256);
        let cfs = [DATA_CF, META_CF]
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(*cf, Options::default()));
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
        db.wipe().unwrap();
        assert_eq!(db.entries().unwrap(), vec![]);
        assert_eq!(db.checkpoint().unwrap(), None);
    }
}
