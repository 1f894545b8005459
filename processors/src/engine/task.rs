use std::collections::BTreeMap;

use std::collections::HashSet;
use std::time::Instant;

use rdkafka::message::OwnedMessage;

use erp_state_stores::KeyValueStore;

use super::journal::Follower;
use super::processor::{Processor, Schedule};

/// The journal side of a task whose topology is journaled.
#[derive(Default)]
pub(crate) struct TaskJournal {
    /// Set while reprocessing journaled history (after an offset reset).
    pub follower: Option<Follower<OwnedMessage>>,
    /// Since when the follower waits for its next scripted record.
    pub waiting_since: Option<Instant>,
    /// Inputs paused because the follower buffers too much of them.
    pub paused: HashSet<u8>,
}

/// The unit of work for one input partition: its stores, its processor and its timers.
pub(crate) struct StreamTask {
    pub partition: i32,
    pub stores: BTreeMap<String, Box<dyn KeyValueStore>>,
    pub processor: Box<dyn Processor>,
    pub schedules: Vec<Schedule>,
    /// Largest record timestamp seen: the task's stream time.
    pub stream_time: i64,
    /// Present when the topology is journaled.
    pub journal: Option<TaskJournal>,
}
