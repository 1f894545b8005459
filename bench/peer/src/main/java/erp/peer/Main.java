package erp.peer;

import java.io.IOException;
import java.nio.file.Files;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * {@code java -jar erp-peer.jar --step inventory|pricing --bootstrap HOST:PORT --registry URL
 * --prefix PREFIX [--state-dir DIR] [--app-id ID]}; {@code java -cp erp-peer.jar erp.peer.Compare ...}
 * compares the peer's outputs with the Rust processors'.
 */
public final class Main {
    private Main() {}

    static Map<String, String> parseArgs(String[] args, Set<String> known) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                m.put("help", "");
                continue;
            }
            String k;
            String v;
            int eq = a.indexOf('=');
            if (a.startsWith("--") && eq > 0) {
                k = a.substring(2, eq);
                v = a.substring(eq + 1);
            } else if (a.startsWith("--") && i + 1 < args.length) {
                k = a.substring(2);
                v = args[++i];
            } else {
                throw new IllegalArgumentException("unexpected argument " + a);
            }
            if (!known.contains(k)) {
                throw new IllegalArgumentException("unknown option --" + k);
            }
            m.put(k, v);
        }
        return m;
    }

    private static final String USAGE = """
            usage: java -jar erp-peer.jar --step inventory|pricing --bootstrap HOST:PORT \\
                   --registry URL --prefix PREFIX [--state-dir DIR] [--app-id ID]
              --registry  Confluent-compatible registry base, e.g. http://127.0.0.1:8081/apis/ccompat/v7
              --prefix    the topic prefix of the run (may be empty: --prefix '')
              --app-id    default {prefix}peer-{step}
            """;

    public static void main(String[] args) throws Exception {
        Map<String, String> a;
        try {
            a = parseArgs(args, Set.of("step", "bootstrap", "registry", "prefix", "state-dir", "app-id"));
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            System.err.print(USAGE);
            System.exit(2);
            return;
        }
        String step = a.get("step");
        if (a.containsKey("help") || step == null || !(step.equals("inventory") || step.equals("pricing"))) {
            System.err.print(USAGE);
            System.exit(a.containsKey("help") ? 0 : 2);
            return;
        }
        String bootstrap = a.getOrDefault("bootstrap", "127.0.0.1:9092");
        String registryUrl = a.getOrDefault("registry", "http://127.0.0.1:8081/apis/ccompat/v7");
        String prefix = a.getOrDefault("prefix", "");
        String appId = a.getOrDefault("app-id", prefix + "peer-" + step);
        String stateDir = a.get("state-dir");
        if (stateDir == null) {
            stateDir = Files.createTempDirectory("erp-peer-").toString();
        }

        Registry registry = new Registry(registryUrl);
        Topology topology;
        if (step.equals("inventory")) {
            String input = prefix + "inventory-commands";
            String eventsTopic = prefix + "peer-inventory-events";
            String repliesTopic = prefix + "peer-order-replies";
            ensureTopics(bootstrap, input, List.of(), List.of(eventsTopic, repliesTopic));
            Registry.Writer events = registry.writer(eventsTopic, Avro.INVENTORY_EVENT);
            Registry.Writer replies = registry.writer(repliesTopic, Avro.INVENTORY_EVENT);
            topology = new Topology();
            topology.addSource("inventory-commands", new StringDeserializer(), new ByteArrayDeserializer(), input);
            topology.addProcessor("inventory", () -> new InventoryProcessor(registry, events, replies),
                    "inventory-commands");
            topology.addStateStore(Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(InventoryProcessor.PRODUCTS_STORE),
                    Serdes.String(), Serdes.ByteArray()), "inventory");
            topology.addStateStore(Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(InventoryProcessor.PROCESSED_STORE),
                    Serdes.String(), Serdes.ByteArray()), "inventory");
            topology.addSink(InventoryProcessor.EVENTS_SINK, eventsTopic, new StringSerializer(),
                    new ByteArraySerializer(), "inventory");
            topology.addSink(InventoryProcessor.REPLIES_SINK, repliesTopic, new StringSerializer(),
                    new ByteArraySerializer(), "inventory");
        } else {
            String input = prefix + "order-commands";
            String customersTopic = prefix + "customers";
            String eventsTopic = prefix + "peer-order-events";
            String commandsTopic = prefix + "peer-inventory-commands";
            ensureTopics(bootstrap, input, List.of(customersTopic), List.of(eventsTopic, commandsTopic));
            Registry.Writer events = registry.writer(eventsTopic, Avro.ORDER_EVENT);
            Registry.Writer commands = registry.writer(commandsTopic, Avro.INVENTORY_COMMAND);
            topology = new Topology();
            topology.addGlobalStore(
                    Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(PricingProcessor.CUSTOMERS_GLOBAL),
                            Serdes.String(), Serdes.ByteArray()).withLoggingDisabled(),
                    "customers", new StringDeserializer(), new ByteArrayDeserializer(), customersTopic,
                    "customer-table-loader", () -> new CustomerTableLoader());
            topology.addSource("order-commands", new StringDeserializer(), new ByteArrayDeserializer(), input);
            topology.addProcessor("pricing", () -> new PricingProcessor(registry, events, commands),
                    "order-commands");
            topology.addStateStore(Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(PricingProcessor.ORDERS_STORE),
                    Serdes.String(), Serdes.ByteArray()), "pricing");
            topology.addStateStore(Stores.keyValueStoreBuilder(
                    Stores.persistentKeyValueStore(PricingProcessor.PROCESSED_STORE),
                    Serdes.String(), Serdes.ByteArray()), "pricing");
            topology.addSink(PricingProcessor.EVENTS_SINK, eventsTopic, new StringSerializer(),
                    new ByteArraySerializer(), "pricing");
            topology.addSink(PricingProcessor.COMMANDS_SINK, commandsTopic, new StringSerializer(),
                    new ByteArraySerializer(), "pricing");
        }

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);

        KafkaStreams streams = new KafkaStreams(topology, p);
        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean running = new AtomicBoolean();
        AtomicInteger exit = new AtomicInteger();
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING && running.compareAndSet(false, true)) {
                System.out.println("PEER RUNNING");
                System.out.flush();
            } else if (now == KafkaStreams.State.ERROR) {
                System.err.println("peer: streams failed (state ERROR)");
                exit.set(1);
                done.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("peer: stream thread failed: " + e);
            e.printStackTrace(System.err);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        Thread hook = new Thread(() -> {
            // Leave the group, so a restart rebalances at once instead of after the session timeout.
            streams.close(CloseOptions.timeout(Duration.ofSeconds(30))
                    .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
            System.err.println("peer " + step + " (" + appId + ") stopped: " + Stats.summary());
            done.countDown();
        }, "peer-shutdown");
        Runtime.getRuntime().addShutdownHook(hook);
        System.err.println("peer " + step + ": application " + appId + ", prefix '" + prefix + "', state " + stateDir);
        streams.start();
        done.await();
        if (exit.get() != 0) {
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException shuttingDown) {
                return;
            }
            streams.close(Duration.ofSeconds(10));
            System.err.println("peer " + step + " failed: " + Stats.summary());
            System.exit(exit.get());
        }
    }

    /** Puts every customer row (raw wire-format bytes) into the global store; decoded at lookup, as in Rust. */
    static final class CustomerTableLoader implements Processor<String, byte[], Void, Void> {
        private KeyValueStore<String, byte[]> store;

        @Override
        public void init(ProcessorContext<Void, Void> context) {
            store = context.getStateStore(PricingProcessor.CUSTOMERS_GLOBAL);
        }

        @Override
        public void process(Record<String, byte[]> record) {
            if (record.key() == null) {
                return;
            }
            if (record.value() == null) {
                store.delete(record.key());
            } else {
                store.put(record.key(), record.value());
            }
        }
    }

    /**
     * Checks that the inputs exist and creates the missing outputs with the input's
     * partition count (replication 1).
     */
    static void ensureTopics(String bootstrap, String input, List<String> otherInputs, List<String> outputs)
            throws IOException, InterruptedException {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            List<String> inputs = new ArrayList<>(otherInputs);
            inputs.add(0, input);
            Map<String, TopicDescription> described;
            try {
                described = admin.describeTopics(inputs).allTopicNames().get();
            } catch (ExecutionException e) {
                if (e.getCause() instanceof UnknownTopicOrPartitionException) {
                    throw new IOException("input topic missing (one of " + inputs + "): run the Rust pipeline "
                            + "(erp setup / erp run) on this prefix first", e.getCause());
                }
                throw new IOException("describing " + inputs, e.getCause());
            }
            int partitions = described.get(input).partitions().size();
            Set<String> existing = admin.listTopics().names().get();
            List<NewTopic> create = new ArrayList<>();
            for (String t : outputs) {
                if (!existing.contains(t)) {
                    create.add(new NewTopic(t, partitions, (short) 1));
                }
            }
            if (!create.isEmpty()) {
                try {
                    admin.createTopics(create).all().get();
                    System.err.println("peer: created " + create.size() + " topic(s) with " + partitions
                            + " partition(s): " + create.stream().map(NewTopic::name).toList());
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) {
                        throw new IOException("creating " + create, e.getCause());
                    }
                }
            }
        } catch (ExecutionException e) {
            throw new IOException(e.getCause());
        }
    }
}
