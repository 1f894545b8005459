//! W3C Trace Context across the saga: every record a processor writes carries a
//! `traceparent` header continuing the trace of the record it processed, so one order's
//! commands and events, across all five processors, form one trace. Each processed
//! record is a `record` span whose `trace_id`/`span_id` fields appear on every log line
//! written while processing it (JSON logs carry them as fields).
//!
//! Ids are derived, not random: reprocessing the same input (after an abort, a crash or
//! a replay) writes byte-identical outputs, headers included.

use std::cell::Cell;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use erp_schemas::traceparent::{TraceParent, to_hex};

use super::processor::{Header, InputRecord, OutputRecord};

pub const TRACEPARENT: &str = "traceparent";
const CORRELATION_ID: &str = "correlation_id";

/// A header's value as text; the last one wins when a name repeats (Kafka's
/// `Headers.lastHeader`).
fn header<'h>(headers: &'h [Header], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// The trace a processed record belongs to, and its own span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordTrace {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The span that wrote the input record, if it said so.
    pub parent_id: Option<[u8; 8]>,
    pub sampled: bool,
}

impl RecordTrace {
    /// The input's `traceparent` continued; without one, a trace named after the saga's
    /// correlation id (so commands from clients that send none still join one trace per
    /// saga), else one of its own. The span id names the record (topic, partition,
    /// offset): stable when the record is processed again.
    pub fn of(record: &InputRecord<'_>) -> Self {
        let span_id = span_id(&[
            record.topic.as_bytes(),
            &record.partition.to_be_bytes(),
            &record.offset.to_be_bytes(),
        ]);
        match header(&record.headers, TRACEPARENT).and_then(TraceParent::parse) {
            Some(p) => Self {
                trace_id: p.trace_id,
                span_id,
                parent_id: Some(p.parent_id),
                sampled: p.sampled,
            },
            None => Self {
                trace_id: match header(&record.headers, CORRELATION_ID) {
                    Some(c) => trace_id_of(c),
                    None => trace_id_of(&format!(
                        "{}/{}/{}",
                        record.topic, record.partition, record.offset
                    )),
                },
                span_id,
                parent_id: None,
                sampled: true,
            },
        }
    }

    /// The header of everything this record's processing writes.
    pub fn child_header(&self) -> String {
        TraceParent {
            trace_id: self.trace_id,
            parent_id: self.span_id,
            sampled: self.sampled,
        }
        .header()
    }

    /// `tracing` span of this record: its fields are on every log line inside it. When
    /// spans are exported (OTLP), the exported span has exactly this trace id and span id
    /// and the input's writer as parent, so the traceparent headers written under it name
    /// a span the trace backend has.
    pub fn span(&self, record: &InputRecord<'_>) -> tracing::Span {
        let span = tracing::info_span!(
            "record",
            topic = record.topic,
            partition = record.partition,
            offset = record.offset,
            trace_id = %to_hex(&self.trace_id),
            span_id = %to_hex(&self.span_id),
            parent_id = self.parent_id.map(|p| to_hex(&p)).unwrap_or_default(),
        );
        self.export_as(&span);
        span
    }

    fn export_as(&self, span: &tracing::Span) {
        let parent = match self.parent_id {
            Some(parent) => {
                opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(self.trace_id),
                    SpanId::from_bytes(parent),
                    if self.sampled {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    },
                    true,
                    TraceState::default(),
                ))
            }
            // A root, whatever span is current: the trace id is the saga's.
            None => opentelemetry::Context::new(),
        };
        // Fails (cheaply) unless an OpenTelemetry layer is installed and enabled for it.
        if span.set_parent(parent).is_err() {
            return;
        }
        NEXT_IDS.set(Some((self.trace_id, self.span_id)));
        // Starts the OpenTelemetry span now, while RecordIds hands out these ids.
        let _ = span.context();
        NEXT_IDS.set(None);
    }
}

thread_local! {
    /// The ids the next span started on this thread gets (set around `span.context()`).
    static NEXT_IDS: Cell<Option<([u8; 16], [u8; 8])>> = const { Cell::new(None) };
}

/// The OpenTelemetry SDK's id generator for the record spans: a record's span gets the
/// derived ids its outputs' traceparent headers carry; every other span random ones.
#[derive(Debug, Default)]
pub struct RecordIds(RandomIdGenerator);

impl IdGenerator for RecordIds {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.get() {
            Some((trace, _)) => TraceId::from_bytes(trace),
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_IDS.get() {
            Some((_, span)) => SpanId::from_bytes(span),
            None => self.0.new_span_id(),
        }
    }
}

/// Gives every output a `traceparent` (unless the processor set one): the processed
/// record's span as parent.
pub(crate) fn stamp(outputs: &mut [OutputRecord], trace: &RecordTrace) {
    let header = trace.child_header();
    for out in outputs {
        if !out.headers.iter().any(|(k, _)| k == TRACEPARENT) {
            out.headers
                .push((TRACEPARENT.to_string(), header.clone().into_bytes()));
        }
    }
}

/// Outputs of a punctuation (no input record): each joins its saga's trace by its own
/// `correlation_id`, as a child of a span named after the punctuation.
pub(crate) fn stamp_punctuation(outputs: &mut [OutputRecord], partition: i32, time: i64) {
    let span = span_id(&[
        b"punctuation",
        &partition.to_be_bytes(),
        &time.to_be_bytes(),
    ]);
    for out in outputs {
        if out.headers.iter().any(|(k, _)| k == TRACEPARENT) {
            continue;
        }
        let trace_id = match header(&out.headers, CORRELATION_ID) {
            Some(correlation) => trace_id_of(correlation),
            None => trace_id_of(&format!(
                "{}/{}",
                out.topic,
                String::from_utf8_lossy(&out.key)
            )),
        };
        let header = TraceParent {
            trace_id,
            parent_id: span,
            sampled: true,
        }
        .header();
        out.headers
            .push((TRACEPARENT.to_string(), header.into_bytes()));
    }
}

/// A UUID correlation id is the trace id itself (its 16 bytes); anything else is hashed.
pub fn trace_id_of(correlation: &str) -> [u8; 16] {
    if let Ok(u) = uuid::Uuid::parse_str(correlation)
        && !u.is_nil()
    {
        return *u.as_bytes();
    }
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, &[correlation.as_bytes()]);
    let lo = fnv1a(0x6c62_272e_07bb_0142, &[correlation.as_bytes()]);
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&hi.to_be_bytes());
    id[8..].copy_from_slice(&lo.to_be_bytes());
    if id == [0; 16] {
        id[15] = 1;
    }
    id
}

fn span_id(parts: &[&[u8]]) -> [u8; 8] {
    match fnv1a(0xcbf2_9ce4_8422_2325, parts) {
        0 => 1u64.to_be_bytes(),
        h => h.to_be_bytes(),
    }
}

fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The `traceparent` of a header list, if any (for tests and tools).
pub fn traceparent_of(headers: &[Header]) -> Option<TraceParent> {
    header(headers, TRACEPARENT).and_then(TraceParent::parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(headers: Vec<Header>) -> InputRecord<'a> {
        InputRecord {
            topic: "order-commands",
            partition: 2,
            offset: 41,
            timestamp: 0,
            key: None,
            value: None,
            headers,
        }
    }

    #[test]
    fn a_record_continues_its_traceparent_or_starts_the_trace_of_its_saga() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = RecordTrace::of(&record(vec![(TRACEPARENT.into(), incoming.into())]));
        assert_eq!(to_hex(&t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.parent_id.map(|p| to_hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        let child = TraceParent::parse(&t.child_header()).unwrap();
        assert_eq!((child.trace_id, child.parent_id), (t.trace_id, t.span_id));

        let saga = "7d3c9a1e-5b2f-4c8d-9e0a-1f2b3c4d5e6f";
        let t = RecordTrace::of(&record(vec![(CORRELATION_ID.into(), saga.into())]));
        assert_eq!(to_hex(&t.trace_id), saga.replace('-', ""));
        assert_eq!(t.parent_id, None);
        // Deterministic: the same record processed again gets the same span.
        let again = RecordTrace::of(&record(vec![(CORRELATION_ID.into(), saga.into())]));
        assert_eq!(t, again);
    }

    #[test]
    fn outputs_get_a_child_traceparent_unless_they_carry_one() {
        let t = RecordTrace::of(&record(vec![]));
        let out = |headers: Vec<Header>| OutputRecord {
            topic: "order-events".into(),
            key: b"k".to_vec(),
            value: vec![],
            timestamp: 0,
            headers,
        };
        let own = "00-11111111111111111111111111111111-2222222222222222-00";
        let mut outputs = vec![out(vec![]), out(vec![(TRACEPARENT.into(), own.into())])];
        stamp(&mut outputs, &t);
        assert_eq!(
            traceparent_of(&outputs[0].headers).unwrap().parent_id,
            t.span_id
        );
        assert_eq!(traceparent_of(&outputs[1].headers).unwrap().header(), own);

        let saga = "7d3c9a1e-5b2f-4c8d-9e0a-1f2b3c4d5e6f";
        let mut expiry = vec![out(vec![(CORRELATION_ID.into(), saga.into())])];
        stamp_punctuation(&mut expiry, 3, 1_000);
        let p = traceparent_of(&expiry[0].headers).unwrap();
        assert_eq!(to_hex(&p.trace_id), saga.replace('-', ""));
    }
}
