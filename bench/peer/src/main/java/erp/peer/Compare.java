package erp.peer;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Compares the peer's outputs with the Rust processors' on one topic prefix (read_committed):
 * <ul>
 *   <li>pricing: every OrderCreated on {@code order-events} has a peer OrderCreated with the
 *       same tier and amounts, and the same ReserveStock commands;</li>
 *   <li>inventory: event kinds on {@code inventory-events} / {@code order-replies} against
 *       {@code peer-inventory-events} / {@code peer-order-replies}, and record-by-record
 *       equality by event id (ids are derived from the cause, as in Rust).</li>
 * </ul>
 * Waits first (up to --timeout-secs) until the peer applications have consumed their inputs.
 * Exit 0 when everything the peer implements matches; 1 otherwise.
 */
public final class Compare {
    private Compare() {}

    record Rec(String key, GenericRecord value) {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = Main.parseArgs(args, Set.of("bootstrap", "registry", "prefix", "timeout-secs", "steps"));
        String bootstrap = a.getOrDefault("bootstrap", "127.0.0.1:9092");
        String prefix = a.getOrDefault("prefix", "");
        Registry registry = new Registry(a.getOrDefault("registry", "http://127.0.0.1:8081/apis/ccompat/v7"));
        long timeout = Long.parseLong(a.getOrDefault("timeout-secs", "120"));
        Set<String> steps = Set.of(a.getOrDefault("steps", "pricing,inventory").split(","));

        if (steps.contains("pricing")) {
            waitCaughtUp(bootstrap, prefix + "peer-pricing", prefix + "order-commands", timeout);
        }
        if (steps.contains("inventory")) {
            waitCaughtUp(bootstrap, prefix + "peer-inventory", prefix + "inventory-commands", timeout);
        }
        boolean ok = true;
        if (steps.contains("pricing")) {
            ok &= pricing(bootstrap, registry, prefix);
        }
        if (steps.contains("inventory")) {
            ok &= inventory(bootstrap, registry, prefix);
        }
        System.out.println(ok ? "COMPARE OK" : "COMPARE FAILED");
        System.exit(ok ? 0 : 1);
    }

    /** Waits until the group's committed offsets reach the input's end offsets. */
    static void waitCaughtUp(String bootstrap, String group, String topic, long timeoutSecs) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        long deadline = System.currentTimeMillis() + timeoutSecs * 1000;
        try (Admin admin = Admin.create(p)) {
            int partitions = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            for (int i = 0; i < partitions; i++) {
                latest.put(new TopicPartition(topic, i), OffsetSpec.latest());
            }
            long lag = -1;
            while (System.currentTimeMillis() < deadline) {
                Map<TopicPartition, OffsetAndMetadata> committed =
                        admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
                var ends = admin.listOffsets(latest).all().get();
                lag = 0;
                for (var e : ends.entrySet()) {
                    OffsetAndMetadata c = committed.get(e.getKey());
                    lag += Math.max(0, e.getValue().offset() - (c == null ? 0 : c.offset()));
                }
                if (lag == 0) {
                    System.out.println("[compare] " + group + " has consumed " + topic);
                    return;
                }
                Thread.sleep(500);
            }
            System.out.println("[compare] WARNING: " + group + " still lags " + lag + " records on " + topic);
        }
    }

    /** Every committed record of {@code topic}, decoded into {@code schema} (undecodable ones counted). */
    static List<Rec> read(String bootstrap, Registry registry, String topic, Schema schema) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 5000);
        List<Rec> out = new ArrayList<>();
        int bad = 0;
        try (KafkaConsumer<String, byte[]> c =
                     new KafkaConsumer<>(p, new StringDeserializer(), new ByteArrayDeserializer())) {
            List<TopicPartition> tps = new ArrayList<>();
            List<PartitionInfo> infos = c.partitionsFor(topic, Duration.ofSeconds(10));
            if (infos == null || infos.isEmpty()) {
                System.out.println("[compare] topic " + topic + " does not exist");
                return out;
            }
            for (PartitionInfo i : infos) {
                tps.add(new TopicPartition(topic, i.partition()));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp) < end.get(tp)) {
                        done = false;
                    }
                }
                if (done) {
                    break;
                }
                for (ConsumerRecord<String, byte[]> r : c.poll(Duration.ofMillis(500))) {
                    try {
                        out.add(new Rec(r.key(), registry.decode(r.value(), schema)));
                    } catch (Registry.BadRecord e) {
                        bad++;
                    }
                }
            }
        }
        if (bad > 0) {
            System.out.println("[compare] " + topic + ": " + bad + " undecodable record(s) skipped");
        }
        return out;
    }

    /** The name of the one payload field set (fields after {@code after}). */
    static String kind(GenericRecord r, String after) {
        boolean past = false;
        for (Schema.Field f : r.getSchema().getFields()) {
            if (past && r.get(f.pos()) != null) {
                return f.name();
            }
            if (f.name().equals(after)) {
                past = true;
            }
        }
        return "?";
    }

    static final String[] AMOUNTS = {"subtotal", "discount", "tax", "shipping_cost", "total"};

    static boolean pricing(String bootstrap, Registry registry, String prefix) {
        System.out.println("== pricing: " + prefix + "order-events vs " + prefix + "peer-order-events ==");
        Map<String, GenericRecord> ours = new LinkedHashMap<>();
        Map<String, GenericRecord> ourRejections = new HashMap<>();
        for (Rec r : read(bootstrap, registry, prefix + "order-events", Avro.ORDER_EVENT)) {
            if (r.value().get("order_created") != null) {
                ours.put(Avro.str(r.value().get("order_id")), r.value());
            } else if (r.value().get("command_rejected") != null) {
                ourRejections.put(Avro.str(r.value().get("event_id")), r.value());
            }
        }
        Map<String, GenericRecord> peer = new LinkedHashMap<>();
        List<GenericRecord> peerRejections = new ArrayList<>();
        for (Rec r : read(bootstrap, registry, prefix + "peer-order-events", Avro.ORDER_EVENT)) {
            if (r.value().get("order_created") != null) {
                peer.put(Avro.str(r.value().get("order_id")), r.value());
            } else if (r.value().get("command_rejected") != null) {
                peerRejections.add(r.value());
            }
        }
        int missing = 0;
        int same = 0;
        int identical = 0;
        int tierDiffers = 0;
        int tierDiffersExplained = 0;
        int otherMismatch = 0;
        int recomputed = 0;
        int recomputedOk = 0;
        int repricingShown = 0;
        for (Map.Entry<String, GenericRecord> e : ours.entrySet()) {
            GenericRecord o = e.getValue();
            GenericRecord oc = Avro.rec(o, "order_created");
            // The Java rules on Rust's own inputs and tier: must give Rust's amounts.
            recomputed++;
            if (amountsMatch(oc, reprice(oc, Pricing.Tier.parse(Avro.str(oc.get("customer_tier")))))) {
                recomputedOk++;
            } else if (repricingShown++ < 5) {
                System.out.println("  repricing differs for " + e.getKey() + ": " + oc);
            }
            GenericRecord p = peer.get(e.getKey());
            if (p == null) {
                missing++;
                continue;
            }
            GenericRecord pc = Avro.rec(p, "order_created");
            boolean tierSame = Avro.str(oc.get("customer_tier")).equals(Avro.str(pc.get("customer_tier")));
            boolean amountsSame = true;
            for (String f : AMOUNTS) {
                amountsSame &= Avro.str(oc.get(f)).equals(Avro.str(pc.get(f)));
            }
            if (tierSame && amountsSame) {
                same++;
                if (o.equals(p)) {
                    identical++;
                }
            } else if (!tierSame) {
                tierDiffers++;
                // The peer read the customer table after the run: a customer promoted
                // meanwhile gets the newer tier. Its amounts must be those of that tier.
                if (amountsMatch(pc, reprice(oc, Pricing.Tier.parse(Avro.str(pc.get("customer_tier")))))) {
                    tierDiffersExplained++;
                }
            } else {
                otherMismatch++;
                if (otherMismatch <= 5) {
                    System.out.println("  MISMATCH " + e.getKey() + "\n    ours: " + oc + "\n    peer: " + pc);
                }
            }
        }
        int peerExtra = 0;
        for (String id : peer.keySet()) {
            if (!ours.containsKey(id)) {
                peerExtra++;
            }
        }
        int rejSame = 0;
        for (GenericRecord r : peerRejections) {
            GenericRecord o = ourRejections.get(Avro.str(r.get("event_id")));
            if (o != null && o.equals(r)) {
                rejSame++;
            }
        }
        System.out.printf("OrderCreated: ours %d, peer %d; same tier and amounts %d (whole events equal field by field, ids included: %d);"
                        + " tier differs %d (amounts right for the peer's tier: %d); other mismatches %d;"
                        + " missing in peer %d; only in peer %d%n",
                ours.size(), peer.size(), same, identical, tierDiffers, tierDiffersExplained, otherMismatch,
                missing, peerExtra);
        System.out.printf("Java pricing rules re-applied to Rust's OrderCreated inputs with Rust's tier: %d/%d equal%n",
                recomputedOk, recomputed);
        System.out.printf("CommandRejected from the peer: %d, equal to the Rust one with the same event id: %d%n",
                peerRejections.size(), rejSame);

        // ReserveStock commands per order.
        Map<String, Integer> ourReserves = new HashMap<>();
        Map<String, GenericRecord> ourById = new HashMap<>();
        for (Rec r : read(bootstrap, registry, prefix + "inventory-commands", Avro.INVENTORY_COMMAND)) {
            GenericRecord rs = Avro.rec(r.value(), "reserve_stock");
            if (rs != null && rs.get("channel") == null) {
                ourReserves.merge(Avro.str(rs.get("order_id")), 1, Integer::sum);
                ourById.put(Avro.str(r.value().get("command_id")), r.value());
            }
        }
        Map<String, Integer> peerReserves = new HashMap<>();
        int peerCommands = 0;
        int commandsEqual = 0;
        for (Rec r : read(bootstrap, registry, prefix + "peer-inventory-commands", Avro.INVENTORY_COMMAND)) {
            GenericRecord rs = Avro.rec(r.value(), "reserve_stock");
            if (rs != null) {
                peerCommands++;
                peerReserves.merge(Avro.str(rs.get("order_id")), 1, Integer::sum);
                GenericRecord o = ourById.get(Avro.str(r.value().get("command_id")));
                if (o != null && o.equals(r.value())) {
                    commandsEqual++;
                }
            }
        }
        int ordersSameCount = 0;
        int ordersDiffCount = 0;
        for (String id : ours.keySet()) {
            if (!peer.containsKey(id)) {
                continue;
            }
            int o = ourReserves.getOrDefault(id, 0);
            int p = peerReserves.getOrDefault(id, 0);
            if (o == p) {
                ordersSameCount++;
            } else {
                ordersDiffCount++;
            }
        }
        System.out.printf("ReserveStock: ours %d (saga), peer %d; orders with the same count %d, different %d;"
                        + " peer commands equal to ours (same command id and content) %d%n",
                ourReserves.values().stream().mapToInt(Integer::intValue).sum(), peerCommands,
                ordersSameCount, ordersDiffCount, commandsEqual);
        return missing == 0 && otherMismatch == 0 && peerExtra == 0 && tierDiffers == tierDiffersExplained
                && recomputedOk == recomputed && ordersDiffCount == 0 && rejSame == peerRejections.size();
    }

    static Pricing.Result reprice(GenericRecord oc, Pricing.Tier tier) {
        List<Pricing.Line> lines = new ArrayList<>();
        for (Object o : (List<?>) oc.get("lines")) {
            GenericRecord l = (GenericRecord) o;
            Object w = l.get("unit_weight_kg");
            lines.add(new Pricing.Line((Integer) l.get("quantity"), new BigDecimal(Avro.str(l.get("unit_price"))),
                    w == null ? Pricing.DEFAULT_UNIT_WEIGHT_KG : new BigDecimal(w.toString())));
        }
        String postal = Avro.str(Avro.rec(oc, "shipping_address").get("postal_code"));
        try {
            return Pricing.price(lines, tier, postal, "EXPRESS".equals(Avro.str(oc.get("shipping_method"))));
        } catch (Values.ValueError e) {
            return null;
        }
    }

    static boolean amountsMatch(GenericRecord oc, Pricing.Result p) {
        if (p == null) {
            return false;
        }
        BigDecimal[] mine = {p.subtotal(), p.discount(), p.tax(), p.shipping(), p.total()};
        for (int i = 0; i < AMOUNTS.length; i++) {
            if (!Values.wire(mine[i]).equals(Avro.str(oc.get(AMOUNTS[i])))) {
                return false;
            }
        }
        return true;
    }

    static boolean inventory(String bootstrap, Registry registry, String prefix) {
        boolean ok = true;
        for (String[] pair : new String[][] {
                {"inventory-events", "peer-inventory-events"}, {"order-replies", "peer-order-replies"}}) {
            System.out.println("== inventory: " + prefix + pair[0] + " vs " + prefix + pair[1] + " ==");
            List<Rec> ours = read(bootstrap, registry, prefix + pair[0], Avro.INVENTORY_EVENT);
            List<Rec> peer = read(bootstrap, registry, prefix + pair[1], Avro.INVENTORY_EVENT);
            TreeMap<String, int[]> kinds = new TreeMap<>();
            Map<String, Rec> ourById = new HashMap<>();
            for (Rec r : ours) {
                kinds.computeIfAbsent(kind(r.value(), "causation_id"), k -> new int[2])[0]++;
                ourById.put(Avro.str(r.value().get("event_id")), r);
            }
            int equal = 0;
            int differ = 0;
            int onlyPeer = 0;
            Set<String> seen = new TreeSet<>();
            for (Rec r : peer) {
                kinds.computeIfAbsent(kind(r.value(), "causation_id"), k -> new int[2])[1]++;
                String id = Avro.str(r.value().get("event_id"));
                seen.add(id);
                Rec o = ourById.get(id);
                if (o == null) {
                    onlyPeer++;
                } else if (o.value().equals(r.value()) && o.key().equals(r.key())) {
                    equal++;
                } else {
                    differ++;
                    if (differ <= 5) {
                        System.out.println("  DIFFERS " + id + "\n    ours: " + o.value() + "\n    peer: " + r.value());
                    }
                }
            }
            int onlyOurs = 0;
            for (String id : ourById.keySet()) {
                if (!seen.contains(id)) {
                    onlyOurs++;
                }
            }
            System.out.printf("  %-24s %8s %8s%n", "kind", "ours", "peer");
            for (Map.Entry<String, int[]> k : kinds.entrySet()) {
                System.out.printf("  %-24s %8d %8d%s%n", k.getKey(), k.getValue()[0], k.getValue()[1],
                        k.getValue()[0] == k.getValue()[1] ? "" : "   <- differs");
            }
            System.out.printf("  total %d vs %d; equal records (same event id, key and content) %d;"
                    + " same id but different %d; only in ours %d; only in peer %d%n",
                    ours.size(), peer.size(), equal, differ, onlyOurs, onlyPeer);
            ok &= differ == 0 && onlyOurs == 0 && onlyPeer == 0;
        }
        return ok;
    }
}
