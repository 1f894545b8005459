//! The whole saga as a model: the five pure deciders wired by FIFO channels (Kafka's
//! per-partition order), with every delivery order, customer cancels, carrier dispatches,
//! restocks (into a second warehouse too) and reservation expiries interleaved at random. Whatever the interleaving, at
//! quiescence: every order has exactly one terminal event, no stock is held or
//! oversold, units sold = units of completed orders, and captured − refunded = the
//! total of completed orders (per order).

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use rust_decimal::Decimal;

use erp_processors::inventory::{self, InventoryCommand, InventoryEvent, Product};
use erp_processors::order::pricing::CustomerTier;
use erp_processors::order::saga::{SagaCommand, react};
use erp_processors::order::{self, Order, OrderInput, OrderLineRequest, PlaceOrder};
use erp_processors::payment::{self, Payment, PaymentCommand, PaymentEvent};
use erp_processors::shipping::{self, Method, Shipment, ShipmentCommand, ShipmentEvent};
use erp_processors::values::{Address, Currency, CustomerId, Money, OrderId, Quantity, Sku};

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) % n.max(1) as u64) as usize
    }
}

const SKUS: usize = 2;
const ORDERS: usize = 4;

fn sku(i: usize) -> Sku {
    Sku::parse(&format!("SKU-{i:03}")).unwrap()
}
fn oid(i: usize) -> OrderId {
    OrderId::parse(&format!("00000000-0000-4000-8000-0000000000{i:02}")).unwrap()
}

#[derive(Default)]
struct World {
    orders: BTreeMap<usize, Option<Order>>,
    products: BTreeMap<usize, Option<Product>>,
    payments: BTreeMap<usize, Option<Payment>>,
    shipments: BTreeMap<usize, Option<Shipment>>,
    /// Kafka partitions: inventory commands per SKU; payment, shipping, carrier and
    /// client commands per order; replies to each order per source context.
    inventory_q: BTreeMap<usize, VecDeque<InventoryCommand>>,
    payment_q: BTreeMap<usize, VecDeque<PaymentCommand>>,
    shipping_q: BTreeMap<usize, VecDeque<ShipmentCommand>>,
    carrier_q: BTreeMap<usize, VecDeque<ShipmentCommand>>,
    client_q: BTreeMap<usize, VecDeque<OrderInput>>,
    replies: BTreeMap<(usize, u8), VecDeque<OrderInput>>,
    terminal: BTreeMap<usize, Vec<&'static str>>,
    captured: BTreeMap<usize, Decimal>,
    refunded: BTreeMap<usize, Decimal>,
    sold: BTreeMap<usize, i64>,
}

fn idx_of_sku(s: &Sku) -> usize {
    s.as_str()[4..].parse().unwrap()
}

impl World {
    fn order_step(&mut self, o: usize, input: OrderInput, t: i64) {
        let mut state = self.orders.get(&o).cloned().flatten();
        let Ok(events) = order::decide(oid(o), state.as_ref(), &input, t) else {
            return; // a rejection changes nothing
        };
        for e in events {
            if e.is_terminal() {
                self.terminal.entry(o).or_default().push(e.name());
            }
            state = order::evolve(state, &e);
            let after = state.clone().unwrap();
            for cmd in react(&after, &e) {
                self.send(o, &after, cmd);
            }
        }
        self.orders.insert(o, state);
    }

    fn send(&mut self, o: usize, order: &Order, cmd: SagaCommand) {
        let inv = |w: &mut World, s: &Sku, c| {
            w.inventory_q.entry(idx_of_sku(s)).or_default().push_back(c)
        };
        match cmd {
            SagaCommand::ReserveStock {
                sku,
                line_no,
                quantity,
            } => inv(
                self,
                &sku,
                InventoryCommand::ReserveStock {
                    order_id: oid(o),
                    line_no,
                    quantity: Quantity::new(i64::from(quantity)).unwrap(),
                    channel: None,
                },
            ),
            SagaCommand::ReleaseStock { sku, reason } => inv(
                self,
                &sku,
                InventoryCommand::ReleaseStock {
                    order_id: oid(o),
                    reason,
                    channel: None,
                },
            ),
            SagaCommand::CommitReservation { sku } => inv(
                self,
                &sku,
                InventoryCommand::CommitReservation { order_id: oid(o) },
            ),
            SagaCommand::ReturnStock {
                sku,
                quantity,
                reason,
            } => inv(
                self,
                &sku,
                InventoryCommand::ReturnStock {
                    order_id: oid(o),
                    quantity: Quantity::new(i64::from(quantity)).unwrap(),
                    reason,
                },
            ),
            SagaCommand::AuthorizePayment { amount, method } => self
                .payment_q
                .entry(o)
                .or_default()
                .push_back(PaymentCommand::Authorize { amount, method }),
            SagaCommand::CapturePayment => self
                .payment_q
                .entry(o)
                .or_default()
                .push_back(PaymentCommand::Capture),
            SagaCommand::VoidPayment { .. } => self
                .payment_q
                .entry(o)
                .or_default()
                .push_back(PaymentCommand::Void),
            SagaCommand::RefundPayment { .. } => self
                .payment_q
                .entry(o)
                .or_default()
                .push_back(PaymentCommand::Refund { amount: None }),
            SagaCommand::CreateShipment { method, weight_kg } => self
                .shipping_q
                .entry(o)
                .or_default()
                .push_back(ShipmentCommand::Create {
                    order_id: oid(o),
                    address: order.shipping_address.clone(),
                    weight_kg,
                    method,
                    currency: order.currency,
                    at: 0,
                }),
            SagaCommand::CancelShipment { reason } => self
                .shipping_q
                .entry(o)
                .or_default()
                .push_back(ShipmentCommand::Cancel { reason }),
        }
    }

    fn reply(&mut self, o: usize, source: u8, input: OrderInput) {
        self.replies
            .entry((o, source))
            .or_default()
            .push_back(input);
    }

    fn inventory_step(&mut self, s: usize, cmd: InventoryCommand, t: i64) {
        let mut state = self.products.get(&s).cloned().flatten();
        let Ok(events) = inventory::decide(&sku(s), state.as_ref(), &cmd, t) else {
            return;
        };
        for e in events {
            state = inventory::evolve(&sku(s), state, &e);
            let o = |id: &OrderId| (0..ORDERS).find(|i| oid(*i) == *id).unwrap();
            match &e {
                InventoryEvent::Reserved {
                    order_id, line_no, ..
                } => self.reply(
                    o(order_id),
                    0,
                    OrderInput::StockReserved { line_no: *line_no },
                ),
                InventoryEvent::Rejected {
                    order_id,
                    line_no,
                    reason,
                    ..
                } => self.reply(
                    o(order_id),
                    0,
                    OrderInput::StockRejected {
                        line_no: *line_no,
                        reason: reason.clone(),
                    },
                ),
                InventoryEvent::Expired { order_id, .. } => {
                    self.reply(o(order_id), 0, OrderInput::StockExpired { sku: sku(s) })
                }
                InventoryEvent::Committed {
                    order_id, quantity, ..
                } => {
                    *self.sold.entry(s).or_default() += i64::from(*quantity);
                    self.reply(o(order_id), 0, OrderInput::StockCommitted { sku: sku(s) })
                }
                InventoryEvent::CommitRejected { order_id, reason } => self.reply(
                    o(order_id),
                    0,
                    OrderInput::StockCommitRejected {
                        sku: sku(s),
                        reason: reason.clone(),
                    },
                ),
                InventoryEvent::Returned { quantity, .. } => {
                    *self.sold.entry(s).or_default() -= i64::from(*quantity)
                }
                _ => {}
            }
        }
        self.products.insert(s, state);
    }

    fn payment_step(&mut self, o: usize, cmd: PaymentCommand) {
        let mut state = self.payments.get(&o).cloned().flatten();
        let Ok(events) = payment::decide(oid(o), state.as_ref(), &cmd) else {
            return;
        };
        for e in events {
            state = payment::evolve(oid(o), state, &e);
            match &e {
                PaymentEvent::Authorized {
                    authorization_code, ..
                } => self.reply(
                    o,
                    1,
                    OrderInput::PaymentAuthorized {
                        authorization_code: authorization_code.clone(),
                    },
                ),
                PaymentEvent::Failed { reason } => self.reply(
                    o,
                    1,
                    OrderInput::PaymentFailed {
                        reason: reason.clone(),
                    },
                ),
                PaymentEvent::Captured { amount } => {
                    *self.captured.entry(o).or_default() += amount.amount();
                    self.reply(o, 1, OrderInput::PaymentCaptured { amount: *amount })
                }
                PaymentEvent::CaptureFailed { reason } => self.reply(
                    o,
                    1,
                    OrderInput::PaymentCaptureFailed {
                        reason: reason.clone(),
                    },
                ),
                PaymentEvent::Refunded { amount, .. } => {
                    *self.refunded.entry(o).or_default() += amount.amount()
                }
                PaymentEvent::Voided { .. } => {}
            }
        }
        self.payments.insert(o, state);
    }

    fn shipping_step(&mut self, o: usize, cmd: ShipmentCommand) {
        let mut state = self.shipments.get(&o).cloned().flatten();
        let creating = matches!(cmd, ShipmentCommand::Create { .. });
        let events = match shipping::decide(&oid(o).to_string(), state.as_ref(), &cmd) {
            Ok(e) => e,
            Err(e) if creating => {
                return self.reply(
                    o,
                    2,
                    OrderInput::ShipmentFailed {
                        reason: e.to_string(),
                    },
                );
            }
            Err(_) => return,
        };
        for e in events {
            state = shipping::evolve(state, &e);
            match &e {
                ShipmentEvent::Created {
                    carrier,
                    tracking_number,
                    ..
                } => {
                    self.reply(
                        o,
                        2,
                        OrderInput::ShipmentCreated {
                            carrier: carrier.clone(),
                            tracking_number: tracking_number.clone(),
                        },
                    );
                    let q = self.carrier_q.entry(o).or_default();
                    q.push_back(ShipmentCommand::Dispatch { at: 1 });
                    q.push_back(ShipmentCommand::Deliver { at: 2 });
                }
                ShipmentEvent::Dispatched { .. } => {
                    self.reply(o, 2, OrderInput::ShipmentDispatched)
                }
                ShipmentEvent::Delivered { .. } => self.reply(o, 2, OrderInput::ShipmentDelivered),
                ShipmentEvent::Cancelled { .. } => self.reply(o, 2, OrderInput::ShipmentCancelled),
            }
        }
        self.shipments.insert(o, state);
    }
}

fn place(rng: &mut Rng) -> OrderInput {
    let n = 1 + rng.below(2);
    let lines = (0..n)
        .map(|i| OrderLineRequest {
            sku: sku((i + rng.below(SKUS)) % SKUS),
            product_name: "p".into(),
            quantity: Quantity::new(1 + rng.below(3) as i64).unwrap(),
            unit_price: Money::new(Decimal::from(5 + rng.below(20)), Currency::USD).unwrap(),
            unit_weight_kg: Decimal::from(2),
        })
        .collect();
    let pc = ["10001", "90210", "00042"][rng.below(3)];
    OrderInput::Place(PlaceOrder {
        customer_id: CustomerId::parse("0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33").unwrap(),
        customer_tier: Some(CustomerTier::Silver),
        currency: Currency::USD,
        lines,
        shipping_address: Address::new("1 Main", "Town", pc, "US").unwrap(),
        payment_method: ["tok_visa", "tok_visa", "tok_decline", "tok_capture_fail"][rng.below(4)]
            .into(),
        shipping_method: if rng.below(2) == 0 {
            Method::Standard
        } else {
            Method::Express
        },
        manual_confirmation: false,
    })
}

fn run(seed: u64, with_expiry: bool) -> World {
    let mut rng = Rng(seed);
    let mut w = World::default();
    for s in 0..SKUS {
        w.inventory_step(
            s,
            InventoryCommand::RegisterProduct {
                name: "p".into(),
                warehouse: "main".into(),
                initial_stock: 2 + rng.below(6) as u32,
                low_stock_threshold: 2,
                reorder_point: 3,
                reorder_quantity: 10,
                unit_weight_kg: Decimal::ONE,
            },
            0,
        );
    }
    for o in 0..ORDERS {
        let q = w.client_q.entry(o).or_default();
        q.push_back(place(&mut rng));
        if rng.below(3) == 0 {
            q.push_back(OrderInput::Cancel {
                reason: "changed my mind".into(),
            });
        }
    }
    let mut t = 1;
    loop {
        t += 1;
        // Every non-empty queue, then one picked at random.
        let mut ready: Vec<(u8, usize, u8)> = Vec::new();
        ready.extend(
            w.client_q
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(o, _)| (0, *o, 0)),
        );
        ready.extend(
            w.inventory_q
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(s, _)| (1, *s, 0)),
        );
        ready.extend(
            w.payment_q
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(o, _)| (2, *o, 0)),
        );
        ready.extend(
            w.shipping_q
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(o, _)| (3, *o, 0)),
        );
        ready.extend(
            w.carrier_q
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(o, _)| (4, *o, 0)),
        );
        ready.extend(
            w.replies
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|((o, src), _)| (5, *o, *src)),
        );
        if ready.is_empty() {
            break;
        }
        // Now and then the expiry punctuation fires for whatever is held.
        if with_expiry && rng.below(25) == 0 {
            for s in 0..SKUS {
                let held: Vec<OrderId> = w.products[&s]
                    .as_ref()
                    .map(|p| p.holds.keys().map(|o| OrderId::parse(o).unwrap()).collect())
                    .unwrap_or_default();
                for order_id in held {
                    w.inventory_q.entry(s).or_default().push_back(
                        InventoryCommand::ExpireReservation {
                            order_id,
                            hold: None,
                        },
                    );
                }
            }
        }
        // And now and then a restock lands, in a second warehouse too.
        if rng.below(30) == 0 {
            let s = rng.below(SKUS);
            w.inventory_q
                .entry(s)
                .or_default()
                .push_back(InventoryCommand::Restock {
                    warehouse: ["main", "east"][rng.below(2)].into(),
                    quantity: Quantity::new(1 + rng.below(3) as i64).unwrap(),
                });
        }
        let (kind, k, src) = ready[rng.below(ready.len())];
        match kind {
            0 => {
                let input = w.client_q.get_mut(&k).unwrap().pop_front().unwrap();
                w.order_step(k, input, t);
            }
            1 => {
                let cmd = w.inventory_q.get_mut(&k).unwrap().pop_front().unwrap();
                w.inventory_step(k, cmd, t);
            }
            2 => {
                let cmd = w.payment_q.get_mut(&k).unwrap().pop_front().unwrap();
                w.payment_step(k, cmd);
            }
            3 => {
                let cmd = w.shipping_q.get_mut(&k).unwrap().pop_front().unwrap();
                w.shipping_step(k, cmd);
            }
            4 => {
                let cmd = w.carrier_q.get_mut(&k).unwrap().pop_front().unwrap();
                w.shipping_q.entry(k).or_default().push_back(cmd);
            }
            _ => {
                let input = w.replies.get_mut(&(k, src)).unwrap().pop_front().unwrap();
                w.order_step(k, input, t);
            }
        }
    }
    w
}

fn check(w: &World) -> Result<(), TestCaseError> {
    let mut completed_units: BTreeMap<usize, i64> = BTreeMap::new();
    for o in 0..ORDERS {
        let order = w.orders[&o].as_ref().expect("every order was placed");
        let terminals = w.terminal.get(&o).cloned().unwrap_or_default();
        prop_assert_eq!(
            terminals.len(),
            1,
            "order {} ended {:?} ({:?})",
            o,
            terminals,
            order.status
        );
        let completed = terminals[0] == "OrderCompleted";
        let net = w.captured.get(&o).copied().unwrap_or_default()
            - w.refunded.get(&o).copied().unwrap_or_default();
        let expected = if completed {
            order.pricing.total.amount()
        } else {
            Decimal::ZERO
        };
        prop_assert_eq!(net, expected, "money of order {} ({:?})", o, order.history);
        if completed {
            for l in &order.lines {
                *completed_units.entry(idx_of_sku(&l.sku)).or_default() +=
                    i64::from(l.quantity.get());
            }
        }
    }
    for s in 0..SKUS {
        let p = w.products[&s].as_ref().unwrap();
        prop_assert!(p.holds.is_empty(), "SKU {} still holds {:?}", s, p.holds);
        for stock in p.warehouses.values() {
            prop_assert!(stock.reserved <= stock.on_hand);
        }
        prop_assert_eq!(
            w.sold.get(&s).copied().unwrap_or(0),
            completed_units.get(&s).copied().unwrap_or(0)
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn every_interleaving_ends_consistently(seed in any::<u64>(), with_expiry in any::<bool>()) {
        let w = run(seed, with_expiry);
        check(&w)?;
    }
}

#[test]
fn the_model_reaches_every_outcome() {
    // Across seeds the model sees completions and every kind of cancellation, so the
    // property above is not vacuous.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for seed in 0..400 {
        let w = run(seed, seed % 2 == 0);
        for o in w.orders.values().flatten() {
            let key = match (&o.status, &o.cancel_reason) {
                (_, Some(r)) => r.split([':', '(']).next().unwrap().trim().to_string(),
                (s, None) => format!("{s:?}"),
            };
            *reasons.entry(key).or_default() += 1;
        }
    }
    for want in [
        "Completed",
        "stock unavailable",
        "payment declined",
        "payment capture failed",
        "shipment impossible",
        "cancelled by customer",
        "reservation of SKU-000 expired before the order was paid",
    ] {
        assert!(
            reasons.contains_key(want),
            "{want} never happened: {reasons:?}"
        );
        eprintln!("{want}: {}", reasons[want]);
    }
}
