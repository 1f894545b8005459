use std::collections::BTreeMap;

use erp_state_stores::KeyValueStore;

use super::processor::Processor;

/// The unit of work for one input partition: its stores and its processor.
pub(crate) struct StreamTask {
    pub partition: i32,
    pub stores: BTreeMap<String, Box<dyn KeyValueStore>>,
    pub processor: Box<dyn Processor>,
}
