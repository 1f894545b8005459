//! A simulated carrier: for every shipment created it dispatches and then delivers it,
//! as a warehouse and a carrier would by sending commands. Command ids are derived from
//! the shipment event, so a restarted carrier never double-sends.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use erp_schemas::{AvroSerde, SchemaKind, wire};

use crate::publisher::{CommandPublisher, PublishError};

/// Handle of a running carrier thread.
pub struct Carrier {
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
    handle: Option<JoinHandle<Result<(), PublishError>>>,
}

fn derived(event_id: &str, what: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{event_id}/{what}").as_bytes(),
    )
    .to_string()
}

impl Carrier {
    /// Starts tailing the shipping events of `publisher`'s topics with consumer group
    /// `group` (committed offsets let a restarted carrier resume).
    pub fn start(
        bootstrap: &str,
        group: &str,
        serde: Arc<AvroSerde>,
        publisher: CommandPublisher,
    ) -> Result<Self, PublishError> {
        let consumer: BaseConsumer = crate::kafka::client()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("isolation.level", "read_committed")
            // Shipments become readable when the shipping processor's markers land: do
            // not let a parked fetch wait librdkafka's default 500 ms for more data.
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true")
            .create()
            .map_err(|e| PublishError::Kafka(e.to_string()))?;
        consumer
            .subscribe(&[&publisher.topics().shipping_events()])
            .map_err(|e| PublishError::Kafka(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let delivered = Arc::new(AtomicU64::new(0));
        let (s, d) = (stop.clone(), delivered.clone());
        let handle = std::thread::Builder::new()
            .name("carrier".into())
            .spawn(move || run(consumer, serde, publisher, s, d))
            .map_err(|e| PublishError::Kafka(e.to_string()))?;
        Ok(Self {
            stop,
            delivered,
            handle: Some(handle),
        })
    }

    /// Shipments dispatched and delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) -> Result<(), PublishError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(PublishError::Kafka("carrier thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn run(
    consumer: BaseConsumer,
    serde: Arc<AvroSerde>,
    publisher: CommandPublisher,
    stop: Arc<AtomicBool>,
    delivered: Arc<AtomicU64>,
) -> Result<(), PublishError> {
    let mut unflushed = false;
    while !stop.load(Ordering::Relaxed) {
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            if unflushed {
                publisher.flush()?;
                unflushed = false;
            }
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "carrier: consume error");
                continue;
            }
        };
        let Some(bytes) = msg.payload() else { continue };
        let event: wire::ShippingEvent = match serde.decode(SchemaKind::ShippingEvent, bytes) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "carrier: undecodable shipping event skipped");
                continue;
            }
        };
        if event.shipment_created.is_none() {
            continue;
        }
        let mut dispatch = wire::ShippingCommand::empty(
            derived(&event.event_id, "dispatch"),
            event.order_id.clone(),
            event.occurred_at,
        );
        dispatch.correlation_id = event.correlation_id.clone();
        dispatch.dispatch_shipment = Some(wire::DispatchShipment { note: None });
        publisher.shipping(&dispatch)?;
        let mut deliver = wire::ShippingCommand::empty(
            derived(&event.event_id, "deliver"),
            event.order_id.clone(),
            event.occurred_at,
        );
        deliver.correlation_id = event.correlation_id.clone();
        deliver.deliver_shipment = Some(wire::DeliverShipment { note: None });
        publisher.shipping(&deliver)?;
        unflushed = true;
        delivered.fetch_add(1, Ordering::Relaxed);
    }
    publisher.flush()
}
