package erp.peer;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * The product aggregate as a pure decider: a line-by-line mirror of
 * {@code processors/src/inventory/decider.rs} ({@code decide}, {@code evolve},
 * {@code allocate}, {@code warnings}). Stored as JSON in the {@code products} store.
 */
public final class Inventory {
    private Inventory() {}

    public static final String DEFAULT_WAREHOUSE = "main";
    static final long MAX_STOCK = Integer.MAX_VALUE;

    public static final class Stock {
        public long onHand;
        public long reserved;

        public Stock() {}

        Stock(long onHand, long reserved) {
            this.onHand = onHand;
            this.reserved = reserved;
        }
    }

    /** Stock held for one order: per line, units per warehouse. */
    public static final class Hold {
        public TreeMap<Integer, TreeMap<String, Long>> lines = new TreeMap<>();
        public long reservedAt;
        public String channel;

        public String id() {
            int first = lines.isEmpty() ? 0 : lines.firstKey();
            return reservedAt + "/" + first;
        }

        public long quantity() {
            long q = 0;
            for (Map<String, Long> a : lines.values()) {
                for (long n : a.values()) {
                    q += n;
                }
            }
            return q;
        }
    }

    public static final class Product {
        public String sku;
        public String name;
        public TreeMap<String, Stock> warehouses = new TreeMap<>();
        public long lowStockThreshold;
        public long reorderPoint;
        public long reorderQuantity;
        public String unitWeightKg;
        /** In-flight holds by order id. */
        public TreeMap<String, Hold> holds = new TreeMap<>();
        public long version;

        public long onHand() {
            long n = 0;
            for (Stock s : warehouses.values()) {
                n += s.onHand;
            }
            return n;
        }

        public long reserved() {
            long n = 0;
            for (Stock s : warehouses.values()) {
                n += s.reserved;
            }
            return n;
        }

        public long available() {
            return onHand() - reserved();
        }
    }

    public enum CmdKind { REGISTER, RESTOCK, ADJUST, RESERVE, RELEASE, COMMIT, RETURN, EXPIRE }

    /** A validated command (the Rust {@code InventoryCommand}). */
    public static final class Cmd {
        public CmdKind kind;
        public String name;
        public String warehouse;
        public long initialStock;
        public long lowStockThreshold;
        public long reorderPoint;
        public long reorderQuantity;
        public BigDecimal unitWeightKg;
        public long quantity;
        public long counted;
        public String reason;
        public String orderId;
        public int lineNo;
        public String channel;
        public String hold;

        public Cmd(CmdKind kind) {
            this.kind = kind;
        }
    }

    public enum EvKind {
        REGISTERED, RESTOCKED, ADJUSTED, RESERVED, REJECTED, RELEASED, EXPIRED, COMMITTED,
        COMMIT_REJECTED, RETURNED, LOW_STOCK, REORDER_SUGGESTED
    }

    /** An event (the Rust {@code InventoryEvent}); unused fields stay at their defaults. */
    public static final class Ev {
        public final EvKind kind;
        public String name;
        public String warehouse;
        public long onHand;
        public long lowStockThreshold;
        public long reorderPoint;
        public long reorderQuantity;
        public BigDecimal unitWeightKg;
        public long quantity;
        public long available;
        public long from;
        public long to;
        public String reason;
        public String orderId;
        public int lineNo;
        public TreeMap<String, Long> allocation;
        public long at;
        public String channel;
        public long threshold;

        Ev(EvKind kind) {
            this.kind = kind;
        }

        /** The order this event answers, if the saga waits for it. */
        public String replyTo() {
            return switch (kind) {
                case RESERVED, REJECTED, EXPIRED, COMMITTED, COMMIT_REJECTED -> orderId;
                default -> null;
            };
        }
    }

    /** Why a command was not applied (the Rust {@code Rejection}'s Display). */
    public static final class Rejection extends Exception {
        public Rejection(String message) {
            super(message, null, false, false);
        }
    }

    /**
     * One warehouse if any can fill the whole line (the one with most available, ties by
     * name); otherwise split, most available first. Null when all together cannot.
     */
    public static TreeMap<String, Long> allocate(TreeMap<String, Stock> warehouses, long quantity) {
        List<Map.Entry<String, Long>> byAvailable = new ArrayList<>(warehouses.size());
        for (Map.Entry<String, Stock> e : warehouses.entrySet()) {
            long a = e.getValue().onHand - e.getValue().reserved;
            if (a > 0) {
                byAvailable.add(Map.entry(e.getKey(), a));
            }
        }
        // Stable sort: equal availability keeps name order.
        byAvailable.sort(Comparator.comparingLong((Map.Entry<String, Long> e) -> e.getValue()).reversed());
        TreeMap<String, Long> allocation = new TreeMap<>();
        for (Map.Entry<String, Long> e : byAvailable) {
            if (e.getValue() >= quantity) {
                allocation.put(e.getKey(), quantity);
                return allocation;
            }
        }
        long left = quantity;
        for (Map.Entry<String, Long> e : byAvailable) {
            if (left == 0) {
                break;
            }
            long take = Math.min(e.getValue(), left);
            allocation.put(e.getKey(), take);
            left -= take;
        }
        return left == 0 ? allocation : null;
    }

    private static List<Ev> warnings(Product p, long before, long after, List<Ev> out) {
        if (after < p.lowStockThreshold && before >= p.lowStockThreshold) {
            Ev e = new Ev(EvKind.LOW_STOCK);
            e.available = after;
            e.threshold = p.lowStockThreshold;
            out.add(e);
        }
        if (after < p.reorderPoint && before >= p.reorderPoint && p.reorderQuantity > 0) {
            Ev e = new Ev(EvKind.REORDER_SUGGESTED);
            e.available = after;
            e.reorderPoint = p.reorderPoint;
            e.quantity = p.reorderQuantity;
            out.add(e);
        }
        return out;
    }

    private static Rejection overflow(String sku) {
        return new Rejection("stock of " + sku + " would exceed " + MAX_STOCK + " units");
    }

    private static Rejection unknownSku(String sku) {
        return new Rejection("unknown SKU " + sku);
    }

    /** Decides what {@code c} does to the product {@code p} (null: unknown SKU) at {@code now}. */
    public static List<Ev> decide(String sku, Product p, Cmd c, long now) throws Rejection {
        List<Ev> out = new ArrayList<>(3);
        if (p == null) {
            switch (c.kind) {
                case REGISTER -> {
                    if (c.warehouse.trim().isEmpty()) {
                        throw new Rejection("warehouse name must not be empty");
                    }
                    if (c.initialStock > MAX_STOCK) {
                        throw overflow(sku);
                    }
                    Ev e = new Ev(EvKind.REGISTERED);
                    e.name = c.name;
                    e.warehouse = c.warehouse.trim();
                    e.onHand = c.initialStock;
                    e.lowStockThreshold = c.lowStockThreshold;
                    e.reorderPoint = c.reorderPoint;
                    e.reorderQuantity = c.reorderQuantity;
                    e.unitWeightKg = c.unitWeightKg;
                    out.add(e);
                    return out;
                }
                case RESERVE -> {
                    // A reservation for an unknown SKU is a business answer the order needs.
                    Ev e = new Ev(EvKind.REJECTED);
                    e.orderId = c.orderId;
                    e.lineNo = c.lineNo;
                    e.quantity = c.quantity;
                    e.available = 0;
                    e.reason = "unknown SKU " + sku;
                    out.add(e);
                    return out;
                }
                case COMMIT -> {
                    Ev e = new Ev(EvKind.COMMIT_REJECTED);
                    e.orderId = c.orderId;
                    e.reason = "unknown SKU " + sku;
                    out.add(e);
                    return out;
                }
                case RELEASE -> {
                    if (c.channel != null) {
                        throw unknownSku(sku);
                    }
                    return out;
                }
                case EXPIRE -> {
                    return out;
                }
                default -> throw unknownSku(sku);
            }
        }
        switch (c.kind) {
            case REGISTER -> throw new Rejection("product " + sku + " is already registered");
            case RESTOCK -> {
                if (c.warehouse.trim().isEmpty()) {
                    throw new Rejection("warehouse name must not be empty");
                }
                long onHand = p.onHand() + c.quantity;
                if (onHand > MAX_STOCK) {
                    throw overflow(sku);
                }
                Ev e = new Ev(EvKind.RESTOCKED);
                e.warehouse = c.warehouse.trim();
                e.quantity = c.quantity;
                e.onHand = onHand;
                e.available = onHand - p.reserved();
                out.add(e);
                return out;
            }
            case ADJUST -> {
                String w = c.warehouse.trim();
                if (w.isEmpty()) {
                    throw new Rejection("warehouse name must not be empty");
                }
                Stock stock = p.warehouses.getOrDefault(w, new Stock());
                if (c.counted < stock.reserved) {
                    throw new Rejection("warehouse " + w + " holds " + stock.reserved
                            + " reserved units; a count of " + c.counted + " cannot cover them");
                }
                if (stock.onHand == c.counted) {
                    return out;
                }
                long total = p.onHand() - stock.onHand;
                if (total + c.counted > MAX_STOCK) {
                    throw overflow(sku);
                }
                long before = p.available();
                long after = before + c.counted - stock.onHand;
                Ev e = new Ev(EvKind.ADJUSTED);
                e.warehouse = w;
                e.from = stock.onHand;
                e.to = c.counted;
                e.reason = c.reason;
                e.available = after;
                out.add(e);
                return warnings(p, before, after, out);
            }
            case RESERVE -> {
                Hold held = p.holds.get(c.orderId);
                if (held != null && held.lines.containsKey(c.lineNo)) {
                    return out;
                }
                long q = c.quantity;
                long available = p.available();
                TreeMap<String, Long> allocation = allocate(p.warehouses, q);
                if (allocation == null) {
                    Ev e = new Ev(EvKind.REJECTED);
                    e.orderId = c.orderId;
                    e.lineNo = c.lineNo;
                    e.quantity = q;
                    e.available = available;
                    e.reason = "insufficient stock: requested " + q + ", available " + available;
                    out.add(e);
                    return out;
                }
                long left = available - q;
                Ev e = new Ev(EvKind.RESERVED);
                e.orderId = c.orderId;
                e.lineNo = c.lineNo;
                e.quantity = q;
                e.allocation = allocation;
                e.available = left;
                e.at = now;
                e.channel = c.channel;
                out.add(e);
                return warnings(p, available, left, out);
            }
            case RELEASE -> {
                Hold hold = p.holds.get(c.orderId);
                // A channel releases only its own holds; the saga only the saga's.
                if (hold == null || !Objects.equals(hold.channel, c.channel)) {
                    if (c.channel != null) {
                        throw new Rejection("no hold " + c.orderId + " of this channel on this SKU");
                    }
                    return out;
                }
                Ev e = new Ev(EvKind.RELEASED);
                e.orderId = c.orderId;
                e.quantity = hold.quantity();
                e.available = p.available() + hold.quantity();
                e.reason = c.reason;
                out.add(e);
                return out;
            }
            case EXPIRE -> {
                Hold hold = p.holds.get(c.orderId);
                if (hold == null) {
                    return out;
                }
                if (c.hold != null && !c.hold.equals(hold.id())) {
                    return out; // a newer hold of the order: its own timer runs
                }
                Ev e = new Ev(EvKind.EXPIRED);
                e.orderId = c.orderId;
                e.quantity = hold.quantity();
                e.available = p.available() + hold.quantity();
                out.add(e);
                return out;
            }
            case COMMIT -> {
                Hold hold = p.holds.get(c.orderId);
                if (hold == null) {
                    Ev e = new Ev(EvKind.COMMIT_REJECTED);
                    e.orderId = c.orderId;
                    e.reason = "no stock is held for the order (expired or released)";
                    out.add(e);
                    return out;
                }
                Ev e = new Ev(EvKind.COMMITTED);
                e.orderId = c.orderId;
                e.quantity = hold.quantity();
                e.onHand = p.onHand() - hold.quantity();
                e.available = p.available();
                out.add(e);
                return out;
            }
            case RETURN -> {
                long onHand = p.onHand() + c.quantity;
                if (onHand > MAX_STOCK) {
                    throw overflow(sku);
                }
                Ev e = new Ev(EvKind.RETURNED);
                e.orderId = c.orderId;
                e.warehouse = returnsWarehouse(p);
                e.quantity = c.quantity;
                e.onHand = onHand;
                e.available = onHand - p.reserved();
                out.add(e);
                return out;
            }
            default -> throw new IllegalStateException("unhandled " + c.kind);
        }
    }

    /** Returned goods go to the default warehouse if there is one, else the first by name. */
    static String returnsWarehouse(Product p) {
        if (p.warehouses.containsKey(DEFAULT_WAREHOUSE)) {
            return DEFAULT_WAREHOUSE;
        }
        return p.warehouses.isEmpty() ? DEFAULT_WAREHOUSE : p.warehouses.firstKey();
    }

    private static void dropHold(Product p, String orderId, boolean sold) {
        Hold hold = p.holds.remove(orderId);
        if (hold == null) {
            return;
        }
        for (Map<String, Long> alloc : hold.lines.values()) {
            for (Map.Entry<String, Long> e : alloc.entrySet()) {
                Stock s = p.warehouses.computeIfAbsent(e.getKey(), k -> new Stock());
                s.reserved -= e.getValue();
                if (sold) {
                    s.onHand -= e.getValue();
                }
            }
        }
    }

    /** Folds {@code e} into {@code p} (mutated in place; a new product on registration). */
    public static Product evolve(String sku, Product p, Ev e) {
        if (p == null) {
            if (e.kind != EvKind.REGISTERED) {
                return null;
            }
            Product n = new Product();
            n.sku = sku;
            n.name = e.name;
            n.warehouses.put(e.warehouse, new Stock(e.onHand, 0));
            n.lowStockThreshold = e.lowStockThreshold;
            n.reorderPoint = e.reorderPoint;
            n.reorderQuantity = e.reorderQuantity;
            n.unitWeightKg = Values.normalized(e.unitWeightKg);
            n.version = 1;
            return n;
        }
        switch (e.kind) {
            case REGISTERED, REJECTED, COMMIT_REJECTED, LOW_STOCK, REORDER_SUGGESTED -> {
                return p;
            }
            case RESTOCKED, RETURNED -> p.warehouses.computeIfAbsent(e.warehouse, k -> new Stock()).onHand += e.quantity;
            case ADJUSTED -> p.warehouses.computeIfAbsent(e.warehouse, k -> new Stock()).onHand = e.to;
            case RESERVED -> {
                for (Map.Entry<String, Long> a : e.allocation.entrySet()) {
                    p.warehouses.computeIfAbsent(a.getKey(), k -> new Stock()).reserved += a.getValue();
                }
                Hold hold = p.holds.computeIfAbsent(e.orderId, k -> {
                    Hold h = new Hold();
                    h.reservedAt = e.at;
                    h.channel = e.channel;
                    return h;
                });
                hold.lines.put(e.lineNo, new TreeMap<>(e.allocation));
            }
            case RELEASED, EXPIRED -> dropHold(p, e.orderId, false);
            case COMMITTED -> dropHold(p, e.orderId, true);
            default -> throw new IllegalStateException("unhandled " + e.kind);
        }
        p.version += 1;
        return p;
    }
}
