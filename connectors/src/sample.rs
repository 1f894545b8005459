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

/// A product registered with no stock: lines on it are refused (the out-of-stock
/// branch of a mixed load).
pub const EMPTY_SKU: &str = "SKU-EMPTY";

fn address(rng: &mut Rng, postal_code: String) -> wire::Address {
    wire::Address {
        street: format!("{} Market St", 1 + rng.below(999)),
        city: "Springfield".into(),
        postal_code,
        country: "US".into(),
    }
}

/// `n` customers to register before ordering (orders of unknown customers are refused).
pub fn customers(rng: &mut Rng, n: usize, at: i64) -> Vec<wire::CustomerCommand> {
    (0..n)
        .map(|i| {
            let mut c = wire::CustomerCommand::empty(rng.uuid(), rng.uuid(), at);
            let postal_code = format!("{:05}", 10000 + rng.below(89999));
            c.register_customer = Some(wire::RegisterCustomer {
                name: format!("Customer {i}"),
                email: format!("customer{i}@example.com"),
                phone: Some(format!("+1415555{:04}", i % 10_000)),
                address: address(rng, postal_code),
            });
            c
        })
        .collect()
}

/// `n` products with `stock` units each in the main warehouse, plus [`EMPTY_SKU`].
pub fn products(rng: &mut Rng, n: usize, stock: i32, at: i64) -> Vec<wire::InventoryCommand> {
    (0..=n)
        .map(|i| {
            let (sku, stock) = if i == n {
                (EMPTY_SKU.to_string(), 0)
            } else {
                (sku(i), stock)
            };
            let mut c = wire::InventoryCommand::empty(rng.uuid(), sku, at);
            c.register_product = Some(wire::RegisterProduct {
                name: format!("Product {i}"),
                initial_stock: stock,
                low_stock_threshold: stock / 5,
                unit_weight_kg: Some(format!("{}.5", 1 + i % 9)),
                warehouse: None,
                reorder_point: Some(stock / 4),
                reorder_quantity: Some(stock),
            });
            c
        })
        .collect()
}

/// The shape of a mixed load, in percent of orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Paid with a token the gateway declines.
    pub declined: u64,
    /// With a line on [`EMPTY_SKU`].
    pub out_of_stock: u64,
    /// Cancelled by the customer some time after placing.
    pub cancelled: u64,
    /// Shipped to a postal code no carrier serves.
    pub undeliverable: u64,
    /// Paid with a token whose capture fails.
    pub capture_fails: u64,
}

impl Mix {
    /// Every order goes through (given enough stock).
    pub const NONE: Mix = Mix {
        declined: 0,
        out_of_stock: 0,
        cancelled: 0,
        undeliverable: 0,
        capture_fails: 0,
    };
    /// The acceptance mix: 10 % declines, 10 % out of stock, 5 % cancels, plus
    /// 2 % undeliverable and 2 % failed captures so every branch runs.
    pub const ACCEPTANCE: Mix = Mix {
        declined: 10,
        out_of_stock: 10,
        cancelled: 5,
        undeliverable: 2,
        capture_fails: 2,
    };
}

/// One sampled order and whether the load should cancel it later.
pub struct SampleOrder {
    pub command: wire::OrderCommand,
    pub cancel: bool,
}

/// One order of 1–3 lines over `n_products` (skewed towards low SKU numbers) for one of
/// `customers`, shaped by `mix`.
pub fn order(
    rng: &mut Rng,
    n_products: usize,
    customers: &[String],
    mix: Mix,
    at: i64,
) -> SampleOrder {
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
    // A few loyal customers place most orders (the square again), so their completed
    // orders lift them to better tiers over a load.
    let r = rng.below(1000) as f64 / 1000.0;
    let customer = customers[((r * r) * customers.len() as f64) as usize].clone();
    // One draw decides the branch, so the percentages add up exactly.
    let roll = rng.below(100);
    let mut edge = 0;
    let mut next = |pct: u64| {
        edge += pct;
        roll < edge
    };
    let declined = next(mix.declined);
    let out_of_stock = !declined && next(mix.out_of_stock);
    let cancel = !declined && !out_of_stock && next(mix.cancelled);
    let undeliverable = !declined && !out_of_stock && !cancel && next(mix.undeliverable);
    let capture_fails =
        !declined && !out_of_stock && !cancel && !undeliverable && next(mix.capture_fails);
    let mut order_lines: Vec<wire::OrderLine> = chosen
        .into_iter()
        .map(|i| wire::OrderLine {
            sku: sku(i),
            product_name: format!("Product {i}"),
            quantity: 1 + rng.below(4) as i32,
            unit_price: format!("{}.{:02}", 5 + rng.below(25), rng.below(100)),
            unit_weight_kg: Some(format!("{}.5", 1 + i % 9)),
        })
        .collect();
    if out_of_stock {
        order_lines.push(wire::OrderLine {
            sku: EMPTY_SKU.into(),
            product_name: "Sold out".into(),
            quantity: 1,
            unit_price: "1.00".into(),
            unit_weight_kg: None,
        });
    }
    let postal_code = if undeliverable {
        format!("000{:02}", rng.below(100))
    } else {
        format!("{:05}", 10000 + rng.below(89999))
    };
    let payment_method = if declined {
        "tok_decline"
    } else if capture_fails {
        "tok_capture_fail"
    } else {
        "tok_visa"
    };
    let mut command = wire::OrderCommand::empty(command_id.clone(), order_id, at);
    command.correlation_id = Some(command_id);
    command.place_order = Some(wire::PlaceOrder {
        customer_id: customer,
        currency: "USD".into(),
        lines: order_lines,
        shipping_address: address(rng, postal_code),
        payment_method: Some(payment_method.into()),
        shipping_method: Some(
            if rng.below(5) == 0 {
                "EXPRESS"
            } else {
                "STANDARD"
            }
            .into(),
        ),
        manual_confirmation: None,
    });
    SampleOrder { command, cancel }
}

/// A customer's cancel of `order_id`.
pub fn cancel(rng: &mut Rng, order_id: &str, at: i64) -> wire::OrderCommand {
    let mut c = wire::OrderCommand::empty(rng.uuid(), order_id.to_string(), at);
    c.cancel_order = Some(wire::CancelOrder {
        reason: "changed my mind".into(),
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_load() {
        let customers = vec!["c".to_string()];
        let a = order(&mut Rng::new(7), 10, &customers, Mix::NONE, 1).command;
        let b = order(&mut Rng::new(7), 10, &customers, Mix::NONE, 1).command;
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
    fn the_mix_shapes_the_load() {
        let customers = vec!["c".to_string()];
        let mut rng = Rng::new(3);
        let orders: Vec<_> = (0..2000)
            .map(|_| order(&mut rng, 10, &customers, Mix::ACCEPTANCE, 1))
            .collect();
        let share = |f: &dyn Fn(&SampleOrder) -> bool| {
            orders.iter().filter(|o| f(o)).count() as f64 / orders.len() as f64
        };
        let place = |o: &SampleOrder| o.command.place_order.clone().unwrap();
        let declined = share(&|o| place(o).payment_method.as_deref() == Some("tok_decline"));
        let empty = share(&|o| place(o).lines.iter().any(|l| l.sku == EMPTY_SKU));
        let cancels = share(&|o| o.cancel);
        assert!((0.08..0.12).contains(&declined), "{declined}");
        assert!((0.08..0.12).contains(&empty), "{empty}");
        assert!((0.035..0.065).contains(&cancels), "{cancels}");
    }

    #[test]
    fn uuids_are_well_formed() {
        let id = Rng::new(1).uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
