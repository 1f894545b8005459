use crate::StoreError;

/// One staged write: a put (`Some`) or a delete (`None`).
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One committed key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// Committed storage of one store for one partition. Implementations are shared between
/// the stream thread (writes) and interactive queries (reads), so they are `Sync`.
pub trait StoreBackend: Send + Sync {
    fn name(&self) -> &str;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies `writes` and records `checkpoint` (the next changelog offset to restore
    /// from) atomically: both or neither survive a crash.
    fn write_batch(&self, writes: &[Write], checkpoint: Option<i64>) -> Result<(), StoreError>;
    /// The changelog offset from which a restore must continue, if any was recorded.
    fn checkpoint(&self) -> Result<Option<i64>, StoreError>;
    /// Every committed entry in key order.
    fn entries(&self) -> Result<Vec<Entry>, StoreError>;
    /// Number of keys (estimate for RocksDB).
    fn approximate_len(&self) -> u64;
    /// Removes all data and the checkpoint (used before a full restore).
    fn wipe(&self) -> Result<(), StoreError>;
}
