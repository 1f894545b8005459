//! The product aggregate as a pure decider.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::command::InventoryCommand;
use super::event::InventoryEvent;
use crate::values::{OrderId, Sku};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub on_hand: u32,
    pub reserved: u32,
    pub low_stock_threshold: u32,
    pub unit_weight_kg: Decimal,
    /// Held quantities by order id, then line number.
    pub reservations: BTreeMap<String, BTreeMap<u32, u32>>,
    pub version: i64,
}

impl Product {
    pub fn available(&self) -> u32 {
        self.on_hand - self.reserved
    }

    fn held_for(&self, order_id: &OrderId) -> u32 {
        self.reservations
            .get(&order_id.to_string())
            .map(|lines| lines.values().sum())
            .unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    #[error("product {0} is already registered")]
    AlreadyRegistered(Sku),
    #[error("stock of {sku} would exceed {max} units")]
    Overflow { sku: Sku, max: u32 },
}

const MAX_STOCK: u32 = i32::MAX as u32;

pub fn decide(
    sku: &Sku,
    state: Option<&Product>,
    command: &InventoryCommand,
) -> Result<Vec<InventoryEvent>, Rejection> {
    use InventoryCommand as C;
    use InventoryEvent as E;
    match (state, command) {
        (Some(_), C::RegisterProduct { .. }) => Err(Rejection::AlreadyRegistered(sku.clone())),
        (
            None,
            C::RegisterProduct {
                name,
                initial_stock,
                low_stock_threshold,
                unit_weight_kg,
            },
        ) => Ok(vec![E::Registered {
            name: name.clone(),
            on_hand: *initial_stock,
            low_stock_threshold: *low_stock_threshold,
            unit_weight_kg: *unit_weight_kg,
        }]),
        // A reservation for an unknown SKU is a business answer the order needs.
        (
            None,
            C::ReserveStock {
                order_id,
                line_no,
                quantity,
            },
        ) => Ok(vec![E::Rejected {
            order_id: *order_id,
            line_no: *line_no,
            quantity: quantity.get(),
            available: 0,
            reason: format!("unknown SKU {sku}"),
        }]),
        (None, _) => Err(Rejection::UnknownSku(sku.clone())),
        (Some(p), C::Restock { quantity }) => {
            let on_hand = p
                .on_hand
                .checked_add(quantity.get())
                .filter(|n| *n <= MAX_STOCK)
                .ok_or(Rejection::Overflow {
                    sku: sku.clone(),
                    max: MAX_STOCK,
                })?;
            Ok(vec![E::Restocked {
                quantity: quantity.get(),
                on_hand,
                available: on_hand - p.reserved,
            }])
        }
        (
            Some(p),
            C::ReserveStock {
                order_id,
                line_no,
                quantity,
            },
        ) => {
            let already = p
                .reservations
                .get(&order_id.to_string())
                .is_some_and(|lines| lines.contains_key(line_no));
            if already {
                return Ok(vec![]);
            }
            let q = quantity.get();
            let available = p.available();
            if q > available {
                return Ok(vec![E::Rejected {
                    order_id: *order_id,
                    line_no: *line_no,
                    quantity: q,
                    available,
                    reason: format!("insufficient stock: requested {q}, available {available}"),
                }]);
            }
            let left = available - q;
            let mut events = vec![E::Reserved {
                order_id: *order_id,
                line_no: *line_no,
                quantity: q,
                available: left,
            }];
            if left < p.low_stock_threshold && available >= p.low_stock_threshold {
                events.push(E::LowStock {
                    available: left,
                    threshold: p.low_stock_threshold,
                });
            }
            Ok(events)
        }
        (Some(p), C::ReleaseStock { order_id, .. }) => {
            let held = p.held_for(order_id);
            if held == 0 {
                return Ok(vec![]);
            }
            Ok(vec![E::Released {
                order_id: *order_id,
                quantity: held,
                available: p.available() + held,
            }])
        }
    }
}

pub fn evolve(sku: &Sku, state: Option<Product>, event: &InventoryEvent) -> Option<Product> {
    use InventoryEvent as E;
    match (state, event) {
        (
            None,
            E::Registered {
                name,
                on_hand,
                low_stock_threshold,
                unit_weight_kg,
            },
        ) => Some(Product {
            sku: sku.clone(),
            name: name.clone(),
            on_hand: *on_hand,
            reserved: 0,
            low_stock_threshold: *low_stock_threshold,
            unit_weight_kg: *unit_weight_kg,
            reservations: BTreeMap::new(),
            version: 1,
        }),
        (None, _) => None,
        (Some(mut p), event) => {
            match event {
                E::Registered { .. } => return Some(p),
                E::Restocked { on_hand, .. } => p.on_hand = *on_hand,
                E::Reserved {
                    order_id,
                    line_no,
                    quantity,
                    ..
                } => {
                    p.reserved += quantity;
                    p.reservations
                        .entry(order_id.to_string())
                        .or_default()
                        .insert(*line_no, *quantity);
                }
                E::Released {
                    order_id, quantity, ..
                } => {
                    p.reserved -= quantity;
                    p.reservations.remove(&order_id.to_string());
                }
                // Facts that answer a request without changing stock.
                E::Rejected { .. } | E::LowStock { .. } => return Some(p),
            }
            p.version += 1;
            Some(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Quantity;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn sku() -> Sku {
        Sku::parse("SKU-001").unwrap()
    }
    fn order(n: u8) -> OrderId {
        OrderId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap()
    }
    fn register(stock: u32, threshold: u32) -> InventoryCommand {
        InventoryCommand::RegisterProduct {
            name: "Widget".into(),
            initial_stock: stock,
            low_stock_threshold: threshold,
            unit_weight_kg: dec!(1.5),
        }
    }
    fn reserve(o: u8, line_no: u32, q: i64) -> InventoryCommand {
        InventoryCommand::ReserveStock {
            order_id: order(o),
            line_no,
            quantity: Quantity::new(q).unwrap(),
        }
    }
    fn run(history: &[InventoryCommand]) -> Option<Product> {
        let mut state = None;
        for c in history {
            for e in decide(&sku(), state.as_ref(), c).unwrap() {
                state = evolve(&sku(), state, &e);
            }
        }
        state
    }

    #[test]
    fn reserve_within_stock_then_warn_when_low() {
        let p = run(&[register(10, 5)]);
        let events = decide(&sku(), p.as_ref(), &reserve(1, 0, 6)).unwrap();
        assert_eq!(
            events,
            vec![
                InventoryEvent::Reserved {
                    order_id: order(1),
                    line_no: 0,
                    quantity: 6,
                    available: 4
                },
                InventoryEvent::LowStock {
                    available: 4,
                    threshold: 5
                },
            ]
        );
    }

    #[test]
    fn reserve_beyond_stock_is_rejected_and_changes_nothing() {
        let p = run(&[register(3, 0)]);
        let events = decide(&sku(), p.as_ref(), &reserve(1, 0, 4)).unwrap();
        assert!(
            matches!(&events[0], InventoryEvent::Rejected { available: 3, reason, .. } if reason.contains("insufficient"))
        );
        assert_eq!(evolve(&sku(), p.clone(), &events[0]), p);
    }

    #[test]
    fn unknown_sku_reservation_is_rejected_with_a_reason_other_commands_fail() {
        let events = decide(&sku(), None, &reserve(1, 0, 1)).unwrap();
        assert!(
            matches!(&events[0], InventoryEvent::Rejected { reason, .. } if reason.contains("unknown SKU"))
        );
        let restock = InventoryCommand::Restock {
            quantity: Quantity::new(1).unwrap(),
        };
        assert_eq!(
            decide(&sku(), None, &restock),
            Err(Rejection::UnknownSku(sku()))
        );
        assert_eq!(
            decide(&sku(), run(&[register(1, 0)]).as_ref(), &register(1, 0)),
            Err(Rejection::AlreadyRegistered(sku()))
        );
    }

    #[test]
    fn release_returns_everything_held_for_the_order_once() {
        let p = run(&[
            register(10, 0),
            reserve(1, 0, 2),
            reserve(1, 1, 3),
            reserve(2, 0, 1),
        ])
        .unwrap();
        assert_eq!(p.available(), 4);
        let release = InventoryCommand::ReleaseStock {
            order_id: order(1),
            reason: "cancel".into(),
        };
        let p = run(&[
            register(10, 0),
            reserve(1, 0, 2),
            reserve(1, 1, 3),
            reserve(2, 0, 1),
            release.clone(),
        ])
        .unwrap();
        assert_eq!((p.reserved, p.available()), (1, 9));
        assert_eq!(decide(&sku(), Some(&p), &release).unwrap(), vec![]);
    }

    #[test]
    fn a_repeated_reservation_of_the_same_line_is_not_applied_twice() {
        let p = run(&[register(10, 0), reserve(1, 0, 2)]);
        assert_eq!(
            decide(&sku(), p.as_ref(), &reserve(1, 0, 2)).unwrap(),
            vec![]
        );
    }

    proptest! {
        /// Any sequence of commands keeps 0 ≤ reserved ≤ on_hand and conserves stock:
        /// on_hand = initial + restocked; reserved = Σ held.
        #[test]
        fn never_oversold(ops in proptest::collection::vec((0u8..4, 0u8..6, 1i64..8), 0..60)) {
            let mut state = run(&[register(10, 3)]);
            let mut restocked = 0u32;
            for (kind, o, q) in ops {
                let cmd = match kind {
                    0 | 1 => reserve(o, u32::from(q as u8 % 2), q),
                    2 => InventoryCommand::ReleaseStock { order_id: order(o), reason: "x".into() },
                    _ => InventoryCommand::Restock { quantity: Quantity::new(q).unwrap() },
                };
                for e in decide(&sku(), state.as_ref(), &cmd).unwrap() {
                    if let InventoryEvent::Restocked { quantity, .. } = e { restocked += quantity; }
                    state = evolve(&sku(), state, &e);
                }
                let p = state.as_ref().unwrap();
                prop_assert!(p.reserved <= p.on_hand);
                prop_assert_eq!(p.on_hand, 10 + restocked);
                let held: u32 = p.reservations.values().flat_map(|l| l.values()).sum();
                prop_assert_eq!(held, p.reserved);
            }
        }
    }
}
