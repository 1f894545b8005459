package erp.peer;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.util.List;

/**
 * The order pricing rules of {@code processors/src/order/pricing.rs} ({@code price_for})
 * with the shipping cost of {@code processors/src/shipping/decider.rs}:
 * <ul>
 *   <li>subtotal = Σ unit_price × quantity, rounded to cents;</li>
 *   <li>discount = subtotal × tier rate (PLATINUM 15 %, GOLD 10 %, SILVER 5 %, BRONZE 0), rounded;</li>
 *   <li>tax = 10 % of (subtotal − discount), rounded;</li>
 *   <li>shipping = 10 + 0.5 per kg above 50 kg + 15 when the postal code starts with "9";
 *       EXPRESS: that sum × 1.5; rounded;</li>
 *   <li>total = subtotal − discount + tax + shipping.</li>
 * </ul>
 * Rounding is to cents, half away from zero (amounts are never negative: HALF_UP).
 */
public final class Pricing {
    private Pricing() {}

    public enum Tier {
        PLATINUM(new BigDecimal("0.15")),
        GOLD(new BigDecimal("0.10")),
        SILVER(new BigDecimal("0.05")),
        BRONZE(BigDecimal.ZERO);

        public final BigDecimal discountRate;

        Tier(BigDecimal rate) {
            this.discountRate = rate;
        }

        /** {@code CustomerTier::parse}, case-insensitive; null when unknown. */
        public static Tier parse(String s) {
            for (Tier t : values()) {
                if (t.name().equalsIgnoreCase(s)) {
                    return t;
                }
            }
            return null;
        }
    }

    public static final BigDecimal TAX_RATE = new BigDecimal("0.10");
    public static final BigDecimal DEFAULT_UNIT_WEIGHT_KG = new BigDecimal("5");
    private static final BigDecimal BASE_SHIPPING = new BigDecimal("10");
    private static final BigDecimal FREE_WEIGHT_KG = new BigDecimal("50");
    private static final BigDecimal PER_KG_OVER = new BigDecimal("0.5");
    private static final BigDecimal REMOTE_SURCHARGE = new BigDecimal("15");
    private static final BigDecimal EXPRESS_FACTOR = new BigDecimal("1.5");

    /** One priced line: quantity, unit price (as parsed, not rounded), unit weight in kg. */
    public record Line(int quantity, BigDecimal unitPrice, BigDecimal unitWeightKg) {}

    public record Result(BigDecimal subtotal, BigDecimal discount, BigDecimal tax,
                         BigDecimal shipping, BigDecimal total, BigDecimal totalWeightKg) {}

    /** {@code Money::round_cents}: two decimals, half away from zero. */
    public static BigDecimal cents(BigDecimal d) {
        return d.setScale(2, RoundingMode.HALF_UP);
    }

    /** {@code Address::is_remote}. */
    public static boolean isRemote(String postalCode) {
        return postalCode.startsWith("9");
    }

    /** {@code shipping_cost}: the shipping context's rule, rounded to cents. */
    public static BigDecimal shippingCost(BigDecimal weightKg, String postalCode, boolean express)
            throws Values.ValueError {
        BigDecimal cost = BASE_SHIPPING;
        if (weightKg.compareTo(FREE_WEIGHT_KG) > 0) {
            cost = cost.add(weightKg.subtract(FREE_WEIGHT_KG).multiply(PER_KG_OVER));
        }
        if (isRemote(postalCode)) {
            cost = cost.add(REMOTE_SURCHARGE);
        }
        if (express) {
            cost = cost.multiply(EXPRESS_FACTOR);
        }
        return cents(Values.checkedMoney(cost));
    }

    /** {@code price_for}: every check the Rust code makes that can fail is made here too. */
    public static Result price(List<Line> lines, Tier tier, String postalCode, boolean express)
            throws Values.ValueError {
        BigDecimal subtotal = BigDecimal.ZERO;
        BigDecimal weight = BigDecimal.ZERO;
        for (Line l : lines) {
            BigDecimal qty = BigDecimal.valueOf(l.quantity());
            subtotal = Values.checkedMoney(subtotal.add(Values.checkedMoney(l.unitPrice().multiply(qty))));
            weight = weight.add(l.unitWeightKg().multiply(qty));
        }
        subtotal = cents(subtotal);
        BigDecimal discount = cents(subtotal.multiply(tier.discountRate));
        BigDecimal taxable = Values.checkedMoney(subtotal.subtract(discount));
        BigDecimal tax = cents(taxable.multiply(TAX_RATE));
        BigDecimal standard = shippingCost(weight, postalCode, false);
        BigDecimal total = Values.checkedMoney(Values.checkedMoney(taxable.add(tax)).add(standard));
        BigDecimal shipping = standard;
        if (express) {
            shipping = shippingCost(weight, postalCode, true);
            total = Values.checkedMoney(total.subtract(standard).add(shipping));
        }
        return new Result(subtotal, discount, tax, shipping, total, weight);
    }

    /** {@code parse_method}: null or STANDARD, EXPRESS (any case); true for EXPRESS. */
    public static boolean parseExpress(String method) throws Values.ValueError {
        if (method == null) {
            return false;
        }
        // str::to_ascii_uppercase: only ASCII letters change.
        StringBuilder b = new StringBuilder(method.length());
        for (int i = 0; i < method.length(); i++) {
            char c = method.charAt(i);
            b.append(c >= 'a' && c <= 'z' ? (char) (c - 32) : c);
        }
        String m = b.toString();
        return switch (m) {
            case "STANDARD" -> false;
            case "EXPRESS" -> true;
            default -> throw new Values.ValueError(
                    "shipping method " + Values.debug(m) + " is not STANDARD or EXPRESS");
        };
    }
}
