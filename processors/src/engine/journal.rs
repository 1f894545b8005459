//! The input journal: the order in which a task took the records of its several input
//! partitions, and what it read from global stores meanwhile, written to
//! `<application id>-journal` (partition = task) in the same transaction as the task's
//! outputs and offsets.
//!
//! Why: a task with several inputs (order commands, replies, payment and shipping
//! events) sees them interleaved by arrival, and under exactly-once a reply becomes
//! visible only when its producer commits, so no timestamp rule can recover the order
//! later. A global store (the customer table) moves on its own thread. Reprocessing after
//! an offset reset therefore follows the journal: same records, same order, same global
//! reads, hence the same decisions and byte-for-byte the same state. A task with one
//! input and no global store needs no journal: its partition is its order.

use std::collections::{HashSet, VecDeque};

/// The journal topic of an application.
pub fn journal_topic(application_id: &str) -> String {
    format!("{application_id}-journal")
}

/// 2: read counts are u32 (1: u16, still read).
const FORMAT_VERSION: u8 = 2;

/// One global-store read made while processing a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalRead {
    pub store: String,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One processed input record: which source topic (index in the topology), which
/// offset, and the global reads its processing made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub input: u8,
    pub offset: i64,
    pub reads: Vec<GlobalRead>,
}

/// Global reads of the record being processed: recorded live, or served from the
/// journal while replaying.
#[derive(Debug, Default)]
pub struct ReadLog {
    pub(crate) recorded: Vec<GlobalRead>,
    pub(crate) scripted: VecDeque<GlobalRead>,
    /// Reads the journal did not have (the code now reads something else): served live.
    pub(crate) misses: u64,
}

impl ReadLog {
    pub(crate) fn scripted(reads: Vec<GlobalRead>) -> Self {
        Self {
            scripted: reads.into(),
            ..Self::default()
        }
    }

    /// The journaled value of `store`/`key` if the next scripted read is that one.
    pub(crate) fn take_scripted(&mut self, store: &str, key: &[u8]) -> Option<Option<Vec<u8>>> {
        match self.scripted.front() {
            Some(r) if r.store == store && r.key == key => {
                self.scripted.pop_front().map(|r| r.value)
            }
            Some(_) => {
                self.misses += 1;
                None
            }
            None => None,
        }
    }

    pub(crate) fn record(&mut self, store: &str, key: &[u8], value: Option<&[u8]>) {
        self.recorded.push(GlobalRead {
            store: store.to_string(),
            key: key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        });
    }
}

/// Why a journal record could not be read.
#[derive(Debug, thiserror::Error)]
#[error("journal record is malformed: {0}")]
pub struct JournalError(&'static str);

pub fn encode(entries: &[JournalEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + entries.len() * 11);
    out.push(FORMAT_VERSION);
    for e in entries {
        out.push(e.input);
        out.extend_from_slice(&e.offset.to_be_bytes());
        out.extend_from_slice(&(e.reads.len() as u32).to_be_bytes());
        for r in &e.reads {
            put_bytes(&mut out, r.store.as_bytes());
            put_bytes(&mut out, &r.key);
            match &r.value {
                Some(v) => {
                    out.push(1);
                    put_bytes(&mut out, v);
                }
                None => out.push(0),
            }
        }
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], JournalError> {
        if self.0.len() < n {
            return Err(JournalError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, JournalError> {
        Ok(self.take(1)?[0])
    }
    fn bytes(&mut self) -> Result<Vec<u8>, JournalError> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        Ok(self.take(n)?.to_vec())
    }
}

pub fn decode(bytes: &[u8]) -> Result<Vec<JournalEntry>, JournalError> {
    let mut r = Reader(bytes);
    let version = r.u8()?;
    if version != FORMAT_VERSION && version != 1 {
        return Err(JournalError("unknown format version"));
    }
    let mut entries = Vec::new();
    while !r.0.is_empty() {
        let input = r.u8()?;
        let offset = i64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
        let n = if version == 1 {
            u32::from(u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes")))
        } else {
            u32::from_be_bytes(r.take(4)?.try_into().expect("4 bytes"))
        };
        let mut reads = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let store = String::from_utf8(r.bytes()?).map_err(|_| JournalError("store name"))?;
            let key = r.bytes()?;
            let value = match r.u8()? {
                0 => None,
                1 => Some(r.bytes()?),
                _ => return Err(JournalError("value tag")),
            };
            reads.push(GlobalRead { store, key, value });
        }
        entries.push(JournalEntry {
            input,
            offset,
            reads,
        });
    }
    Ok(entries)
}

/// Builds the script to follow from journal records in log order: the entries at or
/// after each input's start position, each (input, offset) once. A replay journals the
/// same entries again; the first occurrence is the original.
pub fn script(
    records: impl IntoIterator<Item = Vec<JournalEntry>>,
    start: &[i64],
) -> Vec<JournalEntry> {
    let mut seen: HashSet<(u8, i64)> = HashSet::new();
    let mut out = Vec::new();
    for entries in records {
        for e in entries {
            let from = start.get(e.input as usize).copied().unwrap_or(i64::MAX);
            if e.offset >= from && seen.insert((e.input, e.offset)) {
                out.push(e);
            }
        }
    }
    out
}

/// What a follower needs to know of a buffered record.
pub trait Positioned {
    fn offset(&self) -> i64;
    fn timestamp(&self) -> i64;
}

/// What to do next while following a script.
#[derive(Debug, PartialEq)]
pub enum Step<M> {
    /// Process this record, serving these global reads.
    Process(M, Vec<GlobalRead>),
    /// The next scripted record (of this input) has not been fetched yet.
    Wait(u8),
    /// Nothing buffered and the script is done.
    Idle,
}

/// Releases buffered records of one task in the journal's order; once the script is
/// done, in timestamp order (the best guess for what was never journaled).
pub struct Follower<M> {
    script: Vec<JournalEntry>,
    cursor: usize,
    committed_cursor: usize,
    buffers: Vec<VecDeque<M>>,
    /// Scripted records no longer in the log (retention) or never delivered.
    pub skipped: u64,
    /// Records the script did not name, processed where they came.
    pub unscripted: u64,
}

impl<M: Positioned> Follower<M> {
    pub fn new(script: Vec<JournalEntry>, inputs: usize) -> Self {
        Self {
            script,
            cursor: 0,
            committed_cursor: 0,
            buffers: (0..inputs).map(|_| VecDeque::new()).collect(),
            skipped: 0,
            unscripted: 0,
        }
    }

    /// The script is done, committed, and nothing is left in the buffers.
    pub fn settled(&self) -> bool {
        self.committed_cursor >= self.script.len() && self.buffered_total() == 0
    }

    pub fn following(&self) -> bool {
        self.cursor < self.script.len()
    }

    pub fn remaining(&self) -> usize {
        self.script.len() - self.cursor
    }

    pub fn push(&mut self, input: u8, m: M) {
        if let Some(b) = self.buffers.get_mut(input as usize) {
            b.push_back(m);
        }
    }

    pub fn buffered(&self, input: u8) -> usize {
        self.buffers.get(input as usize).map_or(0, VecDeque::len)
    }

    pub fn buffered_total(&self) -> usize {
        self.buffers.iter().map(VecDeque::len).sum()
    }

    /// The offset of the first buffered record of `input`, if any.
    pub fn first_buffered(&self, input: u8) -> Option<i64> {
        self.buffers
            .get(input as usize)
            .and_then(|b| b.front())
            .map(Positioned::offset)
    }

    pub fn release(&mut self) -> Step<M> {
        while let Some(entry) = self.script.get(self.cursor) {
            let buffer = &mut self.buffers[entry.input as usize];
            match buffer.front().map(Positioned::offset) {
                None => return Step::Wait(entry.input),
                Some(o) if o < entry.offset => {
                    self.unscripted += 1;
                    let m = buffer.pop_front().expect("front exists");
                    return Step::Process(m, Vec::new());
                }
                Some(o) if o == entry.offset => {
                    let m = buffer.pop_front().expect("front exists");
                    let reads = entry.reads.clone();
                    self.cursor += 1;
                    return Step::Process(m, reads);
                }
                Some(_) => {
                    self.skipped += 1;
                    self.cursor += 1;
                }
            }
        }
        // Script done: drain what is buffered, oldest timestamp first.
        let next = self
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.front().map(|m| (m.timestamp(), i)))
            .min();
        match next {
            Some((_, i)) => Step::Process(self.buffers[i].pop_front().expect("front"), Vec::new()),
            None => Step::Idle,
        }
    }

    /// The next scripted record: its input and offset.
    pub fn awaited(&self) -> Option<(u8, i64)> {
        self.script.get(self.cursor).map(|e| (e.input, e.offset))
    }

    /// Gives up on the next scripted record (its input has no more records).
    pub fn skip_current(&mut self) {
        if self.cursor < self.script.len() {
            self.skipped += 1;
            self.cursor += 1;
        }
    }

    /// Gives up on the rest of the script (its records will not come).
    pub fn abandon(&mut self) {
        self.skipped += (self.script.len() - self.cursor) as u64;
        self.cursor = self.script.len();
    }

    /// The transaction holding the records released so far committed.
    pub fn committed(&mut self) {
        self.committed_cursor = self.cursor;
    }

    /// The transaction aborted: its records come again (the consumer is rewound), so the
    /// script goes back to the last commit; the buffers are dropped, and the positions
    /// to rewind each input to are returned (first buffered offset, if any).
    pub fn aborted(&mut self) -> Vec<(u8, i64)> {
        self.cursor = self.committed_cursor;
        let firsts = self
            .buffers
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.front().map(|m| (i as u8, m.offset())))
            .collect();
        for b in &mut self.buffers {
            b.clear();
        }
        firsts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Clone)]
    struct M(i64, i64);
    impl Positioned for M {
        fn offset(&self) -> i64 {
            self.0
        }
        fn timestamp(&self) -> i64 {
            self.1
        }
    }

    fn e(input: u8, offset: i64) -> JournalEntry {
        JournalEntry {
            input,
            offset,
            reads: vec![],
        }
    }

    #[test]
    fn encoding_round_trips_with_reads() {
        let entries = vec![
            e(0, 5),
            JournalEntry {
                input: 2,
                offset: i64::MAX - 1,
                reads: vec![
                    GlobalRead {
                        store: "customers".into(),
                        key: b"c1".to_vec(),
                        value: Some(vec![0, 1, 2]),
                    },
                    GlobalRead {
                        store: "customers".into(),
                        key: b"c2".to_vec(),
                        value: None,
                    },
                ],
            },
        ];
        assert_eq!(decode(&encode(&entries)).unwrap(), entries);
        assert!(decode(&encode(&entries)[..10]).is_err());
        assert!(decode(&[9]).is_err());
    }

    #[test]
    fn script_keeps_first_occurrences_from_the_start_positions() {
        // A replay journaled (0,1) and (1,0) again; (0,0) is before input 0's start.
        let s = script(
            vec![
                vec![e(0, 0), e(1, 0), e(0, 1)],
                vec![e(1, 0), e(0, 1), e(0, 2)],
            ],
            &[1, 0],
        );
        assert_eq!(s, vec![e(1, 0), e(0, 1), e(0, 2)]);
    }

    #[test]
    fn follower_releases_in_journal_order_whatever_the_arrival_order() {
        let mut f = Follower::new(vec![e(1, 10), e(0, 3), e(0, 4), e(1, 11)], 2);
        f.push(0, M(3, 100));
        f.push(0, M(4, 101));
        assert_eq!(f.release(), Step::Wait(1));
        f.push(1, M(10, 200));
        f.push(1, M(11, 201));
        let order: Vec<i64> = std::iter::from_fn(|| match f.release() {
            Step::Process(m, _) => Some(m.0),
            _ => None,
        })
        .collect();
        assert_eq!(order, vec![10, 3, 4, 11]);
        assert!(!f.following());
    }

    #[test]
    fn follower_skips_vanished_records_and_passes_unscripted_ones() {
        let mut f = Follower::new(vec![e(0, 5), e(0, 7)], 1);
        f.push(0, M(4, 1)); // before the script: never journaled
        f.push(0, M(6, 1)); // 5 is gone (retention)
        f.push(0, M(7, 1));
        let mut got = vec![];
        while let Step::Process(m, _) = f.release() {
            got.push(m.0);
        }
        assert_eq!(got, vec![4, 6, 7]);
        assert_eq!((f.skipped, f.unscripted), (1, 2));
    }

    #[test]
    fn after_the_script_buffered_records_go_oldest_first() {
        let mut f: Follower<M> = Follower::new(vec![], 2);
        f.push(0, M(1, 50));
        f.push(1, M(1, 10));
        assert!(matches!(f.release(), Step::Process(M(1, 10), _)));
        assert!(matches!(f.release(), Step::Process(M(1, 50), _)));
        assert_eq!(f.release(), Step::Idle);
    }

    #[test]
    fn abort_rewinds_the_script_to_the_last_commit() {
        let mut f = Follower::new(vec![e(0, 0), e(0, 1), e(0, 2)], 1);
        for o in 0..3 {
            f.push(0, M(o, 0));
        }
        assert!(matches!(f.release(), Step::Process(M(0, 0), _)));
        f.committed();
        assert!(matches!(f.release(), Step::Process(M(1, 0), _)));
        assert_eq!(f.aborted(), vec![(0, 2)]);
        assert_eq!(f.remaining(), 2);
        f.push(0, M(1, 0));
        assert!(matches!(f.release(), Step::Process(M(1, 0), _)));
    }

    #[test]
    fn scripted_reads_are_served_in_order_and_misses_counted() {
        let mut log = ReadLog::scripted(vec![GlobalRead {
            store: "s".into(),
            key: b"k".to_vec(),
            value: Some(b"v".to_vec()),
        }]);
        assert_eq!(log.take_scripted("s", b"other"), None);
        assert_eq!(log.misses, 1);
        assert_eq!(log.take_scripted("s", b"k"), Some(Some(b"v".to_vec())));
        assert_eq!(log.take_scripted("s", b"k"), None);
    }
}
