package erp.peer;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Locale;
import java.util.UUID;
import java.util.regex.Pattern;

/**
 * Value objects of the Rust side ({@code processors/src/values.rs}) as static checks,
 * with the same error messages, and the derived (UUID v5) ids.
 */
public final class Values {
    private Values() {}

    /** A validation failure; the message is the Rust {@code ValueError}'s Display. */
    public static final class ValueError extends Exception {
        public ValueError(String message) {
            super(message, null, false, false);
        }
    }

    /** 10^12: the largest amount a Money value may hold. */
    public static final BigDecimal MAX_AMOUNT = new BigDecimal("1000000000000");

    private static final Pattern HEX = Pattern.compile("[0-9a-fA-F]{32}");
    private static final Pattern HYPHENATED =
            Pattern.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    private static final Pattern DECIMAL = Pattern.compile("[+-]?(\\d+\\.?\\d*|\\.\\d+)");

    /** Rust's {@code {:?}} of a string: quoted, with escapes. */
    public static String debug(String s) {
        StringBuilder b = new StringBuilder(s.length() + 2).append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                case '\0' -> b.append("\\0");
                default -> {
                    if (c < 0x20 || c == 0x7f) {
                        b.append("\\u{").append(Integer.toHexString(c)).append('}');
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    /**
     * {@code uuid::Uuid::parse_str}: simple (32 hex), hyphenated, braced or URN form; the
     * result in the canonical lower-case hyphenated form.
     */
    public static String parseUuid(String field, String s) throws ValueError {
        String h = s;
        if (h.length() == 45 && h.regionMatches(true, 0, "urn:uuid:", 0, 9)) {
            h = h.substring(9);
        } else if (h.length() == 38 && h.charAt(0) == '{' && h.charAt(37) == '}') {
            h = h.substring(1, 37);
        }
        String hex;
        if (h.length() == 36 && HYPHENATED.matcher(h).matches()) {
            hex = h.replace("-", "");
        } else if (h.length() == 32 && HEX.matcher(h).matches()) {
            hex = h;
        } else {
            throw new ValueError(field + " " + debug(s) + " is not a UUID");
        }
        hex = hex.toLowerCase(Locale.ROOT);
        return hex.substring(0, 8) + "-" + hex.substring(8, 12) + "-" + hex.substring(12, 16) + "-"
                + hex.substring(16, 20) + "-" + hex.substring(20);
    }

    /** {@code Sku::parse}: 3-32 characters of A-Z, 0-9 and '-', not starting with '-'. */
    public static String parseSku(String s) throws ValueError {
        boolean ok = s.length() >= 3 && s.length() <= 32 && s.charAt(0) != '-';
        for (int i = 0; ok && i < s.length(); i++) {
            char c = s.charAt(i);
            ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
        }
        if (!ok) {
            throw new ValueError("SKU " + debug(s)
                    + " is invalid: 3-32 characters of A-Z, 0-9 and '-', starting with a letter or digit");
        }
        return s;
    }

    /** {@code Quantity::new}: 1..=i32::MAX. */
    public static int quantity(long n) throws ValueError {
        if (n <= 0 || n > Integer.MAX_VALUE) {
            throw new ValueError("quantity must be greater than zero, got " + n);
        }
        return (int) n;
    }

    /** A decimal string as {@code rust_decimal::Decimal::from_str} reads it, or null. */
    public static BigDecimal decimal(String s) {
        if (s == null || !DECIMAL.matcher(s).matches()) {
            return null;
        }
        return new BigDecimal(s.startsWith("+") ? s.substring(1) : s);
    }

    /** {@code Money::parse}: trimmed decimal, not negative, at most 10^12. */
    public static BigDecimal money(String s) throws ValueError {
        BigDecimal d = decimal(s.trim());
        if (d == null) {
            throw new ValueError("amount " + debug(s) + " is not a decimal number");
        }
        return checkedMoney(d);
    }

    /** {@code Money::new}. */
    public static BigDecimal checkedMoney(BigDecimal d) throws ValueError {
        if (d.signum() < 0) {
            throw new ValueError("amount " + d.toPlainString() + " is negative");
        }
        if (d.compareTo(MAX_AMOUNT) > 0) {
            throw new ValueError("amount " + d.toPlainString()
                    + " exceeds the largest supported amount (1000000000000)");
        }
        return d;
    }

    /** {@code Money::to_wire}: rounded to cents half away from zero, two decimals. */
    public static String wire(BigDecimal amount) {
        return Pricing.cents(amount).toPlainString();
    }

    /** {@code Decimal::normalize().to_string()}. */
    public static String normalized(BigDecimal d) {
        if (d.signum() == 0) {
            return "0";
        }
        return d.stripTrailingZeros().toPlainString();
    }

    private static final UUID NAMESPACE_OID = UUID.fromString("6ba7b812-9dad-11d1-80b4-00c04fd430c8");
    private static final ThreadLocal<MessageDigest> SHA1 = ThreadLocal.withInitial(() -> {
        try {
            return MessageDigest.getInstance("SHA-1");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    });

    /**
     * {@code derived_id}: UUID v5 in the OID namespace of "{cause}/{what}/{index}", so the
     * peer's ids equal the Rust processors' ids for the same input.
     */
    public static String derivedId(String cause, String what, int index) {
        MessageDigest sha = SHA1.get();
        sha.reset();
        long msb = NAMESPACE_OID.getMostSignificantBits();
        long lsb = NAMESPACE_OID.getLeastSignificantBits();
        byte[] ns = new byte[16];
        for (int i = 0; i < 8; i++) {
            ns[i] = (byte) (msb >>> (56 - 8 * i));
            ns[8 + i] = (byte) (lsb >>> (56 - 8 * i));
        }
        sha.update(ns);
        sha.update((cause + "/" + what + "/" + index).getBytes(StandardCharsets.UTF_8));
        byte[] h = sha.digest();
        h[6] = (byte) ((h[6] & 0x0f) | 0x50);
        h[8] = (byte) ((h[8] & 0x3f) | 0x80);
        long m = 0;
        long l = 0;
        for (int i = 0; i < 8; i++) {
            m = (m << 8) | (h[i] & 0xff);
            l = (l << 8) | (h[8 + i] & 0xff);
        }
        return new UUID(m, l).toString();
    }
}
