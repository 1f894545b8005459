//! A deterministic sample load: a catalogue of products and orders over it, with a
//! skewed SKU popularity so that some products run out and their orders are cancelled.

use erp_schemas::wire;

/// splitmix64: tiny, deterministic, good enough for load shapes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// A UUID-formatted id from the stream (deterministic for a seed).
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        let bytes = [a.to_be_bytes(), b.to_be_bytes()].concat();
        let mut u = [0u8; 16];
        u.copy_from_slice(&bytes);
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

pub fn sku(i: usize) -> String {
    format!("SKU-{i:04}")
}

/// `n` products; product i starts with `stock` units (the first ones are popular).
pub fn products(rng: &mut Rng, n: usize, stock: i32, at: i64) -> Vec<wire::InventoryCommand> {
    (0..n)
        .map(|i| {
            let mut c = wire::InventoryCommand::empty(rng.uuid(), sku(i), at);
            c.register_product = Some(wire::RegisterProduct {
                name: format!("Product {i}"),
                initial_stock: stock,
                low_stock_threshold: stock / 5,
                unit_weight_kg: Some(format!("{}.5", 1 + i % 9)),
            });
            c
        })
        .collect()
}

/// One order of 1–3 lines over `n_products`, skewed towards low SKU numbers.
pub fn order(rng: &mut Rng, n_products: usize, at: i64) -> wire::OrderCommand {
    let lines = 1 + rng.below(3) as usize;
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < lines.min(n_products) {
        // Square of a uniform draw: small indices are much more likely.
        let r = rng.below(1000) as f64 / 1000.0;
        let i = ((r * r) * n_products as f64) as usize;
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    let order_id = rng.uuid();
    let command_id = rng.uuid();
    wire::OrderCommand {
        command_id: command_id.clone(),
        order_id,
        issued_at: at,
        correlation_id: Some(command_id),
        expected_version: None,
        cancel_order: None,
        place_order: Some(wire::PlaceOrder {
            customer_id: rng.uuid(),
            currency: "USD".into(),
            lines: chosen
                .into_iter()
                .map(|i| wire::OrderLine {
                    sku: sku(i),
                    product_name: format!("Product {i}"),
                    quantity: 1 + rng.below(4) as i32,
                    unit_price: format!("{}.{:02}", 5 + rng.below(95), rng.below(100)),
                    unit_weight_kg: Some(format!("{}.5", 1 + i % 9)),
                })
                .collect(),
            shipping_address: wire::Address {
                street: format!("{} Market St", 1 + rng.below(999)),
                city: "Springfield".into(),
                postal_code: format!("{:05}", 10000 + rng.below(89999)),
                country: "US".into(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_load() {
        let a = order(&mut Rng::new(7), 10, 1);
        let b = order(&mut Rng::new(7), 10, 1);
        assert_eq!(a, b);
        let lines = &a.place_order.unwrap().lines;
        assert!((1..=3).contains(&lines.len()));
        assert!(
            lines
                .iter()
                .all(|l| l.quantity >= 1 && l.sku.starts_with("SKU-"))
        );
    }

    #[test]
    fn uuids_are_well_formed() {
        let id = Rng::new(1).uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
