package erp.peer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.PropertyNamingStrategies;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The inventory step: InventoryCommand in (keyed by SKU); InventoryEvent out to
 * {@code peer-inventory-events} (by SKU) and the saga's replies to
 * {@code peer-order-replies} (by order id). Mirrors {@code processors/src/inventory/processor.rs}
 * (without the expiry punctuation: ExpireReservation commands in the input are applied).
 */
public final class InventoryProcessor implements Processor<String, byte[], String, byte[]> {
    public static final String PRODUCTS_STORE = "products";
    public static final String PROCESSED_STORE = "processed-ids";
    public static final String EVENTS_SINK = "peer-inventory-events-sink";
    public static final String REPLIES_SINK = "peer-order-replies-sink";

    static final ObjectMapper JSON = new ObjectMapper()
            .setPropertyNamingStrategy(PropertyNamingStrategies.SNAKE_CASE);

    private static final Schema EV = Avro.INVENTORY_EVENT;
    private final Registry registry;
    private final Registry.Writer events;
    private final Registry.Writer replies;
    private ProcessorContext<String, byte[]> ctx;
    private KeyValueStore<String, byte[]> products;
    private KeyValueStore<String, byte[]> processed;

    public InventoryProcessor(Registry registry, Registry.Writer events, Registry.Writer replies) {
        this.registry = registry;
        this.events = events;
        this.replies = replies;
    }

    @Override
    public void init(ProcessorContext<String, byte[]> context) {
        this.ctx = context;
        this.products = context.getStateStore(PRODUCTS_STORE);
        this.processed = context.getStateStore(PROCESSED_STORE);
    }

    @Override
    public void process(Record<String, byte[]> record) {
        GenericRecord cmd;
        try {
            cmd = registry.decode(record.value(), Avro.INVENTORY_COMMAND);
        } catch (Registry.BadRecord e) {
            RecordMetadata m = ctx.recordMetadata().orElse(null);
            Stats.malformed(m == null ? "?" : m.topic(), m == null ? -1 : m.partition(), m == null ? -1 : m.offset(),
                    e.getMessage());
            return;
        }
        Stats.PROCESSED.incrementAndGet();
        String commandId = Avro.str(cmd.get("command_id"));
        long issuedAt = (Long) cmd.get("issued_at");
        if (processed.get(commandId) != null) {
            Stats.DUPLICATES.incrementAndGet();
            return;
        }
        processed.put(commandId, Long.toString(issuedAt).getBytes(StandardCharsets.UTF_8));
        String correlation = cmd.get("correlation_id") != null ? Avro.str(cmd.get("correlation_id")) : commandId;
        String rawSku = Avro.str(cmd.get("sku"));
        String sku;
        try {
            sku = Values.parseSku(rawSku);
        } catch (Values.ValueError e) {
            reject(cmd, commandId, rawSku, issuedAt, correlation, 0, e.getMessage());
            return;
        }
        Inventory.Product state = load(sku);
        long version = state == null ? 0 : state.version;
        Inventory.Cmd command;
        try {
            command = toDomain(cmd);
        } catch (Values.ValueError e) {
            // A saga request must always be answered, or its order waits forever.
            Inventory.Ev answer = refusal(cmd, state, e.getMessage());
            if (answer != null) {
                emit(sku, state, List.of(answer), cmd, commandId, issuedAt, correlation);
            } else {
                reject(cmd, commandId, rawSku, issuedAt, correlation, version, e.getMessage());
            }
            return;
        }
        List<Inventory.Ev> evs;
        try {
            evs = Inventory.decide(sku, state, command, issuedAt);
        } catch (Inventory.Rejection r) {
            reject(cmd, commandId, rawSku, issuedAt, correlation, version, r.getMessage());
            return;
        }
        emit(sku, state, evs, cmd, commandId, issuedAt, correlation);
    }

    private Inventory.Product load(String sku) {
        byte[] b = products.get(sku);
        if (b == null) {
            return null;
        }
        try {
            return JSON.readValue(b, Inventory.Product.class);
        } catch (IOException e) {
            throw new UncheckedIOException("stored product " + sku + " does not deserialise", e);
        }
    }

    private void emit(String sku, Inventory.Product state, List<Inventory.Ev> evs, GenericRecord cmd,
                      String commandId, long issuedAt, String correlation) {
        GenericRecord reserve = Avro.rec(cmd, "reserve_stock");
        // Holds of a channel (the gRPC service) are not the saga's: no order replies.
        boolean channelRequest = reserve != null && reserve.get("channel") != null;
        Headers headers = Avro.headers(correlation, commandId);
        for (int i = 0; i < evs.size(); i++) {
            Inventory.Ev ev = evs.get(i);
            String replyTo = ev.replyTo();
            if (replyTo != null) {
                Inventory.Hold h = state == null ? null : state.holds.get(replyTo);
                if (channelRequest || (h != null && h.channel != null)) {
                    replyTo = null;
                }
            }
            state = Inventory.evolve(sku, state, ev);
            long version = state == null ? 0 : state.version;
            String eventId = Values.derivedId(commandId, "inventory-event", i);
            GenericData.Record out = toWire(eventId, sku, version, issuedAt, ev);
            out.put("correlation_id", correlation);
            out.put("causation_id", commandId);
            ctx.forward(new Record<>(sku, events.encode(out), issuedAt, headers), EVENTS_SINK);
            Stats.EVENTS_OUT.incrementAndGet();
            if (replyTo != null) {
                ctx.forward(new Record<>(replyTo, replies.encode(out), issuedAt, headers), REPLIES_SINK);
                Stats.EVENTS_OUT.incrementAndGet();
            }
        }
        if (state != null) {
            try {
                products.put(sku, JSON.writeValueAsBytes(state));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
    }

    private void reject(GenericRecord cmd, String commandId, String rawSku, long issuedAt, String correlation,
                        long version, String reason) {
        Stats.REJECTED.incrementAndGet();
        GenericData.Record out = envelope(Values.derivedId(commandId, "rejection", 0), rawSku, version, issuedAt);
        out.put("correlation_id", correlation);
        out.put("causation_id", commandId);
        GenericData.Record r = Avro.child(EV, "command_rejected");
        r.put("command_id", commandId);
        r.put("reason", reason);
        out.put("command_rejected", r);
        ctx.forward(new Record<>(rawSku, events.encode(out), issuedAt, Avro.headers(correlation, commandId)),
                EVENTS_SINK);
        Stats.EVENTS_OUT.incrementAndGet();
    }

    /** The business answer to a saga request that is itself invalid. */
    static Inventory.Ev refusal(GenericRecord cmd, Inventory.Product state, String reason) {
        GenericRecord r = Avro.rec(cmd, "reserve_stock");
        if (r != null) {
            String orderId;
            try {
                orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
            } catch (Values.ValueError e) {
                return null;
            }
            Inventory.Ev e = new Inventory.Ev(Inventory.EvKind.REJECTED);
            e.orderId = orderId;
            e.lineNo = Math.max(0, (Integer) r.get("line_no"));
            e.quantity = Math.max(0, (Integer) r.get("quantity"));
            e.available = state == null ? 0 : state.available();
            e.reason = reason;
            return e;
        }
        r = Avro.rec(cmd, "commit_reservation");
        if (r != null) {
            String orderId;
            try {
                orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
            } catch (Values.ValueError e) {
                return null;
            }
            Inventory.Ev e = new Inventory.Ev(Inventory.EvKind.COMMIT_REJECTED);
            e.orderId = orderId;
            e.reason = reason;
            return e;
        }
        return null;
    }

    private static long nonNegative(String field, Object n) throws Values.ValueError {
        int v = (Integer) n;
        if (v < 0) {
            throw new Values.ValueError(field + " must not be negative, got " + v);
        }
        return v;
    }

    private static String warehouse(Object w) {
        return w == null ? Inventory.DEFAULT_WAREHOUSE : w.toString();
    }

    private static final String[] PAYLOADS = {
        "register_product", "restock", "reserve_stock", "release_stock", "adjust_stock",
        "commit_reservation", "return_stock", "expire_reservation"
    };

    /** {@code to_domain}: the wire command into a validated domain command. */
    static Inventory.Cmd toDomain(GenericRecord cmd) throws Values.ValueError {
        int set = 0;
        for (String p : PAYLOADS) {
            if (cmd.get(p) != null) {
                set++;
            }
        }
        if (set != 1) {
            throw new Values.ValueError("a command carries exactly one payload, this one has " + set);
        }
        GenericRecord r;
        if ((r = Avro.rec(cmd, "register_product")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.REGISTER);
            c.name = Avro.str(r.get("name"));
            if (c.name.trim().isEmpty()) {
                throw new Values.ValueError("product name must not be empty");
            }
            String w = Avro.str(r.get("unit_weight_kg"));
            if (w == null) {
                c.unitWeightKg = Pricing.DEFAULT_UNIT_WEIGHT_KG;
            } else {
                BigDecimal d = Values.decimal(w);
                if (d == null || d.signum() < 0) {
                    throw new Values.ValueError("unit weight " + Values.debug(w) + " is not a non-negative decimal");
                }
                c.unitWeightKg = d;
            }
            c.warehouse = warehouse(r.get("warehouse"));
            c.initialStock = nonNegative("initial stock", r.get("initial_stock"));
            c.lowStockThreshold = nonNegative("low stock threshold", r.get("low_stock_threshold"));
            Object rp = r.get("reorder_point");
            c.reorderPoint = nonNegative("reorder point", rp == null ? 0 : rp);
            Object rq = r.get("reorder_quantity");
            c.reorderQuantity = nonNegative("reorder quantity", rq == null ? 0 : rq);
            return c;
        }
        if ((r = Avro.rec(cmd, "restock")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.RESTOCK);
            c.warehouse = warehouse(r.get("warehouse"));
            c.quantity = Values.quantity((Integer) r.get("quantity"));
            return c;
        }
        if ((r = Avro.rec(cmd, "reserve_stock")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.RESERVE);
            c.orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
            c.lineNo = (int) nonNegative("line number", r.get("line_no"));
            c.quantity = Values.quantity((Integer) r.get("quantity"));
            c.channel = Avro.str(r.get("channel"));
            return c;
        }
        if ((r = Avro.rec(cmd, "release_stock")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.RELEASE);
            c.orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
            c.reason = Avro.str(r.get("reason"));
            c.channel = Avro.str(r.get("channel"));
            return c;
        }
        if ((r = Avro.rec(cmd, "adjust_stock")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.ADJUST);
            c.warehouse = Avro.str(r.get("warehouse"));
            c.counted = nonNegative("counted quantity", r.get("counted"));
            c.reason = Avro.str(r.get("reason"));
            return c;
        }
        if ((r = Avro.rec(cmd, "commit_reservation")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.COMMIT);
            c.orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
            return c;
        }
        if ((r = Avro.rec(cmd, "return_stock")) != null) {
            Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.RETURN);
            c.orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
            c.quantity = Values.quantity((Integer) r.get("quantity"));
            c.reason = Avro.str(r.get("reason"));
            return c;
        }
        r = Avro.rec(cmd, "expire_reservation");
        Inventory.Cmd c = new Inventory.Cmd(Inventory.CmdKind.EXPIRE);
        c.orderId = Values.parseUuid("order_id", Avro.str(r.get("order_id")));
        c.hold = Avro.str(r.get("hold"));
        return c;
    }

    private static GenericData.Record envelope(String eventId, String sku, long version, long at) {
        GenericData.Record w = new GenericData.Record(EV);
        w.put("event_id", eventId);
        w.put("sku", sku);
        w.put("version", version);
        w.put("occurred_at", at);
        return w;
    }

    /** {@code to_wire}: the event as an InventoryEvent record. */
    static GenericData.Record toWire(String eventId, String sku, long version, long at, Inventory.Ev e) {
        GenericData.Record w = envelope(eventId, sku, version, at);
        GenericData.Record p;
        switch (e.kind) {
            case REGISTERED -> {
                p = Avro.child(EV, "product_registered");
                p.put("name", e.name);
                p.put("on_hand", (int) e.onHand);
                p.put("low_stock_threshold", (int) e.lowStockThreshold);
                p.put("unit_weight_kg", Values.normalized(e.unitWeightKg));
                p.put("warehouse", e.warehouse);
                p.put("reorder_point", (int) e.reorderPoint);
                p.put("reorder_quantity", (int) e.reorderQuantity);
                w.put("product_registered", p);
            }
            case RESTOCKED -> {
                p = Avro.child(EV, "stock_restocked");
                p.put("quantity", (int) e.quantity);
                p.put("on_hand", (int) e.onHand);
                p.put("available", (int) e.available);
                p.put("warehouse", e.warehouse);
                w.put("stock_restocked", p);
            }
            case ADJUSTED -> {
                p = Avro.child(EV, "stock_adjusted");
                p.put("warehouse", e.warehouse);
                p.put("from_quantity", (int) e.from);
                p.put("to_quantity", (int) e.to);
                p.put("reason", e.reason);
                p.put("available", (int) e.available);
                w.put("stock_adjusted", p);
            }
            case RESERVED -> {
                p = Avro.child(EV, "stock_reserved");
                p.put("order_id", e.orderId);
                p.put("line_no", e.lineNo);
                p.put("quantity", (int) e.quantity);
                p.put("available", (int) e.available);
                Schema arr = Avro.branch(p.getSchema(), "allocation");
                List<GenericRecord> alloc = new ArrayList<>(e.allocation.size());
                for (Map.Entry<String, Long> a : e.allocation.entrySet()) {
                    GenericData.Record wq = new GenericData.Record(arr.getElementType());
                    wq.put("warehouse", a.getKey());
                    wq.put("quantity", (int) (long) a.getValue());
                    alloc.add(wq);
                }
                p.put("allocation", new GenericData.Array<>(arr, alloc));
                w.put("stock_reserved", p);
            }
            case REJECTED -> {
                p = Avro.child(EV, "stock_rejected");
                p.put("order_id", e.orderId);
                p.put("line_no", e.lineNo);
                p.put("quantity", (int) e.quantity);
                p.put("available", (int) e.available);
                p.put("reason", e.reason);
                w.put("stock_rejected", p);
            }
            case RELEASED -> {
                p = Avro.child(EV, "stock_released");
                p.put("order_id", e.orderId);
                p.put("quantity", (int) e.quantity);
                p.put("available", (int) e.available);
                p.put("reason", e.reason);
                w.put("stock_released", p);
            }
            case EXPIRED -> {
                p = Avro.child(EV, "reservation_expired");
                p.put("order_id", e.orderId);
                p.put("quantity", (int) e.quantity);
                p.put("available", (int) e.available);
                w.put("reservation_expired", p);
            }
            case COMMITTED -> {
                p = Avro.child(EV, "stock_committed");
                p.put("order_id", e.orderId);
                p.put("quantity", (int) e.quantity);
                p.put("on_hand", (int) e.onHand);
                p.put("available", (int) e.available);
                w.put("stock_committed", p);
            }
            case COMMIT_REJECTED -> {
                p = Avro.child(EV, "stock_commit_rejected");
                p.put("order_id", e.orderId);
                p.put("reason", e.reason);
                w.put("stock_commit_rejected", p);
            }
            case RETURNED -> {
                p = Avro.child(EV, "stock_returned");
                p.put("order_id", e.orderId);
                p.put("warehouse", e.warehouse);
                p.put("quantity", (int) e.quantity);
                p.put("on_hand", (int) e.onHand);
                p.put("available", (int) e.available);
                w.put("stock_returned", p);
            }
            case LOW_STOCK -> {
                p = Avro.child(EV, "low_stock_warning");
                p.put("available", (int) e.available);
                p.put("threshold", (int) e.threshold);
                w.put("low_stock_warning", p);
            }
            case REORDER_SUGGESTED -> {
                p = Avro.child(EV, "reorder_suggested");
                p.put("available", (int) e.available);
                p.put("reorder_point", (int) e.reorderPoint);
                p.put("quantity", (int) e.quantity);
                w.put("reorder_suggested", p);
            }
            default -> throw new IllegalStateException("unhandled " + e.kind);
        }
        return w;
    }
}
