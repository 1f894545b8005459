package erp.peer;

import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/** Counters printed at shutdown; the first undecodable record is logged, later ones only counted. */
final class Stats {
    private Stats() {}

    static final AtomicLong PROCESSED = new AtomicLong();
    static final AtomicLong DUPLICATES = new AtomicLong();
    static final AtomicLong SKIPPED_PAYLOAD = new AtomicLong();
    static final AtomicLong MALFORMED = new AtomicLong();
    static final AtomicLong REJECTED = new AtomicLong();
    static final AtomicLong EVENTS_OUT = new AtomicLong();
    private static final AtomicBoolean LOGGED = new AtomicBoolean();

    static void malformed(String topic, int partition, long offset, String reason) {
        MALFORMED.incrementAndGet();
        if (LOGGED.compareAndSet(false, true)) {
            System.err.println("peer: skipping undecodable record " + topic + "-" + partition + "@" + offset
                    + ": " + reason + " (further ones are only counted)");
        }
    }

    static String summary() {
        return "processed=" + PROCESSED.get() + " duplicates=" + DUPLICATES.get()
                + " skipped_other_payload=" + SKIPPED_PAYLOAD.get() + " malformed=" + MALFORMED.get()
                + " rejected=" + REJECTED.get() + " records_out=" + EVENTS_OUT.get();
    }
}
