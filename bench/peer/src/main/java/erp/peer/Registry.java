package erp.peer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

/**
 * The Confluent wire format (byte 0 = 0, 4-byte big-endian schema id, Avro binary body)
 * over a Confluent-compatible registry (Apicurio's ccompat API), without Confluent's
 * serde: writer schemas are fetched by id and cached; output schemas are registered
 * under {@code <topic>-value}.
 */
public final class Registry {
    /** A value that cannot be decoded (bad magic, unknown schema id, bad body). Skipped. */
    public static final class BadRecord extends Exception {
        public BadRecord(String message) {
            super(message, null, false, false);
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private final String url;
    private final HttpClient http;
    private final Map<Integer, Schema> writers = new ConcurrentHashMap<>();
    /** Readers by (writer id, reader schema name). */
    private final Map<String, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();
    /** Reused per thread (stream thread, Compare's main thread). */
    private final ThreadLocal<BinaryDecoder> decoders = new ThreadLocal<>();
    private final ThreadLocal<BinaryEncoder> encoders = new ThreadLocal<>();
    private final ThreadLocal<ByteArrayOutputStream> buffers =
            ThreadLocal.withInitial(() -> new ByteArrayOutputStream(1024));

    public Registry(String url) {
        this.url = url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
        this.http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    }

    /** One of the project's schemas, from the jar ({@code /avro/<file>}). */
    public static Schema schema(String file) {
        try (InputStream in = Registry.class.getResourceAsStream("/avro/" + file)) {
            if (in == null) {
                throw new IllegalStateException("schema resource /avro/" + file + " is missing from the jar");
            }
            return new Schema.Parser().parse(in);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private HttpResponse<String> send(HttpRequest req) throws IOException {
        IOException last = null;
        for (int attempt = 0; attempt < 20; attempt++) {
            try {
                HttpResponse<String> r = http.send(req, HttpResponse.BodyHandlers.ofString());
                if (r.statusCode() < 500) {
                    return r;
                }
                last = new IOException("registry answered " + r.statusCode() + ": " + r.body());
            } catch (IOException e) {
                last = e;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
            try {
                Thread.sleep(250L * Math.min(attempt + 1, 8));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
        }
        throw last;
    }

    /** Registers {@code schema} under {@code <topic>-value} (idempotent); returns its id. */
    public int register(String topic, Schema schema) throws IOException {
        String subject = URLEncoder.encode(topic + "-value", StandardCharsets.UTF_8);
        String body = JSON.writeValueAsString(Map.of("schema", schema.toString()));
        HttpRequest req = HttpRequest.newBuilder(URI.create(url + "/subjects/" + subject + "/versions"))
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/vnd.schemaregistry.v1+json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build();
        HttpResponse<String> r = send(req);
        if (r.statusCode() / 100 != 2) {
            throw new IOException("registering " + topic + "-value: " + r.statusCode() + " " + r.body());
        }
        return JSON.readTree(r.body()).get("id").asInt();
    }

    private Schema writer(int id) throws BadRecord {
        Schema s = writers.get(id);
        if (s != null) {
            return s;
        }
        HttpRequest req = HttpRequest.newBuilder(URI.create(url + "/schemas/ids/" + id))
                .timeout(Duration.ofSeconds(30))
                .GET()
                .build();
        try {
            HttpResponse<String> r = send(req);
            if (r.statusCode() / 100 != 2) {
                throw new BadRecord("unknown schema id " + id + ": " + r.statusCode() + " " + r.body());
            }
            JsonNode node = JSON.readTree(r.body());
            JsonNode schema = node.get("schema");
            if (schema == null || !schema.isTextual()) {
                throw new BadRecord("unknown schema id " + id + ": no schema in " + r.body());
            }
            s = new Schema.Parser().parse(schema.asText());
        } catch (IOException e) {
            // The registry is unreachable: not the record's fault, and nothing can go on.
            throw new UncheckedIOException("schema registry unreachable at " + url, e);
        } catch (RuntimeException e) {
            throw new BadRecord("schema id " + id + " does not parse: " + e.getMessage());
        }
        writers.put(id, s);
        return s;
    }

    /** Decodes a wire-format value written with any compatible schema into {@code reader}. */
    public GenericRecord decode(byte[] bytes, Schema reader) throws BadRecord {
        if (bytes == null) {
            throw new BadRecord("record has no value");
        }
        if (bytes.length < 5 || bytes[0] != 0) {
            throw new BadRecord("malformed value: not the Confluent wire format");
        }
        int id = ((bytes[1] & 0xff) << 24) | ((bytes[2] & 0xff) << 16) | ((bytes[3] & 0xff) << 8) | (bytes[4] & 0xff);
        Schema writer = writer(id);
        if (!writer.getFullName().equals(reader.getFullName())) {
            throw new BadRecord("value was written as " + writer.getFullName() + ", expected " + reader.getFullName());
        }
        GenericDatumReader<GenericRecord> r = readers.computeIfAbsent(id + "/" + reader.getFullName(),
                k -> new GenericDatumReader<>(writer, reader));
        try {
            BinaryDecoder decoder = DecoderFactory.get().binaryDecoder(bytes, 5, bytes.length - 5, decoders.get());
            decoders.set(decoder);
            return r.read(null, decoder);
        } catch (IOException | RuntimeException e) {
            throw new BadRecord("malformed value: " + e);
        }
    }

    /** An encoder of one schema under one registered id. */
    public final class Writer {
        private final int id;
        private final GenericDatumWriter<GenericRecord> writer;

        Writer(int id, Schema schema) {
            this.id = id;
            this.writer = new GenericDatumWriter<>(schema);
        }

        public byte[] encode(GenericRecord record) {
            ByteArrayOutputStream out = buffers.get();
            out.reset();
            out.write(0);
            out.write(id >>> 24);
            out.write(id >>> 16);
            out.write(id >>> 8);
            out.write(id);
            BinaryEncoder encoder = EncoderFactory.get().binaryEncoder(out, encoders.get());
            encoders.set(encoder);
            try {
                writer.write(record, encoder);
                encoder.flush();
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
            return out.toByteArray();
        }
    }

    /** Registers {@code schema} for {@code topic} and returns its encoder. */
    public Writer writer(String topic, Schema schema) throws IOException {
        return new Writer(register(topic, schema), schema);
    }
}
