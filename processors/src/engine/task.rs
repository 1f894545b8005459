use std::collections::BTreeMap;

use erp_state_stores::KeyValueStore;

use super::processor::{Processor, Schedule};

/// The unit of work for one input partition: its stores, its processor and its timers.
pub(crate) struct StreamTask {
    pub partition: i32,
    pub stores: BTreeMap<String, Box<dyn KeyValueStore>>,
    pub processor: Box<dyn Processor>,
    pub schedules: Vec<Schedule>,
    /// Largest record timestamp seen: the task's stream time.
    pub stream_time: i64,
}
