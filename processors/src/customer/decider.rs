//! The customer aggregate as a pure decider.
//!
//! Loyalty rule: lifetime spend of completed orders, per currency, promotes the tier
//! (never demotes it). Thresholds in USD or EUR: Silver from 1,000, Gold from 5,000,
//! Platinum from 20,000; in CNY seven times those (7,000 / 35,000 / 140,000). The best
//! tier any currency reaches wins.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::command::CustomerCommand;
use super::event::CustomerEvent;
use crate::order::pricing::CustomerTier;
use crate::values::{Address, Currency, Email, PhoneNumber};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: Email,
    pub phone: Option<PhoneNumber>,
    pub addresses: Vec<Address>,
    pub tier: CustomerTier,
    pub lifetime_spend: BTreeMap<String, Decimal>,
    /// Orders already counted: a redelivered completion counts once.
    pub counted_orders: BTreeSet<String>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("customer already registered")]
    AlreadyRegistered,
    #[error("unknown customer")]
    UnknownCustomer,
    #[error("name must not be empty")]
    EmptyName,
    #[error("a customer needs at least one address")]
    NoAddress,
}

fn rank(t: CustomerTier) -> u8 {
    match t {
        CustomerTier::Bronze => 0,
        CustomerTier::Silver => 1,
        CustomerTier::Gold => 2,
        CustomerTier::Platinum => 3,
    }
}

/// The tier a lifetime spend in one currency earns.
pub fn tier_for_spend(currency: Currency, spend: Decimal) -> CustomerTier {
    let unit = match currency {
        Currency::USD | Currency::EUR => Decimal::ONE,
        Currency::CNY => Decimal::from(7),
    };
    if spend >= Decimal::from(20_000) * unit {
        CustomerTier::Platinum
    } else if spend >= Decimal::from(5_000) * unit {
        CustomerTier::Gold
    } else if spend >= Decimal::from(1_000) * unit {
        CustomerTier::Silver
    } else {
        CustomerTier::Bronze
    }
}

pub fn decide(
    state: Option<&Customer>,
    command: &CustomerCommand,
) -> Result<Vec<CustomerEvent>, Rejection> {
    use CustomerCommand as C;
    use CustomerEvent as E;
    match (state, command) {
        (Some(_), C::Register { .. }) => Err(Rejection::AlreadyRegistered),
        (
            None,
            C::Register {
                name,
                email,
                phone,
                address,
            },
        ) => {
            if name.trim().is_empty() {
                return Err(Rejection::EmptyName);
            }
            Ok(vec![E::Registered {
                name: name.trim().to_string(),
                email: email.clone(),
                phone: phone.clone(),
                address: address.clone(),
            }])
        }
        (None, _) => Err(Rejection::UnknownCustomer),
        (
            Some(_),
            C::Update {
                email,
                phone,
                addresses,
            },
        ) => {
            if addresses.as_ref().is_some_and(Vec::is_empty) {
                return Err(Rejection::NoAddress);
            }
            Ok(vec![E::Updated {
                email: email.clone(),
                phone: phone.clone(),
                addresses: addresses.clone(),
            }])
        }
        (Some(c), C::RecordCompletedOrder { order_id, total }) => {
            if c.counted_orders.contains(&order_id.to_string()) {
                return Ok(vec![]);
            }
            let mut events = vec![E::SpendRecorded {
                order_id: *order_id,
                total: *total,
            }];
            let after = evolve(Some(c.clone()), &events[0]).expect("customer exists");
            let earned = after
                .lifetime_spend
                .iter()
                .filter_map(|(cur, spend)| {
                    cur.parse::<Currency>()
                        .ok()
                        .map(|cur| tier_for_spend(cur, *spend))
                })
                .max_by_key(|t| rank(*t))
                .unwrap_or(CustomerTier::Bronze);
            if rank(earned) > rank(c.tier) {
                events.push(E::TierPromoted {
                    from: c.tier,
                    to: earned,
                });
            }
            Ok(events)
        }
    }
}

pub fn evolve(state: Option<Customer>, event: &CustomerEvent) -> Option<Customer> {
    use CustomerEvent as E;
    match (state, event) {
        (
            None,
            E::Registered {
                name,
                email,
                phone,
                address,
            },
        ) => Some(Customer {
            name: name.clone(),
            email: email.clone(),
            phone: phone.clone(),
            addresses: vec![address.clone()],
            tier: CustomerTier::Bronze,
            lifetime_spend: BTreeMap::new(),
            counted_orders: BTreeSet::new(),
            version: 1,
        }),
        (None, _) => None,
        (Some(mut c), event) => {
            match event {
                E::Registered { .. } => return Some(c),
                E::Updated {
                    email,
                    phone,
                    addresses,
                } => {
                    if let Some(e) = email {
                        c.email = e.clone();
                    }
                    if let Some(p) = phone {
                        c.phone = Some(p.clone());
                    }
                    if let Some(a) = addresses {
                        c.addresses = a.clone();
                    }
                }
                E::SpendRecorded { order_id, total } => {
                    let spend = c
                        .lifetime_spend
                        .entry(total.currency().to_string())
                        .or_default();
                    *spend = spend.saturating_add(total.amount());
                    c.counted_orders.insert(order_id.to_string());
                }
                E::TierPromoted { to, .. } => c.tier = *to,
            }
            c.version += 1;
            Some(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Money, OrderId};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn register() -> CustomerCommand {
        CustomerCommand::Register {
            name: "Ann".into(),
            email: Email::parse("ann@example.com").unwrap(),
            phone: None,
            address: Address::new("1 Main", "Town", "10001", "US").unwrap(),
        }
    }

    fn completed(n: u8, amount: Decimal, currency: Currency) -> CustomerCommand {
        CustomerCommand::RecordCompletedOrder {
            order_id: OrderId::parse(&format!("00000000-0000-4000-8000-0000000000{n:02}")).unwrap(),
            total: Money::new(amount, currency).unwrap(),
        }
    }

    fn run(history: &[CustomerCommand]) -> Option<Customer> {
        let mut state = None;
        for c in history {
            for e in decide(state.as_ref(), c).unwrap() {
                state = evolve(state, &e);
            }
        }
        state
    }

    #[test]
    fn thresholds_follow_the_documented_rule() {
        assert_eq!(
            tier_for_spend(Currency::USD, dec!(999.99)),
            CustomerTier::Bronze
        );
        assert_eq!(
            tier_for_spend(Currency::USD, dec!(1000)),
            CustomerTier::Silver
        );
        assert_eq!(
            tier_for_spend(Currency::EUR, dec!(5000)),
            CustomerTier::Gold
        );
        assert_eq!(
            tier_for_spend(Currency::USD, dec!(20000)),
            CustomerTier::Platinum
        );
        assert_eq!(
            tier_for_spend(Currency::CNY, dec!(6999)),
            CustomerTier::Bronze
        );
        assert_eq!(
            tier_for_spend(Currency::CNY, dec!(35000)),
            CustomerTier::Gold
        );
    }

    #[test]
    fn completed_orders_promote_once_and_count_once() {
        let c = run(&[register(), completed(1, dec!(600), Currency::USD)]).unwrap();
        assert_eq!(c.tier, CustomerTier::Bronze);
        let events = decide(Some(&c), &completed(2, dec!(400), Currency::USD)).unwrap();
        assert_eq!(
            events.last(),
            Some(&CustomerEvent::TierPromoted {
                from: CustomerTier::Bronze,
                to: CustomerTier::Silver
            })
        );
        let c = run(&[
            register(),
            completed(1, dec!(600), Currency::USD),
            completed(2, dec!(400), Currency::USD),
        ])
        .unwrap();
        assert_eq!(
            decide(Some(&c), &completed(2, dec!(400), Currency::USD)).unwrap(),
            vec![],
            "redelivery counts once"
        );
        assert_eq!(c.lifetime_spend["USD"], dec!(1000));
    }

    #[test]
    fn rejections_carry_reasons() {
        assert_eq!(
            decide(None, &completed(1, dec!(1), Currency::USD)),
            Err(Rejection::UnknownCustomer)
        );
        let c = run(&[register()]).unwrap();
        assert_eq!(
            decide(Some(&c), &register()),
            Err(Rejection::AlreadyRegistered)
        );
        let empty = CustomerCommand::Update {
            email: None,
            phone: None,
            addresses: Some(vec![]),
        };
        assert_eq!(decide(Some(&c), &empty), Err(Rejection::NoAddress));
        let update = CustomerCommand::Update {
            email: Some(Email::parse("ann@new.example").unwrap()),
            phone: Some(PhoneNumber::parse("+14155550100").unwrap()),
            addresses: None,
        };
        let c = run(&[register(), update]).unwrap();
        assert_eq!((c.email.as_str(), c.version), ("ann@new.example", 2));
    }

    proptest! {
        /// The tier never goes down, and lifetime spend is the sum of distinct orders.
        #[test]
        fn tiers_only_rise_and_spend_counts_each_order_once(orders in proptest::collection::vec((0u8..20, 1u32..4000), 0..40)) {
            let mut state = run(&[register()]);
            let mut distinct: BTreeMap<u8, Decimal> = BTreeMap::new();
            for (n, amount) in orders {
                let before = state.as_ref().unwrap().tier;
                let cmd = completed(n, Decimal::from(amount), Currency::USD);
                for e in decide(state.as_ref(), &cmd).unwrap() { state = evolve(state, &e); }
                distinct.entry(n).or_insert(Decimal::from(amount));
                let c = state.as_ref().unwrap();
                prop_assert!(rank(c.tier) >= rank(before));
                prop_assert_eq!(c.lifetime_spend.get("USD").copied().unwrap_or_default(), distinct.values().sum::<Decimal>());
                prop_assert_eq!(c.tier, tier_for_spend(Currency::USD, distinct.values().sum()));
            }
        }
    }
}
