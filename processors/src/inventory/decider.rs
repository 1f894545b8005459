//! The product aggregate as a pure decider.
//!
//! Stock lives in warehouses. The allocator (documented in [`allocate`]) chooses where
//! a reservation is held. Holds are kept on the product only while in flight: a commit
//! (sale), release or expiry removes them, so a product's state does not grow with the
//! number of orders it ever served.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::command::InventoryCommand;
use super::event::InventoryEvent;
use crate::values::{OrderId, Sku};

/// Where returned goods are booked when the product has no warehouse of that name.
pub const DEFAULT_WAREHOUSE: &str = "main";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseStock {
    pub on_hand: u32,
    pub reserved: u32,
}

/// Stock held for one order: per line, units per warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub lines: BTreeMap<u32, BTreeMap<String, u32>>,
    /// Record time of the first reservation of the order; expiry counts from here.
    pub reserved_at: i64,
    /// Who holds it outside the order saga (None: the saga).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

impl Hold {
    /// Identifies this hold among the holds an order may take on one SKU over time (an
    /// updated order releases and reserves again).
    pub fn id(&self) -> String {
        let first_line = self.lines.keys().next().copied().unwrap_or(0);
        format!("{}/{first_line}", self.reserved_at)
    }

    pub fn quantity(&self) -> u32 {
        self.lines.values().flat_map(|a| a.values()).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub warehouses: BTreeMap<String, WarehouseStock>,
    pub low_stock_threshold: u32,
    pub reorder_point: u32,
    pub reorder_quantity: u32,
    pub unit_weight_kg: Decimal,
    /// In-flight holds by order id.
    pub holds: BTreeMap<String, Hold>,
    pub version: i64,
}

impl Product {
    pub fn on_hand(&self) -> u32 {
        self.warehouses.values().map(|w| w.on_hand).sum()
    }

    pub fn reserved(&self) -> u32 {
        self.warehouses.values().map(|w| w.reserved).sum()
    }

    pub fn available(&self) -> u32 {
        self.on_hand() - self.reserved()
    }
}

/// The allocator. Rule: one warehouse if any can fill the whole line — the one with the
/// most available units (ties: the first by name), so a line ships from one place;
/// otherwise split, taking from the warehouses with the most available first (ties by
/// name) until the line is filled. `None` when all warehouses together cannot fill it.
pub fn allocate(
    warehouses: &BTreeMap<String, WarehouseStock>,
    quantity: u32,
) -> Option<BTreeMap<String, u32>> {
    let mut by_available: Vec<(&String, u32)> = warehouses
        .iter()
        .map(|(name, w)| (name, w.on_hand - w.reserved))
        .filter(|(_, a)| *a > 0)
        .collect();
    // Stable sort: equal availability keeps name order.
    by_available.sort_by_key(|(_, available)| std::cmp::Reverse(*available));
    if let Some((name, _)) = by_available.iter().find(|(_, a)| *a >= quantity) {
        return Some(BTreeMap::from([((*name).clone(), quantity)]));
    }
    let mut left = quantity;
    let mut allocation = BTreeMap::new();
    for (name, available) in by_available {
        if left == 0 {
            break;
        }
        let take = available.min(left);
        allocation.insert(name.clone(), take);
        left -= take;
    }
    (left == 0).then_some(allocation)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown SKU {0}")]
    UnknownSku(Sku),
    #[error("product {0} is already registered")]
    AlreadyRegistered(Sku),
    #[error("stock of {sku} would exceed {max} units")]
    Overflow { sku: Sku, max: u32 },
    #[error(
        "warehouse {warehouse} holds {reserved} reserved units; a count of {counted} cannot cover them"
    )]
    BelowReserved {
        warehouse: String,
        reserved: u32,
        counted: u32,
    },
    #[error("warehouse name must not be empty")]
    NoWarehouse,
    #[error("no hold {0} of this channel on this SKU")]
    NoSuchHold(OrderId),
}

const MAX_STOCK: u32 = i32::MAX as u32;

/// LowStockWarning and reorder suggestion when available stock crosses below the
/// product's threshold / reorder point.
fn warnings(p: &Product, before: u32, after: u32) -> Vec<InventoryEvent> {
    let mut out = Vec::new();
    if after < p.low_stock_threshold && before >= p.low_stock_threshold {
        out.push(InventoryEvent::LowStock {
            available: after,
            threshold: p.low_stock_threshold,
        });
    }
    if after < p.reorder_point && before >= p.reorder_point && p.reorder_quantity > 0 {
        out.push(InventoryEvent::ReorderSuggested {
            available: after,
            reorder_point: p.reorder_point,
            quantity: p.reorder_quantity,
        });
    }
    out
}

/// Decides what `command` does to the product `state` (None: unknown SKU) at record
/// time `now`.
pub fn decide(
    sku: &Sku,
    state: Option<&Product>,
    command: &InventoryCommand,
    now: i64,
) -> Result<Vec<InventoryEvent>, Rejection> {
    use InventoryCommand as C;
    use InventoryEvent as E;
    let overflow = || Rejection::Overflow {
        sku: sku.clone(),
        max: MAX_STOCK,
    };
    match (state, command) {
        (Some(_), C::RegisterProduct { .. }) => Err(Rejection::AlreadyRegistered(sku.clone())),
        (
            None,
            C::RegisterProduct {
                name,
                warehouse,
                initial_stock,
                low_stock_threshold,
                reorder_point,
                reorder_quantity,
                unit_weight_kg,
            },
        ) => {
            if warehouse.trim().is_empty() {
                return Err(Rejection::NoWarehouse);
            }
            if *initial_stock > MAX_STOCK {
                return Err(overflow());
            }
            Ok(vec![E::Registered {
                name: name.clone(),
                warehouse: warehouse.trim().to_string(),
                on_hand: *initial_stock,
                low_stock_threshold: *low_stock_threshold,
                reorder_point: *reorder_point,
                reorder_quantity: *reorder_quantity,
                unit_weight_kg: *unit_weight_kg,
            }])
        }
        // A reservation for an unknown SKU is a business answer the order needs.
        (
            None,
            C::ReserveStock {
                order_id,
                line_no,
                quantity,
                ..
            },
        ) => Ok(vec![E::Rejected {
            order_id: *order_id,
            line_no: *line_no,
            quantity: quantity.get(),
            available: 0,
            reason: format!("unknown SKU {sku}"),
        }]),
        (None, C::CommitReservation { order_id }) => Ok(vec![E::CommitRejected {
            order_id: *order_id,
            reason: format!("unknown SKU {sku}"),
        }]),
        // Nothing can be held on an unknown SKU: nothing to release or expire.
        (
            None,
            C::ReleaseStock {
                channel: Some(_), ..
            },
        ) => Err(Rejection::UnknownSku(sku.clone())),
        (None, C::ReleaseStock { .. } | C::ExpireReservation { .. }) => Ok(vec![]),
        (None, _) => Err(Rejection::UnknownSku(sku.clone())),
        (
            Some(p),
            C::Restock {
                warehouse,
                quantity,
            },
        ) => {
            if warehouse.trim().is_empty() {
                return Err(Rejection::NoWarehouse);
            }
            let on_hand = p
                .on_hand()
                .checked_add(quantity.get())
                .filter(|n| *n <= MAX_STOCK)
                .ok_or_else(overflow)?;
            Ok(vec![E::Restocked {
                warehouse: warehouse.trim().to_string(),
                quantity: quantity.get(),
                on_hand,
                available: on_hand - p.reserved(),
            }])
        }
        (
            Some(p),
            C::AdjustStock {
                warehouse,
                counted,
                reason,
            },
        ) => {
            let w = warehouse.trim();
            if w.is_empty() {
                return Err(Rejection::NoWarehouse);
            }
            let stock = p.warehouses.get(w).copied().unwrap_or_default();
            if *counted < stock.reserved {
                return Err(Rejection::BelowReserved {
                    warehouse: w.to_string(),
                    reserved: stock.reserved,
                    counted: *counted,
                });
            }
            if stock.on_hand == *counted {
                return Ok(vec![]);
            }
            let total = p.on_hand() - stock.on_hand;
            if total.checked_add(*counted).is_none_or(|n| n > MAX_STOCK) {
                return Err(overflow());
            }
            let before = p.available();
            let after = before + counted - stock.on_hand;
            let mut events = vec![E::Adjusted {
                warehouse: w.to_string(),
                from: stock.on_hand,
                to: *counted,
                reason: reason.clone(),
                available: after,
            }];
            events.extend(warnings(p, before, after));
            Ok(events)
        }
        (
            Some(p),
            C::ReserveStock {
                order_id,
                line_no,
                quantity,
                channel,
            },
        ) => {
            let already = p
                .holds
                .get(&order_id.to_string())
                .is_some_and(|h| h.lines.contains_key(line_no));
            if already {
                return Ok(vec![]);
            }
            let q = quantity.get();
            let available = p.available();
            let Some(allocation) = allocate(&p.warehouses, q) else {
                return Ok(vec![E::Rejected {
                    order_id: *order_id,
                    line_no: *line_no,
                    quantity: q,
                    available,
                    reason: format!("insufficient stock: requested {q}, available {available}"),
                }]);
            };
            let left = available - q;
            let mut events = vec![E::Reserved {
                order_id: *order_id,
                line_no: *line_no,
                quantity: q,
                allocation,
                available: left,
                at: now,
                channel: channel.clone(),
            }];
            events.extend(warnings(p, available, left));
            Ok(events)
        }
        (
            Some(p),
            C::ReleaseStock {
                order_id,
                reason,
                channel,
            },
        ) => {
            let hold = p.holds.get(&order_id.to_string());
            // A channel releases only its own holds; the saga only the saga's.
            let Some(hold) = hold.filter(|h| h.channel == *channel) else {
                return match channel {
                    Some(_) => Err(Rejection::NoSuchHold(*order_id)),
                    None => Ok(vec![]),
                };
            };
            Ok(vec![E::Released {
                order_id: *order_id,
                quantity: hold.quantity(),
                available: p.available() + hold.quantity(),
                reason: reason.clone(),
            }])
        }
        (Some(p), C::ExpireReservation { order_id, hold: id }) => {
            let Some(hold) = p.holds.get(&order_id.to_string()) else {
                return Ok(vec![]);
            };
            if id.as_ref().is_some_and(|id| *id != hold.id()) {
                return Ok(vec![]); // a newer hold of the order: its own timer runs
            }
            Ok(vec![E::Expired {
                order_id: *order_id,
                quantity: hold.quantity(),
                available: p.available() + hold.quantity(),
            }])
        }
        (Some(p), C::CommitReservation { order_id }) => {
            let Some(hold) = p.holds.get(&order_id.to_string()) else {
                return Ok(vec![E::CommitRejected {
                    order_id: *order_id,
                    reason: "no stock is held for the order (expired or released)".into(),
                }]);
            };
            Ok(vec![E::Committed {
                order_id: *order_id,
                quantity: hold.quantity(),
                on_hand: p.on_hand() - hold.quantity(),
                available: p.available(),
            }])
        }
        (
            Some(p),
            C::ReturnStock {
                order_id, quantity, ..
            },
        ) => {
            let on_hand = p
                .on_hand()
                .checked_add(quantity.get())
                .filter(|n| *n <= MAX_STOCK)
                .ok_or_else(overflow)?;
            Ok(vec![E::Returned {
                order_id: *order_id,
                warehouse: returns_warehouse(p),
                quantity: quantity.get(),
                on_hand,
                available: on_hand - p.reserved(),
            }])
        }
    }
}

/// Returned goods go to the default warehouse if the product has one, else to its
/// first warehouse by name.
fn returns_warehouse(p: &Product) -> String {
    if p.warehouses.contains_key(DEFAULT_WAREHOUSE) {
        return DEFAULT_WAREHOUSE.to_string();
    }
    p.warehouses
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| DEFAULT_WAREHOUSE.to_string())
}

fn drop_hold(p: &mut Product, order_id: &OrderId, sold: bool) {
    if let Some(hold) = p.holds.remove(&order_id.to_string()) {
        for alloc in hold.lines.values() {
            for (w, q) in alloc {
                let stock = p.warehouses.entry(w.clone()).or_default();
                stock.reserved -= q;
                if sold {
                    stock.on_hand -= q;
                }
            }
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
                warehouse,
                on_hand,
                low_stock_threshold,
                reorder_point,
                reorder_quantity,
                unit_weight_kg,
            },
        ) => Some(Product {
            sku: sku.clone(),
            name: name.clone(),
            warehouses: BTreeMap::from([(
                warehouse.clone(),
                WarehouseStock {
                    on_hand: *on_hand,
                    reserved: 0,
                },
            )]),
            low_stock_threshold: *low_stock_threshold,
            reorder_point: *reorder_point,
            reorder_quantity: *reorder_quantity,
            unit_weight_kg: *unit_weight_kg,
            holds: BTreeMap::new(),
            version: 1,
        }),
        (None, _) => None,
        (Some(mut p), event) => {
            match event {
                E::Registered { .. } => return Some(p),
                E::Restocked {
                    warehouse,
                    quantity,
                    ..
                } => p.warehouses.entry(warehouse.clone()).or_default().on_hand += quantity,
                E::Adjusted { warehouse, to, .. } => {
                    p.warehouses.entry(warehouse.clone()).or_default().on_hand = *to;
                }
                E::Reserved {
                    order_id,
                    line_no,
                    allocation,
                    at,
                    channel,
                    ..
                } => {
                    for (w, q) in allocation {
                        p.warehouses.entry(w.clone()).or_default().reserved += q;
                    }
                    p.holds
                        .entry(order_id.to_string())
                        .or_insert_with(|| Hold {
                            lines: BTreeMap::new(),
                            reserved_at: *at,
                            channel: channel.clone(),
                        })
                        .lines
                        .insert(*line_no, allocation.clone());
                }
                E::Released { order_id, .. } | E::Expired { order_id, .. } => {
                    drop_hold(&mut p, order_id, false)
                }
                E::Committed { order_id, .. } => drop_hold(&mut p, order_id, true),
                E::Returned {
                    warehouse,
                    quantity,
                    ..
                } => p.warehouses.entry(warehouse.clone()).or_default().on_hand += quantity,
                // Facts that answer a request without changing stock.
                E::Rejected { .. }
                | E::CommitRejected { .. }
                | E::LowStock { .. }
                | E::ReorderSuggested { .. } => return Some(p),
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
            warehouse: "main".into(),
            initial_stock: stock,
            low_stock_threshold: threshold,
            reorder_point: 0,
            reorder_quantity: 0,
            unit_weight_kg: dec!(1.5),
        }
    }
    fn restock(w: &str, q: i64) -> InventoryCommand {
        InventoryCommand::Restock {
            warehouse: w.into(),
            quantity: Quantity::new(q).unwrap(),
        }
    }
    fn reserve(o: u8, line_no: u32, q: i64) -> InventoryCommand {
        InventoryCommand::ReserveStock {
            order_id: order(o),
            line_no,
            quantity: Quantity::new(q).unwrap(),
            channel: None,
        }
    }
    #[test]
    fn a_channel_releases_only_its_own_holds_and_the_saga_only_its_own() {
        let p = run(&[
            register(10, 0),
            InventoryCommand::ReserveStock {
                order_id: order(1),
                line_no: 0,
                quantity: Quantity::new(3).unwrap(),
                channel: Some("grpc".into()),
            },
            reserve(2, 0, 2),
        ]);
        let release = |o: u8, channel: Option<&str>| InventoryCommand::ReleaseStock {
            order_id: order(o),
            reason: "x".into(),
            channel: channel.map(str::to_string),
        };
        // The saga's release of the channel's hold does nothing…
        assert_eq!(when(&p, &release(1, None)), vec![]);
        // …the channel's release of a saga hold, or of nothing, is refused…
        for o in [2, 9] {
            assert_eq!(
                decide(&sku(), p.as_ref(), &release(o, Some("grpc")), 1),
                Err(Rejection::NoSuchHold(order(o)))
            );
        }
        // …and each releases its own.
        assert!(matches!(
            when(&p, &release(1, Some("grpc")))[..],
            [InventoryEvent::Released { quantity: 3, .. }]
        ));
        assert!(matches!(
            when(&p, &release(2, None))[..],
            [InventoryEvent::Released { quantity: 2, .. }]
        ));
    }

    fn run(history: &[InventoryCommand]) -> Option<Product> {
        let mut state = None;
        for (t, c) in history.iter().enumerate() {
            for e in decide(&sku(), state.as_ref(), c, t as i64).unwrap() {
                state = evolve(&sku(), state, &e);
            }
        }
        state
    }
    fn when(p: &Option<Product>, c: &InventoryCommand) -> Vec<InventoryEvent> {
        decide(&sku(), p.as_ref(), c, 1_000).unwrap()
    }

    #[test]
    fn reserve_within_stock_then_warn_when_low_and_suggest_a_reorder() {
        let p = run(&[InventoryCommand::RegisterProduct {
            name: "Widget".into(),
            warehouse: "main".into(),
            initial_stock: 10,
            low_stock_threshold: 5,
            reorder_point: 6,
            reorder_quantity: 20,
            unit_weight_kg: dec!(1.5),
        }]);
        let events = when(&p, &reserve(1, 0, 6));
        assert_eq!(
            events,
            vec![
                InventoryEvent::Reserved {
                    order_id: order(1),
                    line_no: 0,
                    quantity: 6,
                    allocation: BTreeMap::from([("main".to_string(), 6)]),
                    available: 4,
                    channel: None,
                    at: 1_000,
                },
                InventoryEvent::LowStock {
                    available: 4,
                    threshold: 5
                },
                InventoryEvent::ReorderSuggested {
                    available: 4,
                    reorder_point: 6,
                    quantity: 20
                },
            ]
        );
    }

    #[test]
    fn the_allocator_prefers_one_warehouse_then_splits_by_availability() {
        let p = run(&[register(3, 0), restock("east", 5), restock("west", 5)]);
        // One warehouse can fill 4: the one with most available, ties by name → east.
        let e = when(&p, &reserve(1, 0, 4));
        assert!(
            matches!(&e[0], InventoryEvent::Reserved { allocation, .. } if *allocation == BTreeMap::from([("east".to_string(), 4)]))
        );
        // Nobody can fill 12 alone: east 5 + west 5 + main 2.
        let e = when(&p, &reserve(1, 0, 12));
        assert!(
            matches!(&e[0], InventoryEvent::Reserved { allocation, .. } if *allocation == BTreeMap::from([("east".to_string(), 5), ("west".to_string(), 5), ("main".to_string(), 2)]))
        );
        assert_eq!(
            allocate(&p.unwrap().warehouses, 14),
            None,
            "13 available in total"
        );
    }

    #[test]
    fn reserve_beyond_stock_is_rejected_and_changes_nothing() {
        let p = run(&[register(3, 0)]);
        let events = when(&p, &reserve(1, 0, 4));
        assert!(
            matches!(&events[0], InventoryEvent::Rejected { available: 3, reason, .. } if reason.contains("insufficient"))
        );
        assert_eq!(evolve(&sku(), p.clone(), &events[0]), p);
    }

    #[test]
    fn unknown_sku_reservation_and_commit_are_answered_other_commands_fail() {
        let events = when(&None, &reserve(1, 0, 1));
        assert!(
            matches!(&events[0], InventoryEvent::Rejected { reason, .. } if reason.contains("unknown SKU"))
        );
        let commit = InventoryCommand::CommitReservation { order_id: order(1) };
        assert!(matches!(
            &when(&None, &commit)[0],
            InventoryEvent::CommitRejected { .. }
        ));
        assert_eq!(
            decide(&sku(), None, &restock("main", 1), 0),
            Err(Rejection::UnknownSku(sku()))
        );
        assert_eq!(
            decide(&sku(), run(&[register(1, 0)]).as_ref(), &register(1, 0), 0),
            Err(Rejection::AlreadyRegistered(sku()))
        );
    }

    #[test]
    fn release_returns_everything_held_for_the_order_once() {
        let history = [
            register(10, 0),
            reserve(1, 0, 2),
            reserve(1, 1, 3),
            reserve(2, 0, 1),
        ];
        let p = run(&history).unwrap();
        assert_eq!(p.available(), 4);
        let release = InventoryCommand::ReleaseStock {
            order_id: order(1),
            reason: "cancel".into(),
            channel: None,
        };
        let mut h = history.to_vec();
        h.push(release.clone());
        let p = run(&h).unwrap();
        assert_eq!((p.reserved(), p.available()), (1, 9));
        assert_eq!(when(&Some(p), &release), vec![]);
    }

    #[test]
    fn commit_sells_the_held_stock_and_a_return_brings_it_back() {
        let commit = InventoryCommand::CommitReservation { order_id: order(1) };
        let p = run(&[register(10, 0), reserve(1, 0, 4), commit.clone()]).unwrap();
        assert_eq!((p.on_hand(), p.reserved(), p.available()), (6, 0, 6));
        assert!(p.holds.is_empty(), "a committed hold is forgotten");
        // A second commit (or one after expiry) has nothing to commit.
        assert!(matches!(
            &when(&Some(p.clone()), &commit)[0],
            InventoryEvent::CommitRejected { .. }
        ));
        let back = InventoryCommand::ReturnStock {
            order_id: order(1),
            quantity: Quantity::new(4).unwrap(),
            reason: "refunded".into(),
        };
        let p = run(&[register(10, 0), reserve(1, 0, 4), commit, back]).unwrap();
        assert_eq!((p.on_hand(), p.available()), (10, 10));
    }

    #[test]
    fn an_expired_hold_is_released_and_expiry_after_commit_does_nothing() {
        let p = run(&[register(10, 0), reserve(1, 0, 4), reserve(2, 0, 1)]);
        let product = p.clone().unwrap();
        // Each order's hold remembers when it was taken (record time of the reservation).
        let taken: Vec<(String, i64)> = product
            .holds
            .iter()
            .map(|(o, h)| (o.clone(), h.reserved_at))
            .collect();
        assert_eq!(
            taken,
            vec![(order(1).to_string(), 1), (order(2).to_string(), 2)]
        );
        let expire = InventoryCommand::ExpireReservation {
            order_id: order(1),
            hold: None,
        };
        assert_eq!(
            when(&p, &expire),
            vec![InventoryEvent::Expired {
                order_id: order(1),
                quantity: 4,
                available: 9
            }]
        );
        let commit = InventoryCommand::CommitReservation { order_id: order(1) };
        let sold = run(&[register(10, 0), reserve(1, 0, 4), commit]);
        assert_eq!(when(&sold, &expire), vec![]);
        // An expiry aimed at an older hold leaves the order's newer hold alone.
        let held = product.holds[&order(1).to_string()].id();
        assert_eq!(held, "1/0");
        let stale = InventoryCommand::ExpireReservation {
            order_id: order(1),
            hold: Some("0/7".into()),
        };
        assert_eq!(when(&p, &stale), vec![]);
    }

    #[test]
    fn stock_taking_corrects_a_warehouse_but_never_below_its_reservations() {
        let p = run(&[register(10, 5), reserve(1, 0, 4)]);
        let adjust = |counted| InventoryCommand::AdjustStock {
            warehouse: "main".into(),
            counted,
            reason: "count".into(),
        };
        let e = when(&p, &adjust(8));
        assert_eq!(
            e[0],
            InventoryEvent::Adjusted {
                warehouse: "main".into(),
                from: 10,
                to: 8,
                reason: "count".into(),
                available: 4
            }
        );
        assert!(matches!(
            e[1],
            InventoryEvent::LowStock { available: 4, .. }
        ));
        assert!(matches!(
            decide(&sku(), p.as_ref(), &adjust(3), 0),
            Err(Rejection::BelowReserved { reserved: 4, .. })
        ));
        assert_eq!(when(&p, &adjust(10)), vec![]);
    }

    #[test]
    fn a_repeated_reservation_of_the_same_line_is_not_applied_twice() {
        let p = run(&[register(10, 0), reserve(1, 0, 2)]);
        assert_eq!(when(&p, &reserve(1, 0, 2)), vec![]);
    }

    proptest! {
        /// Any sequence of commands keeps, in every warehouse, 0 ≤ reserved ≤ on_hand,
        /// reserved = Σ held, and on_hand = initial + restocked + returned + adjusted − sold.
        #[test]
        fn never_oversold(ops in proptest::collection::vec((0u8..8, 0u8..6, 1i64..8), 0..80)) {
            let mut state = run(&[register(10, 3)]);
            let mut book: i64 = 10;
            for (t, (kind, o, q)) in ops.into_iter().enumerate() {
                let w = ["main", "east"][o as usize % 2];
                let cmd = match kind {
                    0 | 1 => reserve(o, u32::from(q as u8 % 2), q),
                    2 => InventoryCommand::ReleaseStock { order_id: order(o), reason: "x".into(), channel: None },
                    3 => restock(w, q),
                    4 => InventoryCommand::CommitReservation { order_id: order(o) },
                    5 => InventoryCommand::ExpireReservation { order_id: order(o), hold: None },
                    6 => InventoryCommand::ReturnStock { order_id: order(o), quantity: Quantity::new(q).unwrap(), reason: "r".into() },
                    _ => InventoryCommand::AdjustStock { warehouse: w.into(), counted: q as u32, reason: "c".into() },
                };
                let Ok(events) = decide(&sku(), state.as_ref(), &cmd, t as i64) else { continue };
                for e in events {
                    match &e {
                        InventoryEvent::Restocked { quantity, .. } | InventoryEvent::Returned { quantity, .. } => book += i64::from(*quantity),
                        InventoryEvent::Committed { quantity, .. } => book -= i64::from(*quantity),
                        InventoryEvent::Adjusted { from, to, .. } => book += i64::from(*to) - i64::from(*from),
                        _ => {}
                    }
                    state = evolve(&sku(), state, &e);
                }
                let p = state.as_ref().unwrap();
                for s in p.warehouses.values() {
                    prop_assert!(s.reserved <= s.on_hand);
                }
                prop_assert_eq!(i64::from(p.on_hand()), book);
                let held: u32 = p.holds.values().map(Hold::quantity).sum();
                prop_assert_eq!(held, p.reserved());
            }
        }
    }
}
