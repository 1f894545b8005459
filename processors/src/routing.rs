//! Where a key's state lives, for interactive queries across instances (Kafka Streams'
//! `queryMetadataForKey`): the key's partition (Kafka's murmur2, as the producers use),
//! then the consumer group member that owns that partition of the store's source topic.
//! Members advertise their query API in their client id (`…@host:port`), so the group
//! assignment itself is the routing table — no extra coordination.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use erp_query_api::{KeyLocator, Owner, stores};
use erp_schemas::topics::Topics;
use erp_state_stores::StoreRegistry;

use crate::engine::partition_for;

/// Members of one group: (advertised address, assigned (topic, partition)s).
type Members = Vec<(Option<String>, Vec<(String, i32)>)>;

pub struct GroupLocator {
    consumer: BaseConsumer,
    topics: Topics,
    partitions: i32,
    registry: StoreRegistry,
    self_addr: String,
    cache: Mutex<HashMap<String, (Instant, Members)>>,
}

impl GroupLocator {
    pub fn new(
        bootstrap: &str,
        topics: Topics,
        partitions: i32,
        registry: StoreRegistry,
        self_addr: String,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer = erp_connectors::kafka::client()
            .set("bootstrap.servers", bootstrap)
            .create()?;
        Ok(Self {
            consumer,
            topics,
            partitions,
            registry,
            self_addr,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// (application id, source topic) of the processor that owns `store`.
    fn source_of(&self, store: &str) -> Option<(String, String)> {
        let t = &self.topics;
        let (ctx, topic) = match store {
            stores::ORDERS => ("order", t.order_commands()),
            stores::PRODUCTS => ("inventory", t.inventory_commands()),
            stores::PAYMENTS => ("payment", t.payment_commands()),
            stores::SHIPMENTS => ("shipping", t.shipping_commands()),
            stores::CUSTOMERS => ("customer", t.customer_commands()),
            _ => return None,
        };
        Some((t.application_id(ctx), topic))
    }

    /// The group's members (cached 500 ms); `None` when the broker did not answer.
    fn members(&self, group: &str) -> Option<Members> {
        let mut cache = self.cache.lock().expect("poisoned");
        if let Some((at, members)) = cache.get(group)
            && at.elapsed() < Duration::from_millis(500)
        {
            return Some(members.clone());
        }
        let members: Members = match self
            .consumer
            .fetch_group_list(Some(group), Duration::from_secs(2))
        {
            Ok(list) => list
                .groups()
                .iter()
                .flat_map(|g| g.members())
                .map(|m| {
                    let addr = m.client_id().rsplit_once('@').map(|(_, a)| a.to_string());
                    (
                        addr,
                        m.assignment().map(parse_assignment).unwrap_or_default(),
                    )
                })
                .collect(),
            Err(e) => {
                tracing::debug!(%group, error = %e, "group lookup failed");
                return None;
            }
        };
        cache.insert(group.to_string(), (Instant::now(), members.clone()));
        Some(members)
    }
}

impl KeyLocator for GroupLocator {
    fn locate(&self, store: &str, key: &str) -> Owner {
        let Some((group, topic)) = self.source_of(store) else {
            return Owner::Local;
        };
        let partition = partition_for(key.as_bytes(), self.partitions);
        if self.registry.partitions(store).contains(&partition) {
            return Owner::Local;
        }
        let owner = self
            .members(&group)
            .unwrap_or_default()
            .into_iter()
            .find(|(_, assigned)| assigned.iter().any(|(t, p)| *t == topic && *p == partition))
            .and_then(|(addr, _)| addr);
        match owner {
            // Assigned here but not open yet (restoring): wait.
            Some(addr) if addr == self.self_addr => Owner::Unknown,
            Some(addr) => Owner::Remote(format!("http://{addr}")),
            None => Owner::Unknown,
        }
    }

    fn local_partition(&self, store: &str, key: &str) -> Option<i32> {
        // Keyed stores only (the global customer table has no owner); no allocation:
        // this runs on every lookup.
        if !matches!(
            store,
            stores::ORDERS
                | stores::PRODUCTS
                | stores::PAYMENTS
                | stores::SHIPMENTS
                | stores::CUSTOMERS
        ) {
            return None;
        }
        let partition = partition_for(key.as_bytes(), self.partitions);
        self.registry.hosts(store, partition).then_some(partition)
    }

    fn peers(&self, store: &str) -> Result<Vec<String>, String> {
        let Some((group, _)) = self.source_of(store) else {
            return Ok(Vec::new());
        };
        let mut peers: Vec<String> = self
            .members(&group)
            .ok_or_else(|| {
                format!("the members of group {group} are unknown (broker unreachable)")
            })?
            .into_iter()
            .filter_map(|(addr, _)| addr)
            .filter(|addr| *addr != self.self_addr)
            .map(|addr| format!("http://{addr}"))
            .collect();
        peers.sort_unstable();
        peers.dedup();
        Ok(peers)
    }
}

/// Kafka's ConsumerProtocolAssignment: version, [topic, [partition]], user data.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    }
    let mut b = bytes;
    let mut out = Vec::new();
    let parse = |b: &mut &[u8], out: &mut Vec<(String, i32)>| -> Option<()> {
        i16_(b)?; // version
        for _ in 0..i32_(b)?.max(0) {
            let len = i16_(b)?.max(0) as usize;
            let topic = String::from_utf8_lossy(take(b, len)?).to_string();
            for _ in 0..i32_(b)?.max(0) {
                out.push((topic.clone(), i32_(b)?));
            }
        }
        Some(())
    };
    let _ = parse(&mut b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_consumer_assignments() {
        // version 1; 2 topics: "a" [0, 2], "bc" [1]; empty user data.
        let mut b = vec![0, 1, 0, 0, 0, 2];
        b.extend([0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend([0, 2, b'b', b'c', 0, 0, 0, 1, 0, 0, 0, 1]);
        b.extend([0, 0, 0, 0]);
        assert_eq!(
            parse_assignment(&b),
            vec![("a".into(), 0), ("a".into(), 2), ("bc".into(), 1)]
        );
        assert_eq!(parse_assignment(&[0, 1, 0]), vec![], "truncated: nothing");
    }
}
