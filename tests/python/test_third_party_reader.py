"""A stock Confluent client reads the saga's event topics.

Python confluent-kafka with its AvroDeserializer, pointed at the registry's
Confluent-compatible API, must decode every committed record of every event topic (all
five contexts) on
the broker (the integration tests leave plenty), and each record must carry exactly
one payload.
"""
import json
import os
import pathlib

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

BOOTSTRAP = os.environ.get("ERP_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
REGISTRY = os.environ.get("ERP_SCHEMA_REGISTRY_URL", "http://127.0.0.1:8081/apis/ccompat/v7")

SCHEMAS = pathlib.Path(__file__).resolve().parents[2] / "schemas" / "avro"
EVENT_TOPICS = ["order-events", "inventory-events", "payment-events", "shipping-events", "customer-events"]


def payload_fields(kind):
    """The envelope's optional record fields: exactly one is set per event."""
    schema = json.loads((SCHEMAS / f"{kind[:-1]}.avsc").read_text())
    return [f["name"] for f in schema["fields"]
            if isinstance(f["type"], list) and any(isinstance(t, dict) and t.get("type") == "record" for t in f["type"])]


PAYLOADS = {kind: payload_fields(kind) for kind in EVENT_TOPICS}


def event_topics():
    md = AdminClient({"bootstrap.servers": BOOTSTRAP}).list_topics(timeout=10)
    return sorted(t for t in md.topics if any(t.endswith(k) for k in EVENT_TOPICS))


def read_all(topic):
    consumer = Consumer({
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "python-third-party-reader",
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    md = consumer.list_topics(topic, timeout=10)
    parts = list(md.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    pending, out = set(parts), []
    while pending:
        msg = consumer.poll(5.0)
        if msg is None:
            raise AssertionError(f"{topic}: no end of partition reached")
        if msg.error():
            if msg.error().code() == -191:  # _PARTITION_EOF
                pending.discard(msg.partition())
                continue
            raise AssertionError(msg.error())
        out.append(msg)
    consumer.close()
    return out


def test_every_committed_event_decodes_with_the_confluent_avro_deserializer():
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": REGISTRY}))
    topics = event_topics()
    assert topics, "no event topics on the broker: run the integration tests or the demo first"
    decoded = 0
    for topic in topics:
        kind = next(k for k in EVENT_TOPICS if topic.endswith(k))
        for msg in read_all(topic):
            value = deserializer(msg.value(), SerializationContext(topic, MessageField.VALUE))
            assert value["event_id"], value
            set_fields = [f for f in PAYLOADS[kind] if value.get(f) is not None]
            assert len(set_fields) == 1, (topic, value)
            if value.get("order_created"):
                created = value["order_created"]
                assert created["total"].count(".") == 1 and len(created["total"].split(".")[1]) == 2
            decoded += 1
    assert decoded > 0
    print(f"decoded {decoded} events from {len(topics)} topics")
