//! A realistic synthetic load, open loop: customers, a catalogue, then orders at a
//! target rate whatever the saga's pace (a closed loop would slow down with the system
//! and hide its latency), with declines, out-of-stock lines, customer cancels,
//! undeliverable addresses and failed captures in configurable shares.
//!
//! Popularity is skewed both ways: low SKU numbers sell far more (so some run out) and
//! a few loyal customers place most orders (so they climb from Standard to Silver,
//! Gold and Platinum as their completed orders add up — tiers cannot be bought
//! through commands). Used by `erp generate`, the demo and the benchmarks.

use std::time::{Duration, Instant};

use erp_schemas::{SchemaKind, wire};

use crate::sample::{self, Mix, Rng};
use crate::{CommandPublisher, PublishError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct Shape {
    pub customers: usize,
    pub products: usize,
    /// Initial stock of each product.
    pub stock: i32,
    pub orders: usize,
    pub seed: u64,
    pub mix: Mix,
    /// Orders per second (open loop); `None` publishes as fast as the producer can.
    pub rate: Option<f64>,
    /// Percent of orders followed by one bad record (see [`Poison`]), 0..=100.
    pub poison_pct: f64,
}

/// Bad input a chaos run mixes into the load, each marked with an `erp-chaos` header.
/// The first three do not decode (they belong in a DLQ, bytes intact); the last one
/// decodes but breaks a business rule (it gets a rejection or cancellation, not a DLQ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Poison {
    /// Not the Confluent wire format at all (JSON).
    BadMagic,
    /// A valid body behind a schema id the registry never issued.
    UnknownSchema,
    /// The first half of a valid record.
    Truncated,
    /// A PlaceOrder with a negative quantity, a foreign currency or an unknown SKU.
    InvalidValue,
}

impl Poison {
    pub const ALL: [Poison; 4] = [
        Poison::BadMagic,
        Poison::UnknownSchema,
        Poison::Truncated,
        Poison::InvalidValue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Poison::BadMagic => "bad-magic",
            Poison::UnknownSchema => "unknown-schema",
            Poison::Truncated => "truncated",
            Poison::InvalidValue => "invalid-value",
        }
    }
}

/// The catalogue a load orders from.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub customer_ids: Vec<String>,
    pub products: usize,
}

/// What [`Generator::orders`] published.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub order_ids: Vec<String>,
    pub cancels: usize,
    pub elapsed: Duration,
    /// How far behind its schedule the slowest send was (0 when the producer kept up
    /// with the rate).
    pub max_lag: Duration,
    /// Bad records sent, per kind.
    pub poison: std::collections::BTreeMap<Poison, usize>,
}

pub struct Generator {
    pub shape: Shape,
    rng: Rng,
    /// Its own stream, so a load with poison has the same orders as one without.
    poison_rng: Rng,
}

impl Generator {
    pub fn new(shape: Shape) -> Self {
        let rng = Rng::new(shape.seed);
        let poison_rng = Rng::new(shape.seed ^ 0x9e37_79b9_7f4a_7c15);
        Self {
            shape,
            rng,
            poison_rng,
        }
    }

    /// Sends one bad record of a random kind next to `order` (whose encoding the
    /// undecodable kinds are cut from).
    fn poison(
        &mut self,
        publisher: &CommandPublisher,
        order: &wire::OrderCommand,
        at: i64,
    ) -> Result<Poison, PublishError> {
        let rng = &mut self.poison_rng;
        let kind = Poison::ALL[rng.below(Poison::ALL.len() as u64) as usize];
        let topics = publisher.topics();
        let topic = match rng.below(3) {
            0 => topics.order_commands(),
            1 => topics.inventory_commands(),
            _ => topics.customer_commands(),
        };
        let key = rng.uuid();
        let valid = || {
            publisher
                .serde()
                .encode(&topics.order_commands(), SchemaKind::OrderCommand, order)
        };
        let value = match kind {
            Poison::BadMagic => {
                format!("{{\"order_id\": \"{key}\", \"quantity\": 1}}").into_bytes()
            }
            Poison::UnknownSchema => {
                let valid = valid()?;
                [&[0u8, 0x7f, 0xff, 0xff, 0x01][..], &valid[5..]].concat()
            }
            Poison::Truncated => {
                let valid = valid()?;
                valid[..valid.len() / 2].to_vec()
            }
            Poison::InvalidValue => {
                let mut bad = order.clone();
                bad.order_id = key.clone();
                bad.command_id = rng.uuid();
                if let Some(p) = bad.place_order.as_mut() {
                    match rng.below(3) {
                        0 => p.lines[0].quantity = -2,
                        1 => p.currency = "GBP".into(),
                        _ => p.lines[0].sku = "SKU-NOPE".into(),
                    }
                }
                publisher.command(
                    crate::publisher::AnyCommand::Order(&bad),
                    &[("erp-chaos", kind.name())],
                )?;
                return Ok(kind);
            }
        };
        publisher.send_raw(
            &topic,
            key.as_bytes(),
            &value,
            at,
            &[("erp-chaos", kind.name())],
        )?;
        Ok(kind)
    }

    /// Registers the customers and the products (plus [`sample::EMPTY_SKU`]) and waits
    /// for the broker's acknowledgements. Without a publisher it only draws them (an
    /// earlier run with this seed registered them).
    pub fn catalogue(
        &mut self,
        publisher: Option<&CommandPublisher>,
        at: i64,
    ) -> Result<Catalogue, PublishError> {
        let registrations = sample::customers(&mut self.rng, self.shape.customers.max(1), at);
        let products = sample::products(&mut self.rng, self.shape.products, self.shape.stock, at);
        if let Some(publisher) = publisher {
            for cmd in &registrations {
                publisher.customer(cmd)?;
            }
            for cmd in &products {
                publisher.inventory(cmd)?;
            }
            publisher.flush()?;
        }
        Ok(Catalogue {
            customer_ids: registrations.into_iter().map(|c| c.customer_id).collect(),
            products: self.shape.products,
        })
    }

    /// Publishes the orders (and the cancels of those the mix cancels, some orders
    /// later, so they meet the saga at different steps) on the open-loop schedule;
    /// `on_order` sees each order as it goes out. Each command is stamped with its
    /// scheduled time, so latency measured from it includes any time the producer fell
    /// behind.
    pub fn orders(
        &mut self,
        publisher: &CommandPublisher,
        catalogue: &Catalogue,
        mut on_order: impl FnMut(&sample::SampleOrder),
    ) -> Result<Published, PublishError> {
        let started = Instant::now();
        let epoch = chrono::Utc::now().timestamp_millis();
        let mut out = Published::default();
        let mut cancels: Vec<(usize, String)> = Vec::new();
        for i in 0..self.shape.orders {
            let due = self
                .shape
                .rate
                .map(|r| Duration::from_secs_f64(i as f64 / r.max(0.001)));
            let at = match due {
                Some(due) => {
                    let now = started.elapsed();
                    if due > now {
                        std::thread::sleep(due - now);
                    } else {
                        out.max_lag = out.max_lag.max(now - due);
                    }
                    epoch + due.as_millis() as i64
                }
                None => chrono::Utc::now().timestamp_millis(),
            };
            let o = sample::order(
                &mut self.rng,
                catalogue.products,
                &catalogue.customer_ids,
                self.shape.mix,
                at,
            );
            publisher.order(&o.command)?;
            if self.shape.poison_pct > 0.0
                && (self.poison_rng.below(10_000) as f64) < self.shape.poison_pct * 100.0
            {
                let kind = self.poison(publisher, &o.command, at)?;
                *out.poison.entry(kind).or_default() += 1;
            }
            let rng = &mut self.rng;
            if o.cancel {
                cancels.push((i + rng.below(40) as usize, o.command.order_id.clone()));
            }
            on_order(&o);
            out.order_ids.push(o.command.order_id);
            let mut failed = None;
            cancels.retain(|(due, id)| {
                if *due > i || failed.is_some() {
                    return true;
                }
                out.cancels += 1;
                if let Err(e) = publisher.order(&sample::cancel(rng, id, at)) {
                    failed = Some(e);
                }
                false
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        for (_, id) in cancels {
            let at = chrono::Utc::now().timestamp_millis();
            publisher.order(&sample::cancel(&mut self.rng, &id, at))?;
            out.cancels += 1;
        }
        publisher.flush()?;
        out.elapsed = started.elapsed();
        Ok(out)
    }
}
