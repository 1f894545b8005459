//! The order aggregate as a pure decider: `decide` turns an input into events (or a
//! rejection), `evolve` folds an event into the state. No I/O, no clock, no randomness:
//! time comes from the input record.

use serde::{Deserialize, Serialize};

use super::command::{OrderInput, OrderLineRequest, PlaceOrder};
use super::event::OrderEvent;
use super::pricing::{CustomerTier, Pricing, price};
use crate::values::{Address, Currency, CustomerId, OrderId, Sku};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Created, waiting for stock replies.
    Pending,
    Confirmed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReservationState {
    Requested,
    Reserved,
    Rejected(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub customer_id: CustomerId,
    pub customer_tier: String,
    pub status: OrderStatus,
    pub currency: Currency,
    pub lines: Vec<OrderLineRequest>,
    pub reservations: Vec<ReservationState>,
    pub shipping_address: Address,
    pub pricing: Pricing,
    pub cancel_reason: Option<String>,
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Order {
    pub fn reserved_skus(&self) -> Vec<Sku> {
        let mut skus: Vec<Sku> = self
            .lines
            .iter()
            .zip(&self.reservations)
            .filter(|(_, r)| **r == ReservationState::Reserved)
            .map(|(l, _)| l.sku.clone())
            .collect();
        skus.sort();
        skus.dedup();
        skus
    }
}

/// Why an input was not applied. Reported to the sender as a rejection event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("order {0} already exists")]
    AlreadyExists(OrderId),
    #[error("order {0} does not exist")]
    UnknownOrder(OrderId),
    #[error("order must have at least one line")]
    NoLines,
    #[error("line {line_no} is in {found}, the order is in {expected}")]
    CurrencyMismatch {
        line_no: usize,
        found: Currency,
        expected: Currency,
    },
    #[error("invalid order: {0}")]
    Invalid(String),
    #[error("line {0} does not exist")]
    UnknownLine(u32),
    #[error("order {0} is already cancelled")]
    AlreadyCancelled(OrderId),
}

/// Decides what happens when `input` reaches the order `state` (None: no such order).
/// `now` is the input record's timestamp.
pub fn decide(
    id: OrderId,
    state: Option<&Order>,
    input: &OrderInput,
    now: i64,
) -> Result<Vec<OrderEvent>, Rejection> {
    match (state, input) {
        (Some(_), OrderInput::Place(_)) => Err(Rejection::AlreadyExists(id)),
        (None, OrderInput::Place(cmd)) => place(id, cmd, now),
        (None, _) => Err(Rejection::UnknownOrder(id)),
        (Some(order), OrderInput::Cancel { reason }) => {
            if order.status == OrderStatus::Cancelled {
                return Err(Rejection::AlreadyCancelled(id));
            }
            Ok(vec![OrderEvent::Cancelled {
                reason: format!("cancelled by customer: {reason}"),
                released_skus: order.reserved_skus(),
                at: now,
            }])
        }
        (Some(order), OrderInput::StockReserved { line_no }) => reply(order, *line_no, None, now),
        (Some(order), OrderInput::StockRejected { line_no, reason }) => {
            reply(order, *line_no, Some(reason.clone()), now)
        }
    }
}

fn place(id: OrderId, cmd: &PlaceOrder, now: i64) -> Result<Vec<OrderEvent>, Rejection> {
    if cmd.lines.is_empty() {
        return Err(Rejection::NoLines);
    }
    if let Some((i, l)) = cmd
        .lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.unit_price.currency() != cmd.currency)
    {
        return Err(Rejection::CurrencyMismatch {
            line_no: i,
            found: l.unit_price.currency(),
            expected: cmd.currency,
        });
    }
    // Customers are not known to the order context yet: everyone is Bronze.
    let tier = CustomerTier::Bronze;
    let pricing = price(&cmd.lines, tier, &cmd.shipping_address, cmd.currency)
        .map_err(|e| Rejection::Invalid(e.to_string()))?;
    Ok(vec![OrderEvent::Created {
        order_id: id,
        customer_id: cmd.customer_id,
        customer_tier: tier.name().to_string(),
        currency: cmd.currency,
        lines: cmd.lines.clone(),
        shipping_address: cmd.shipping_address.clone(),
        pricing,
        at: now,
    }])
}

fn reply(
    order: &Order,
    line_no: u32,
    rejected: Option<String>,
    now: i64,
) -> Result<Vec<OrderEvent>, Rejection> {
    let idx = line_no as usize;
    let line = order
        .lines
        .get(idx)
        .ok_or(Rejection::UnknownLine(line_no))?;
    // A reply that was already recorded (redelivery), or that arrives after the order
    // was confirmed, changes nothing.
    if order.status == OrderStatus::Confirmed
        || order.reservations[idx] != ReservationState::Requested
    {
        return Ok(vec![]);
    }
    let first = match rejected {
        None => OrderEvent::LineReserved {
            line_no,
            sku: line.sku.clone(),
            quantity: line.quantity.get(),
            at: now,
        },
        Some(reason) => OrderEvent::LineRejected {
            line_no,
            sku: line.sku.clone(),
            reason,
            at: now,
        },
    };
    // The customer cancelled while this line was being reserved: record the answer (a
    // reservation is then released by the saga); the order stays cancelled.
    if order.status == OrderStatus::Cancelled {
        return Ok(vec![first]);
    }
    let after = evolve(Some(order.clone()), &first).expect("order exists");
    let mut events = vec![first];
    let all_answered = after
        .reservations
        .iter()
        .all(|r| *r != ReservationState::Requested);
    if all_answered {
        let reasons: Vec<String> = after
            .reservations
            .iter()
            .zip(&after.lines)
            .filter_map(|(r, l)| match r {
                ReservationState::Rejected(why) => Some(format!("{}: {why}", l.sku)),
                _ => None,
            })
            .collect();
        if reasons.is_empty() {
            events.push(OrderEvent::Confirmed {
                total: after.pricing.total,
                at: now,
            });
        } else {
            events.push(OrderEvent::Cancelled {
                reason: format!("stock unavailable ({})", reasons.join("; ")),
                released_skus: after.reserved_skus(),
                at: now,
            });
        }
    }
    Ok(events)
}

/// Folds one event into the state. `Created` starts an order; every event bumps the
/// version.
pub fn evolve(state: Option<Order>, event: &OrderEvent) -> Option<Order> {
    match (state, event) {
        (
            None,
            OrderEvent::Created {
                order_id,
                customer_id,
                customer_tier,
                currency,
                lines,
                shipping_address,
                pricing,
                at,
            },
        ) => Some(Order {
            id: *order_id,
            customer_id: *customer_id,
            customer_tier: customer_tier.clone(),
            status: OrderStatus::Pending,
            currency: *currency,
            lines: lines.clone(),
            reservations: vec![ReservationState::Requested; lines.len()],
            shipping_address: shipping_address.clone(),
            pricing: pricing.clone(),
            cancel_reason: None,
            version: 1,
            created_at: *at,
            updated_at: *at,
        }),
        (None, _) => None,
        (Some(mut order), event) => {
            match event {
                OrderEvent::Created { .. } => return Some(order),
                OrderEvent::LineReserved { line_no, .. } => {
                    order.reservations[*line_no as usize] = ReservationState::Reserved;
                }
                OrderEvent::LineRejected {
                    line_no, reason, ..
                } => {
                    order.reservations[*line_no as usize] =
                        ReservationState::Rejected(reason.clone());
                }
                OrderEvent::Confirmed { .. } => order.status = OrderStatus::Confirmed,
                OrderEvent::Cancelled { reason, .. } => {
                    order.status = OrderStatus::Cancelled;
                    order.cancel_reason = Some(reason.clone());
                }
            }
            order.version += 1;
            order.updated_at = event.at();
            Some(order)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Money, Quantity};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn oid() -> OrderId {
        OrderId::parse("6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11").unwrap()
    }

    fn place_cmd(lines: usize) -> OrderInput {
        OrderInput::Place(PlaceOrder {
            customer_id: CustomerId::parse("0b6f3f34-7f0c-4f8e-b0a4-9e7f6c1d2e33").unwrap(),
            currency: Currency::USD,
            lines: (0..lines)
                .map(|i| OrderLineRequest {
                    sku: Sku::parse(&format!("SKU-{i:03}")).unwrap(),
                    product_name: format!("p{i}"),
                    quantity: Quantity::new(2).unwrap(),
                    unit_price: Money::new(dec!(10), Currency::USD).unwrap(),
                    unit_weight_kg: dec!(5),
                })
                .collect(),
            shipping_address: Address::new("1 Main", "Town", "10001", "US").unwrap(),
        })
    }

    /// given `history`, when `input`, then the decision.
    fn given_when(
        history: &[OrderInput],
        input: &OrderInput,
    ) -> (Option<Order>, Result<Vec<OrderEvent>, Rejection>) {
        let mut state = None;
        for (t, h) in history.iter().enumerate() {
            for e in decide(oid(), state.as_ref(), h, t as i64).unwrap() {
                state = evolve(state, &e);
            }
        }
        let out = decide(oid(), state.as_ref(), input, 100);
        (state, out)
    }

    #[test]
    fn placing_an_order_prices_it_and_leaves_it_pending() {
        let (_, out) = given_when(&[], &place_cmd(2));
        let events = out.unwrap();
        assert_eq!(events.len(), 1);
        let order = evolve(None, &events[0]).unwrap();
        assert_eq!(order.status, OrderStatus::Pending);
        assert_eq!(order.pricing.subtotal.amount(), dec!(40));
        assert_eq!(order.pricing.tax.amount(), dec!(4));
        assert_eq!(order.pricing.total.amount(), dec!(54));
        assert_eq!(order.customer_tier, "BRONZE");
    }

    #[test]
    fn all_lines_reserved_confirms_the_order() {
        let (_, out) = given_when(
            &[place_cmd(2), OrderInput::StockReserved { line_no: 0 }],
            &OrderInput::StockReserved { line_no: 1 },
        );
        let events = out.unwrap();
        assert!(matches!(
            events[0],
            OrderEvent::LineReserved { line_no: 1, .. }
        ));
        assert!(matches!(events[1], OrderEvent::Confirmed { .. }));
    }

    #[test]
    fn a_rejected_line_cancels_and_releases_the_reserved_ones() {
        let (_, out) = given_when(
            &[place_cmd(2), OrderInput::StockReserved { line_no: 0 }],
            &OrderInput::StockRejected {
                line_no: 1,
                reason: "only 1 available".into(),
            },
        );
        let events = out.unwrap();
        match &events[1] {
            OrderEvent::Cancelled {
                reason,
                released_skus,
                ..
            } => {
                assert!(reason.contains("SKU-001: only 1 available"), "{reason}");
                assert_eq!(released_skus, &vec![Sku::parse("SKU-000").unwrap()]);
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_replies_and_late_replies_change_nothing() {
        let (_, out) = given_when(
            &[place_cmd(2), OrderInput::StockReserved { line_no: 0 }],
            &OrderInput::StockReserved { line_no: 0 },
        );
        assert_eq!(out.unwrap(), vec![]);
        let (_, out) = given_when(
            &[place_cmd(1), OrderInput::StockReserved { line_no: 0 }],
            &OrderInput::StockRejected {
                line_no: 0,
                reason: "late".into(),
            },
        );
        assert_eq!(out.unwrap(), vec![]);
    }

    #[test]
    fn a_customer_cancel_releases_what_is_reserved_and_late_reservations_too() {
        let cancel = OrderInput::Cancel {
            reason: "changed my mind".into(),
        };
        let (_, out) = given_when(
            &[place_cmd(2), OrderInput::StockReserved { line_no: 0 }],
            &cancel,
        );
        match &out.unwrap()[0] {
            OrderEvent::Cancelled {
                reason,
                released_skus,
                ..
            } => {
                assert_eq!(reason, "cancelled by customer: changed my mind");
                assert_eq!(released_skus, &vec![Sku::parse("SKU-000").unwrap()]);
            }
            other => panic!("expected Cancelled, got {other:?}"),
        }
        // Line 1's reservation lands after the cancel: recorded, and released by the saga.
        let history = [
            place_cmd(2),
            OrderInput::StockReserved { line_no: 0 },
            cancel.clone(),
        ];
        let (state, out) = given_when(&history, &OrderInput::StockReserved { line_no: 1 });
        let events = out.unwrap();
        assert!(matches!(
            events[..],
            [OrderEvent::LineReserved { line_no: 1, .. }]
        ));
        let after = evolve(state, &events[0]).unwrap();
        assert_eq!(after.status, OrderStatus::Cancelled);
        assert_eq!(
            super::super::saga::react(&after, &events[0]),
            vec![super::super::saga::SagaCommand::ReleaseStock {
                sku: Sku::parse("SKU-001").unwrap(),
                reason: "order cancelled".into()
            }]
        );
        assert_eq!(
            given_when(&history, &cancel).1,
            Err(Rejection::AlreadyCancelled(oid()))
        );
        // A confirmed order can still be cancelled before shipping: everything is released.
        let confirmed = [place_cmd(1), OrderInput::StockReserved { line_no: 0 }];
        assert!(matches!(
            given_when(&confirmed, &cancel).1.unwrap()[0],
            OrderEvent::Cancelled { .. }
        ));
    }

    #[test]
    fn invalid_inputs_are_rejected_with_a_reason() {
        assert_eq!(
            given_when(&[place_cmd(1)], &place_cmd(1)).1,
            Err(Rejection::AlreadyExists(oid()))
        );
        assert_eq!(given_when(&[], &place_cmd(0)).1, Err(Rejection::NoLines));
        assert_eq!(
            given_when(&[], &OrderInput::StockReserved { line_no: 0 }).1,
            Err(Rejection::UnknownOrder(oid()))
        );
        assert_eq!(
            given_when(&[place_cmd(1)], &OrderInput::StockReserved { line_no: 5 }).1,
            Err(Rejection::UnknownLine(5))
        );
        let OrderInput::Place(mut cmd) = place_cmd(1) else {
            unreachable!()
        };
        cmd.lines[0].unit_price = Money::new(dec!(1), Currency::EUR).unwrap();
        assert!(matches!(
            given_when(&[], &OrderInput::Place(cmd)).1,
            Err(Rejection::CurrencyMismatch { .. })
        ));
    }

    proptest! {
        /// Whatever order the replies arrive in, and however often, the order ends with
        /// exactly one terminal event, and it is Confirmed iff no line was rejected.
        #[test]
        fn exactly_one_terminal_event(replies in proptest::collection::vec((0u32..4, any::<bool>()), 0..30)) {
            let lines = 4;
            let mut state = None;
            for e in decide(oid(), None, &place_cmd(lines), 0).unwrap() { state = evolve(state, &e); }
            let mut terminal = 0;
            let mut first_answer: std::collections::BTreeMap<u32, bool> = Default::default();
            for (line_no, ok) in replies.iter().copied().chain((0..4).map(|l| (l, true))) {
                let input = if ok { OrderInput::StockReserved { line_no } }
                            else { OrderInput::StockRejected { line_no, reason: "no".into() } };
                first_answer.entry(line_no).or_insert(ok);
                for e in decide(oid(), state.as_ref(), &input, 1).unwrap() {
                    terminal += usize::from(e.is_terminal());
                    state = evolve(state, &e);
                }
            }
            prop_assert_eq!(terminal, 1);
            let order = state.unwrap();
            let all_ok = first_answer.values().all(|ok| *ok);
            prop_assert_eq!(order.status == OrderStatus::Confirmed, all_ok);
        }
    }
}
