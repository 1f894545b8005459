package erp.peer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.math.BigDecimal;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;

/** The cases of the Rust unit tests in processors/src/order/pricing.rs (and a few more). */
class PricingTest {
    private static Pricing.Line line(String price, int qty, String weight) {
        return new Pricing.Line(qty, new BigDecimal(price), new BigDecimal(weight));
    }

    private static String wire(BigDecimal d) {
        return Values.wire(d);
    }

    @Test
    void bronzeOrderLightAndLocal() throws Exception {
        // 2 × 19.99 = 39.98; tax 4.00 (3.998 rounds up); shipping 10 (10 kg)
        Pricing.Result p = Pricing.price(List.of(line("19.99", 2, "5")), Pricing.Tier.BRONZE, "10001", false);
        assertEquals("39.98", wire(p.subtotal()));
        assertEquals("0.00", wire(p.discount()));
        assertEquals("4.00", wire(p.tax()));
        assertEquals("10.00", wire(p.shipping()));
        assertEquals("53.98", wire(p.total()));
    }

    @Test
    void goldOrderHeavyAndRemote() throws Exception {
        // 12 × 10.00 = 120.00; gold 10 % = 12.00; tax 10.80; weight 60 kg → 10 + 5 + 15
        Pricing.Result p = Pricing.price(List.of(line("10.00", 12, "5")), Pricing.Tier.GOLD, "94107", false);
        assertEquals("12.00", wire(p.discount()));
        assertEquals("10.80", wire(p.tax()));
        assertEquals("30.00", wire(p.shipping()));
        assertEquals("148.80", wire(p.total()));
    }

    @Test
    void tierRatesFollowTheSeed() {
        assertEquals(0, new BigDecimal("0.15").compareTo(Pricing.Tier.PLATINUM.discountRate));
        assertEquals(0, new BigDecimal("0.10").compareTo(Pricing.Tier.GOLD.discountRate));
        assertEquals(0, new BigDecimal("0.05").compareTo(Pricing.Tier.SILVER.discountRate));
        assertEquals(0, BigDecimal.ZERO.compareTo(Pricing.Tier.BRONZE.discountRate));
        assertEquals(Pricing.Tier.GOLD, Pricing.Tier.parse("gold"));
        assertNull(Pricing.Tier.parse("IRON"));
    }

    @Test
    void expressShippingCostsHalfAgainAsMuchBeforeRounding() throws Exception {
        // 61 kg remote: 10 + 5.5 + 15 = 30.5; express × 1.5 = 45.75
        Pricing.Result p = Pricing.price(List.of(line("1.00", 1, "61")), Pricing.Tier.BRONZE, "90001", true);
        assertEquals("45.75", wire(p.shipping()));
        assertEquals("46.85", wire(p.total())); // 1.00 + 0.10 + 45.75
        assertEquals("37.50", wire(Pricing.shippingCost(new BigDecimal("0"), "90001", true)));
    }

    @Test
    void shippingCostFollowsTheSeed() throws Exception {
        // processors/src/shipping/decider.rs, cost_follows_the_seed
        assertEquals("10.00", wire(Pricing.shippingCost(new BigDecimal("50"), "10001", false)));
        assertEquals("15.00", wire(Pricing.shippingCost(new BigDecimal("60"), "10001", false)));
        assertEquals("30.00", wire(Pricing.shippingCost(new BigDecimal("60"), "94107", false)));
        assertEquals("45.00", wire(Pricing.shippingCost(new BigDecimal("60"), "94107", true)));
        assertEquals("10.15", wire(Pricing.shippingCost(new BigDecimal("50.3"), "10001", false)));
    }

    @Test
    void partsAlwaysAddUpToTheTotal() throws Exception {
        // The Rust property test, over a fixed random sample.
        Random rnd = new Random(7);
        for (int i = 0; i < 5000; i++) {
            String price = BigDecimal.valueOf(1 + rnd.nextInt(999_999), 2).toPlainString();
            String grams = BigDecimal.valueOf(rnd.nextInt(100_000), 3).toPlainString();
            Pricing.Tier tier = Pricing.Tier.values()[rnd.nextInt(4)];
            Pricing.Result p = Pricing.price(List.of(line(price, 1 + rnd.nextInt(499), grams)), tier,
                    rnd.nextBoolean() ? "90001" : "10001", false);
            assertEquals(p.total(), p.subtotal().subtract(p.discount()).add(p.tax()).add(p.shipping()));
            assertTrue(p.total().compareTo(BigDecimal.TEN) >= 0);
            assertTrue(p.discount().compareTo(p.subtotal()) <= 0);
            assertTrue(p.total().scale() <= 2);
        }
    }

    @Test
    void absurdAmountsAreRefused() {
        Values.ValueError e = assertThrows(Values.ValueError.class,
                () -> Pricing.price(List.of(line("1000000000000", 2, "1")), Pricing.Tier.BRONZE, "10001", false));
        assertEquals("amount 2000000000000 exceeds the largest supported amount (1000000000000)", e.getMessage());
    }

    @Test
    void valuesMatchTheRustOnes() throws Exception {
        // uuid::Uuid::new_v5(&Uuid::NAMESPACE_OID, b"cmd-1/order-event/0")
        assertEquals("39834635-46c1-59f4-9335-45672778d34f", Values.derivedId("cmd-1", "order-event", 0));
        assertEquals("1c29fdaf-1c49-51fc-977d-f1893ad8cf8f",
                Values.derivedId("00000000-0000-4000-8000-000000000001", "inventory-event", 2));
        assertEquals("0a1b2c3d-4e5f-4a1b-8c2d-3e4f5a6b7c8d",
                Values.parseUuid("order_id", "0A1B2C3D4E5F4A1B8C2D3E4F5A6B7C8D"));
        assertEquals("order_id \"x\" is not a UUID",
                assertThrows(Values.ValueError.class, () -> Values.parseUuid("order_id", "x")).getMessage());
        assertEquals("5", Values.normalized(new BigDecimal("5.000")));
        assertEquals("0.5", Values.normalized(new BigDecimal("0.50")));
        assertEquals("0.01", Values.wire(new BigDecimal("0.005")));
        assertThrows(Values.ValueError.class, () -> Values.parseSku("sku-1"));
    }

    @Test
    void theAllocatorPrefersOneWarehouseThenSplitsByAvailability() {
        TreeMap<String, Inventory.Stock> w = new TreeMap<>();
        for (String[] s : new String[][] {{"main", "3"}, {"east", "5"}, {"west", "5"}}) {
            Inventory.Stock st = new Inventory.Stock();
            st.onHand = Long.parseLong(s[1]);
            w.put(s[0], st);
        }
        assertEquals(Map.of("east", 4L), Inventory.allocate(w, 4));
        assertEquals(Map.of("east", 5L, "west", 5L, "main", 2L), Inventory.allocate(w, 12));
        assertNull(Inventory.allocate(w, 14), "13 available in total");
    }
}
