//! Dead-letter records in the spirit of KIP-1034: the raw key and value, the original
//! headers, and `__dlq.errors.*` headers saying where the record came from and why it
//! was refused.

use super::processor::{Header, InputRecord, OutputRecord};

pub(crate) fn dead_letter(
    dlq_topic: &str,
    application_id: &str,
    record: &InputRecord<'_>,
    class: &str,
    reason: &str,
) -> OutputRecord {
    let mut headers: Vec<Header> = record.headers.clone();
    let mut add = |k: &str, v: String| headers.push((k.to_string(), v.into_bytes()));
    add("__dlq.errors.topic", record.topic.to_string());
    add("__dlq.errors.partition", record.partition.to_string());
    add("__dlq.errors.offset", record.offset.to_string());
    add("__dlq.errors.exception.class.name", class.to_string());
    add("__dlq.errors.exception.message", reason.to_string());
    add("__dlq.errors.application.id", application_id.to_string());
    OutputRecord {
        topic: dlq_topic.to_string(),
        key: record.key.unwrap_or_default().to_vec(),
        value: record.value.unwrap_or_default().to_vec(),
        timestamp: record.timestamp,
        headers,
    }
}
