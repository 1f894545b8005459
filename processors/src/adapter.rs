//! Shared plumbing of the processors: decoding with poison classification, aggregate
//! (de)serialisation, the processed-ids store that makes commands idempotent, headers.

use serde::Serialize;
use serde::de::DeserializeOwned;

use erp_schemas::{AvroSerde, SchemaKind, WireError};

use crate::engine::{Header, InputRecord, OutputRecord, ProcessError, ProcessorContext};

/// Store of command and event ids already applied, per task.
pub const PROCESSED_STORE: &str = "processed-ids";

pub(crate) fn wire_error(e: WireError) -> ProcessError {
    if e.is_retriable() {
        ProcessError::Transient(e.to_string())
    } else {
        ProcessError::Poison {
            class: e.class(),
            reason: e.to_string(),
        }
    }
}

pub(crate) fn decode<T: DeserializeOwned>(
    serde: &AvroSerde,
    kind: SchemaKind,
    record: &InputRecord<'_>,
) -> Result<T, ProcessError> {
    let bytes = record.value.ok_or(ProcessError::Poison {
        class: "null_value",
        reason: "record has no value".into(),
    })?;
    serde.decode(kind, bytes).map_err(wire_error)
}

pub(crate) fn encode<T: Serialize>(
    serde: &AvroSerde,
    topic: &str,
    kind: SchemaKind,
    value: &T,
) -> Result<Vec<u8>, ProcessError> {
    serde.encode(topic, kind, value).map_err(|e| {
        if e.is_retriable() {
            ProcessError::Transient(e.to_string())
        } else {
            // Our own records must always fit our own schemas: a bug, not bad input.
            ProcessError::Fatal(format!("cannot encode {kind:?} for {topic}: {e}"))
        }
    })
}

/// Loads a JSON-serialised aggregate.
pub(crate) fn load<T: DeserializeOwned>(
    ctx: &mut ProcessorContext<'_>,
    store: &str,
    key: &str,
) -> Result<Option<T>, ProcessError> {
    match ctx.store(store).get(key.as_bytes())? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ProcessError::Store(erp_state_stores::StoreError::Open {
                store: store.to_string(),
                path: key.to_string(),
                reason: format!("stored value does not deserialise: {e}"),
            })
        }),
    }
}

pub(crate) fn save<T: Serialize>(
    ctx: &mut ProcessorContext<'_>,
    store: &str,
    key: &str,
    value: &T,
) -> Result<(), ProcessError> {
    let bytes = serde_json::to_vec(value).expect("aggregates serialise to JSON");
    ctx.store(store).put(key.as_bytes(), &bytes)?;
    Ok(())
}

/// True if `id` was applied before; otherwise records it (in the same transaction).
pub(crate) fn seen_before(
    ctx: &mut ProcessorContext<'_>,
    id: &str,
    at: i64,
) -> Result<bool, ProcessError> {
    let store = ctx.store(PROCESSED_STORE);
    if store.get(id.as_bytes())?.is_some() {
        return Ok(true);
    }
    store.put(id.as_bytes(), at.to_string().as_bytes())?;
    Ok(false)
}

/// Envelopes carry one optional field per message type: exactly one must be set.
pub(crate) fn exactly_one_payload(set: &[bool]) -> Result<(), String> {
    match set.iter().filter(|b| **b).count() {
        1 => Ok(()),
        n => Err(format!(
            "a command carries exactly one payload, this one has {n}"
        )),
    }
}

/// Saga metadata carried in headers: correlation id (the whole saga), causation id
/// (the direct cause), command id.
pub(crate) fn headers(correlation_id: &str, causation_id: &str) -> Vec<Header> {
    vec![
        ("correlation_id".into(), correlation_id.as_bytes().to_vec()),
        ("causation_id".into(), causation_id.as_bytes().to_vec()),
    ]
}

pub(crate) fn output(
    topic: String,
    key: &str,
    value: Vec<u8>,
    timestamp: i64,
    headers: Vec<Header>,
) -> OutputRecord {
    OutputRecord {
        topic,
        key: key.as_bytes().to_vec(),
        value,
        timestamp,
        headers,
    }
}
