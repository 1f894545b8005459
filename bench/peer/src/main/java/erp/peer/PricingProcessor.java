package erp.peer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * The pricing step: PlaceOrder commands in (keyed by order id), checked against the
 * customer table (a global store) and priced into OrderCreated on {@code peer-order-events}
 * plus one ReserveStock per line on {@code peer-inventory-commands} (keyed by SKU), as
 * {@code processors/src/order/processor.rs} + {@code saga.rs} do. Other order commands are skipped.
 */
public final class PricingProcessor implements Processor<String, byte[], String, byte[]> {
    public static final String ORDERS_STORE = "orders";
    public static final String PROCESSED_STORE = "processed-ids";
    public static final String CUSTOMERS_GLOBAL = "customer-table";
    public static final String EVENTS_SINK = "peer-order-events-sink";
    public static final String COMMANDS_SINK = "peer-inventory-commands-sink";
    /** The gateway token used when a PlaceOrder names none. */
    public static final String DEFAULT_PAYMENT_METHOD = "tok_visa";

    private static final Schema EV = Avro.ORDER_EVENT;
    private static final Schema IC = Avro.INVENTORY_COMMAND;
    private static final Schema CREATED = Avro.branch(EV, "order_created");
    private static final Schema LINE = CREATED.getField("lines").schema().getElementType();
    private static final Schema ADDRESS = CREATED.getField("shipping_address").schema();
    private static final String[] PAYLOADS = {"place_order", "cancel_order", "update_order", "confirm_order"};

    private final Registry registry;
    private final Registry.Writer events;
    private final Registry.Writer commands;
    private ProcessorContext<String, byte[]> ctx;
    private KeyValueStore<String, byte[]> orders;
    private KeyValueStore<String, byte[]> processed;
    private KeyValueStore<String, byte[]> customers;

    public PricingProcessor(Registry registry, Registry.Writer events, Registry.Writer commands) {
        this.registry = registry;
        this.events = events;
        this.commands = commands;
    }

    @Override
    public void init(ProcessorContext<String, byte[]> context) {
        this.ctx = context;
        this.orders = context.getStateStore(ORDERS_STORE);
        this.processed = context.getStateStore(PROCESSED_STORE);
        this.customers = context.getStateStore(CUSTOMERS_GLOBAL);
    }

    /** A validated order line. */
    record Line(String sku, String productName, int quantity, BigDecimal unitPrice, BigDecimal unitWeightKg) {}

    /** A validated PlaceOrder (the Rust {@code PlaceOrder}, before the tier lookup). */
    record Place(String customerId, String currency, List<Line> lines, String street, String city,
                 String postalCode, String country, String paymentMethod, boolean express,
                 boolean manualConfirmation) {}

    private void malformed(String reason) {
        RecordMetadata m = ctx.recordMetadata().orElse(null);
        Stats.malformed(m == null ? "?" : m.topic(), m == null ? -1 : m.partition(), m == null ? -1 : m.offset(),
                reason);
    }

    @Override
    public void process(Record<String, byte[]> record) {
        GenericRecord cmd;
        try {
            cmd = registry.decode(record.value(), Avro.ORDER_COMMAND);
        } catch (Registry.BadRecord e) {
            malformed(e.getMessage());
            return;
        }
        GenericRecord w = Avro.rec(cmd, "place_order");
        if (w == null) {
            Stats.SKIPPED_PAYLOAD.incrementAndGet();
            return;
        }
        Stats.PROCESSED.incrementAndGet();
        String commandId = Avro.str(cmd.get("command_id"));
        long at = (Long) cmd.get("issued_at");
        String correlation = cmd.get("correlation_id") != null ? Avro.str(cmd.get("correlation_id")) : commandId;
        if (processed.get(commandId) != null) {
            Stats.DUPLICATES.incrementAndGet();
            return;
        }
        processed.put(commandId, Long.toString(at).getBytes(StandardCharsets.UTF_8));
        String rawOrderId = Avro.str(cmd.get("order_id"));
        String key;
        try {
            key = Values.parseUuid("order_id", rawOrderId);
        } catch (Values.ValueError e) {
            reject(rawOrderId, 0, commandId, correlation, at, e.getMessage());
            return;
        }
        byte[] stored = orders.get(key);
        long version = stored == null ? 0 : storedVersion(stored);
        Object expected = cmd.get("expected_version");
        if (expected != null && (Long) expected != version) {
            reject(key, version, commandId, correlation, at,
                    "expected version " + expected + ", order is at version " + version);
            return;
        }
        int set = 0;
        for (String p : PAYLOADS) {
            if (cmd.get(p) != null) {
                set++;
            }
        }
        if (set != 1) {
            reject(key, version, commandId, correlation, at,
                    "a command carries exactly one payload, this one has " + set);
            return;
        }
        Place place;
        try {
            place = placeOrder(w);
        } catch (Values.ValueError e) {
            reject(key, version, commandId, correlation, at, e.getMessage());
            return;
        }
        Pricing.Tier tier = null;
        byte[] row = customers.get(place.customerId());
        if (row != null) {
            try {
                GenericRecord c = registry.decode(row, Avro.CUSTOMER);
                tier = Pricing.Tier.parse(Avro.str(c.get("tier")));
                if (tier == null) {
                    tier = Pricing.Tier.BRONZE;
                }
            } catch (Registry.BadRecord e) {
                malformed("customer row " + place.customerId() + ": " + e.getMessage());
                return;
            }
        }
        // decide(): an existing order, an unknown customer, no lines, no payment method.
        if (stored != null) {
            reject(key, version, commandId, correlation, at, "order " + key + " already exists");
            return;
        }
        if (tier == null) {
            reject(key, version, commandId, correlation, at,
                    "unknown customer " + place.customerId() + ": register the customer before ordering");
            return;
        }
        if (place.lines().isEmpty()) {
            reject(key, version, commandId, correlation, at, "order must have at least one line");
            return;
        }
        String paymentMethod = place.paymentMethod().trim();
        if (paymentMethod.isEmpty()) {
            reject(key, version, commandId, correlation, at, "invalid order: payment method must not be empty");
            return;
        }
        List<Pricing.Line> priced = new ArrayList<>(place.lines().size());
        for (Line l : place.lines()) {
            priced.add(new Pricing.Line(l.quantity(), l.unitPrice(), l.unitWeightKg()));
        }
        Pricing.Result p;
        try {
            p = Pricing.price(priced, tier, place.postalCode(), place.express());
        } catch (Values.ValueError e) {
            reject(key, version, commandId, correlation, at, "invalid order: " + e.getMessage());
            return;
        }
        created(key, place, tier, paymentMethod, p, commandId, correlation, at);
    }

    private static long storedVersion(byte[] stored) {
        try {
            return InventoryProcessor.JSON.readTree(stored).get("version").asLong();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** {@code place_order}: the wire command into value objects, with the Rust error messages. */
    static Place placeOrder(GenericRecord w) throws Values.ValueError {
        String currency = Avro.str(w.get("currency"));
        if (!currency.equals("USD") && !currency.equals("EUR") && !currency.equals("CNY")) {
            throw new Values.ValueError("unsupported currency " + Values.debug(currency)
                    + " (supported: USD, EUR, CNY)");
        }
        String customerId = Values.parseUuid("customer_id", Avro.str(w.get("customer_id")));
        @SuppressWarnings("unchecked")
        List<GenericRecord> wireLines = (List<GenericRecord>) w.get("lines");
        List<Line> lines = new ArrayList<>(wireLines.size());
        for (GenericRecord l : wireLines) {
            String ws = Avro.str(l.get("unit_weight_kg"));
            BigDecimal weight;
            if (ws == null) {
                weight = Pricing.DEFAULT_UNIT_WEIGHT_KG;
            } else {
                weight = Values.decimal(ws);
                if (weight == null) {
                    throw new Values.ValueError("amount " + Values.debug(ws) + " is not a decimal number");
                }
                if (weight.signum() < 0) {
                    throw new Values.ValueError("amount " + weight.toPlainString() + " is negative");
                }
            }
            String sku = Values.parseSku(Avro.str(l.get("sku")));
            int qty = Values.quantity((Integer) l.get("quantity"));
            BigDecimal price = Values.money(Avro.str(l.get("unit_price")));
            lines.add(new Line(sku, Avro.str(l.get("product_name")), qty, price, weight));
        }
        GenericRecord a = Avro.rec(w, "shipping_address");
        String street = Avro.str(a.get("street"));
        String city = Avro.str(a.get("city"));
        String postal = Avro.str(a.get("postal_code"));
        String country = Avro.str(a.get("country"));
        if (street.trim().isEmpty()) {
            throw new Values.ValueError("street must not be empty");
        }
        if (city.trim().isEmpty()) {
            throw new Values.ValueError("city must not be empty");
        }
        if (country.trim().isEmpty()) {
            throw new Values.ValueError("country must not be empty");
        }
        String pc = postal.trim();
        boolean pcOk = pc.length() >= 3 && pc.length() <= 10;
        for (int i = 0; pcOk && i < pc.length(); i++) {
            char c = pc.charAt(i);
            pcOk = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ' ' || c == '-';
        }
        if (!pcOk) {
            throw new Values.ValueError("postal code " + Values.debug(postal)
                    + " is invalid: 3-10 characters of letters, digits, ' ' or '-'");
        }
        Object pm = w.get("payment_method");
        String payment = pm == null ? DEFAULT_PAYMENT_METHOD : pm.toString();
        boolean express = Pricing.parseExpress(Avro.str(w.get("shipping_method")));
        Object mc = w.get("manual_confirmation");
        return new Place(customerId, currency, lines, street.trim(), city.trim(), pc, country.trim(), payment,
                express, mc != null && (Boolean) mc);
    }

    private void created(String key, Place place, Pricing.Tier tier, String paymentMethod, Pricing.Result p,
                         String commandId, String correlation, long at) {
        String eventId = Values.derivedId(commandId, "order-event", 0);
        GenericData.Record out = new GenericData.Record(EV);
        out.put("event_id", eventId);
        out.put("order_id", key);
        out.put("version", 1L);
        out.put("occurred_at", at);
        out.put("correlation_id", correlation);
        out.put("causation_id", commandId);
        out.put("status", "PENDING");
        GenericData.Record c = new GenericData.Record(CREATED);
        c.put("customer_id", place.customerId());
        c.put("customer_tier", tier.name());
        c.put("currency", place.currency());
        List<GenericRecord> lines = new ArrayList<>(place.lines().size());
        List<Map<String, Object>> storedLines = new ArrayList<>(place.lines().size());
        for (Line l : place.lines()) {
            GenericData.Record wl = new GenericData.Record(LINE);
            wl.put("sku", l.sku());
            wl.put("product_name", l.productName());
            wl.put("quantity", l.quantity());
            wl.put("unit_price", Values.wire(l.unitPrice()));
            wl.put("unit_weight_kg", Values.normalized(l.unitWeightKg()));
            lines.add(wl);
            Map<String, Object> sl = new LinkedHashMap<>();
            sl.put("sku", l.sku());
            sl.put("product_name", l.productName());
            sl.put("quantity", l.quantity());
            sl.put("unit_price", l.unitPrice().toPlainString());
            sl.put("unit_weight_kg", l.unitWeightKg().toPlainString());
            storedLines.add(sl);
        }
        c.put("lines", new GenericData.Array<>(CREATED.getField("lines").schema(), lines));
        GenericData.Record addr = new GenericData.Record(ADDRESS);
        addr.put("street", place.street());
        addr.put("city", place.city());
        addr.put("postal_code", place.postalCode());
        addr.put("country", place.country());
        c.put("shipping_address", addr);
        c.put("subtotal", Values.wire(p.subtotal()));
        c.put("discount", Values.wire(p.discount()));
        c.put("tax", Values.wire(p.tax()));
        c.put("shipping_cost", Values.wire(p.shipping()));
        c.put("total", Values.wire(p.total()));
        c.put("payment_method", paymentMethod);
        c.put("shipping_method", place.express() ? "EXPRESS" : "STANDARD");
        c.put("manual_confirmation", place.manualConfirmation());
        out.put("order_created", c);
        ctx.forward(new Record<>(key, events.encode(out), at, Avro.headers(correlation, commandId)), EVENTS_SINK);
        Stats.EVENTS_OUT.incrementAndGet();

        // saga.rs: OrderCreated → one ReserveStock per line (line numbers from 0).
        GenericData.Record reserve = null;
        for (int j = 0; j < place.lines().size(); j++) {
            Line l = place.lines().get(j);
            GenericData.Record ic = new GenericData.Record(IC);
            ic.put("command_id", Values.derivedId(eventId, "saga-command", j));
            ic.put("sku", l.sku());
            ic.put("issued_at", at);
            ic.put("correlation_id", correlation);
            reserve = Avro.child(IC, "reserve_stock");
            reserve.put("order_id", key);
            reserve.put("line_no", j);
            reserve.put("quantity", l.quantity());
            ic.put("reserve_stock", reserve);
            ctx.forward(new Record<>(l.sku(), commands.encode(ic), at, Avro.headers(correlation, eventId)),
                    COMMANDS_SINK);
            Stats.EVENTS_OUT.incrementAndGet();
        }

        // The priced order (the peer keeps what this step needs, not the whole saga state).
        Map<String, Object> order = new LinkedHashMap<>();
        order.put("version", 1);
        order.put("id", key);
        order.put("customer_id", place.customerId());
        order.put("customer_tier", tier.name());
        order.put("status", "PENDING");
        order.put("currency", place.currency());
        order.put("lines", storedLines);
        order.put("first_line_no", 0);
        order.put("shipping_address", Map.of("street", place.street(), "city", place.city(),
                "postal_code", place.postalCode(), "country", place.country()));
        Map<String, Object> pricing = new LinkedHashMap<>();
        pricing.put("subtotal", Values.wire(p.subtotal()));
        pricing.put("discount", Values.wire(p.discount()));
        pricing.put("tax", Values.wire(p.tax()));
        pricing.put("shipping", Values.wire(p.shipping()));
        pricing.put("total", Values.wire(p.total()));
        pricing.put("total_weight_kg", p.totalWeightKg().toPlainString());
        order.put("pricing", pricing);
        order.put("payment_method", paymentMethod);
        order.put("shipping_method", place.express() ? "EXPRESS" : "STANDARD");
        order.put("manual_confirmation", place.manualConfirmation());
        order.put("correlation_id", correlation);
        order.put("created_at", at);
        order.put("updated_at", at);
        try {
            orders.put(key, InventoryProcessor.JSON.writeValueAsBytes(order));
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A command that is not applied gets a rejection event on the order's event topic. */
    private void reject(String key, long version, String commandId, String correlation, long at, String reason) {
        Stats.REJECTED.incrementAndGet();
        GenericData.Record out = new GenericData.Record(EV);
        out.put("event_id", Values.derivedId(commandId, "rejection", 0));
        out.put("order_id", key);
        out.put("version", version);
        out.put("occurred_at", at);
        out.put("correlation_id", correlation);
        out.put("causation_id", commandId);
        GenericData.Record r = Avro.child(EV, "command_rejected");
        r.put("command_id", commandId);
        r.put("reason", reason);
        out.put("command_rejected", r);
        ctx.forward(new Record<>(key, events.encode(out), at, Avro.headers(correlation, commandId)), EVENTS_SINK);
        Stats.EVENTS_OUT.incrementAndGet();
    }
}
