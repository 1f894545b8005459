package erp.peer;

import java.nio.charset.StandardCharsets;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;

/** Small helpers over generic Avro records and saga headers. */
final class Avro {
    private Avro() {}

    static final Schema INVENTORY_COMMAND = Registry.schema("inventory-command.avsc");
    static final Schema INVENTORY_EVENT = Registry.schema("inventory-event.avsc");
    static final Schema ORDER_COMMAND = Registry.schema("order-command.avsc");
    static final Schema ORDER_EVENT = Registry.schema("order-event.avsc");
    static final Schema CUSTOMER = Registry.schema("customer.avsc");

    /** The non-null branch of an optional field's union (or the field's own schema). */
    static Schema branch(Schema record, String field) {
        Schema s = record.getField(field).schema();
        if (s.getType() == Schema.Type.UNION) {
            for (Schema t : s.getTypes()) {
                if (t.getType() != Schema.Type.NULL) {
                    return t;
                }
            }
        }
        return s;
    }

    /** A new record for the optional record field {@code field} of {@code parent}'s schema. */
    static GenericData.Record child(Schema parent, String field) {
        return new GenericData.Record(branch(parent, field));
    }

    static String str(Object o) {
        return o == null ? null : o.toString();
    }

    static GenericRecord rec(GenericRecord r, String field) {
        return (GenericRecord) r.get(field);
    }

    static Headers headers(String correlationId, String causationId) {
        RecordHeaders h = new RecordHeaders();
        h.add("correlation_id", correlationId.getBytes(StandardCharsets.UTF_8));
        h.add("causation_id", causationId.getBytes(StandardCharsets.UTF_8));
        return h;
    }
}
