use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::values::{Address, Currency, Money, OrderId, ValueError, derived_id};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    Standard,
    Express,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ShipmentCommand {
    Create {
        order_id: OrderId,
        address: Address,
        weight_kg: Decimal,
        method: Method,
        currency: Currency,
        at: i64,
    },
    Dispatch {
        at: i64,
    },
    Deliver {
        at: i64,
    },
    Cancel {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShipmentEvent {
    Created {
        order_id: OrderId,
        address: Address,
        method: Method,
        carrier: String,
        tracking_number: String,
        cost: Money,
        deliver_from: i64,
        deliver_by: i64,
    },
    Dispatched {
        at: i64,
    },
    Delivered {
        at: i64,
    },
    Cancelled {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentStatus {
    Created,
    Dispatched,
    Delivered,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    pub order_id: OrderId,
    pub status: ShipmentStatus,
    pub carrier: String,
    pub tracking_number: String,
    pub cost: Money,
    pub deliver_by: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("shipment already exists")]
    AlreadyExists,
    #[error("no such shipment")]
    Unknown,
    #[error("cannot {action} a shipment that is {status:?}")]
    InvalidState {
        action: &'static str,
        status: ShipmentStatus,
    },
    #[error("invalid shipment: {0}")]
    Invalid(String),
    #[error("undeliverable: no carrier serves postal code {0}")]
    Undeliverable(String),
}

/// No carrier serves postal codes starting with this: such shipments cannot be created.
pub const UNSERVED_PREFIX: &str = "000";

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The seed's shipping cost, in the order's currency, rounded to cents.
pub fn shipping_cost(
    weight_kg: Decimal,
    address: &Address,
    method: Method,
    currency: Currency,
) -> Result<Money, ValueError> {
    let mut cost = Decimal::from(10);
    if weight_kg > Decimal::from(50) {
        cost += (weight_kg - Decimal::from(50)) * Decimal::new(5, 1);
    }
    if address.is_remote() {
        cost += Decimal::from(15);
    }
    if method == Method::Express {
        cost *= Decimal::new(15, 1);
    }
    Ok(Money::new(cost, currency)?.round_cents())
}

fn carrier(weight_kg: Decimal, method: Method) -> &'static str {
    match method {
        Method::Express => "DHL",
        Method::Standard if weight_kg > Decimal::from(50) => "UPS",
        Method::Standard => "USPS",
    }
}

pub fn decide(
    shipment_id: &str,
    state: Option<&Shipment>,
    command: &ShipmentCommand,
) -> Result<Vec<ShipmentEvent>, Rejection> {
    use ShipmentCommand as C;
    use ShipmentEvent as E;
    use ShipmentStatus as S;
    let invalid = |action, status| Err(Rejection::InvalidState { action, status });
    match (state, command) {
        (Some(_), C::Create { .. }) => Err(Rejection::AlreadyExists),
        (
            None,
            C::Create {
                order_id,
                address,
                weight_kg,
                method,
                currency,
                at,
            },
        ) => {
            if address.postal_code.starts_with(UNSERVED_PREFIX) {
                return Err(Rejection::Undeliverable(address.postal_code.clone()));
            }
            if weight_kg.is_sign_negative() {
                return Err(Rejection::Invalid(format!(
                    "weight {weight_kg} kg is negative"
                )));
            }
            let cost = shipping_cost(*weight_kg, address, *method, *currency)
                .map_err(|e| Rejection::Invalid(e.to_string()))?;
            let carrier = carrier(*weight_kg, *method);
            let code =
                derived_id(shipment_id, "tracking", 0).simple().to_string()[..10].to_uppercase();
            let (from_days, by_days) = match method {
                Method::Standard => (3, 5),
                Method::Express => (1, 2),
            };
            Ok(vec![E::Created {
                order_id: *order_id,
                address: address.clone(),
                method: *method,
                carrier: carrier.to_string(),
                tracking_number: format!("{carrier}{code}"),
                cost,
                // Saturating: the record time is the client's (an absurd one must not
                // overflow).
                deliver_from: at.saturating_add(from_days * DAY_MS),
                deliver_by: at.saturating_add(by_days * DAY_MS),
            }])
        }
        (None, _) => Err(Rejection::Unknown),
        (Some(s), C::Dispatch { at }) => match s.status {
            S::Created => Ok(vec![E::Dispatched { at: *at }]),
            S::Dispatched => Ok(vec![]),
            other => invalid("dispatch", other),
        },
        (Some(s), C::Deliver { at }) => match s.status {
            S::Dispatched => Ok(vec![E::Delivered { at: *at }]),
            S::Delivered => Ok(vec![]),
            other => invalid("deliver", other),
        },
        // The seed: nothing can be cancelled once it left the warehouse.
        (Some(s), C::Cancel { reason }) => match s.status {
            S::Created => Ok(vec![E::Cancelled {
                reason: reason.clone(),
            }]),
            S::Cancelled => Ok(vec![]),
            other => invalid("cancel", other),
        },
    }
}

pub fn evolve(state: Option<Shipment>, event: &ShipmentEvent) -> Option<Shipment> {
    use ShipmentEvent as E;
    use ShipmentStatus as S;
    match (state, event) {
        (
            None,
            E::Created {
                order_id,
                carrier,
                tracking_number,
                cost,
                deliver_by,
                ..
            },
        ) => Some(Shipment {
            order_id: *order_id,
            status: S::Created,
            carrier: carrier.clone(),
            tracking_number: tracking_number.clone(),
            cost: *cost,
            deliver_by: *deliver_by,
            version: 1,
        }),
        (None, _) => None,
        (Some(mut s), event) => {
            s.status = match event {
                E::Created { .. } => return Some(s),
                E::Dispatched { .. } => S::Dispatched,
                E::Delivered { .. } => S::Delivered,
                E::Cancelled { .. } => S::Cancelled,
            };
            s.version += 1;
            Some(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn addr(pc: &str) -> Address {
        Address::new("1 Main", "Town", pc, "US").unwrap()
    }
    fn create(weight: Decimal, pc: &str, method: Method) -> ShipmentCommand {
        ShipmentCommand::Create {
            order_id: OrderId::parse("6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11").unwrap(),
            address: addr(pc),
            weight_kg: weight,
            method,
            currency: Currency::USD,
            at: 0,
        }
    }

    #[test]
    fn cost_follows_the_seed() {
        let cost = |w, pc, m| {
            shipping_cost(w, &addr(pc), m, Currency::USD)
                .unwrap()
                .amount()
        };
        assert_eq!(cost(dec!(50), "10001", Method::Standard), dec!(10.00));
        assert_eq!(cost(dec!(60), "10001", Method::Standard), dec!(15.00));
        assert_eq!(cost(dec!(60), "94107", Method::Standard), dec!(30.00));
        assert_eq!(cost(dec!(60), "94107", Method::Express), dec!(45.00));
        assert_eq!(cost(dec!(50.3), "10001", Method::Standard), dec!(10.15));
    }

    #[test]
    fn carrier_window_and_tracking_number() {
        let e = decide("s-1", None, &create(dec!(60), "10001", Method::Standard))
            .unwrap()
            .remove(0);
        let ShipmentEvent::Created {
            carrier,
            tracking_number,
            deliver_from,
            deliver_by,
            ..
        } = e
        else {
            panic!()
        };
        assert_eq!(carrier, "UPS");
        assert!(tracking_number.starts_with("UPS") && tracking_number.len() == 13);
        assert_eq!((deliver_from, deliver_by), (3 * DAY_MS, 5 * DAY_MS));
        let again = decide("s-1", None, &create(dec!(60), "10001", Method::Standard))
            .unwrap()
            .remove(0);
        assert!(
            matches!(again, ShipmentEvent::Created { tracking_number: t, .. } if t == tracking_number)
        );
        let express = decide("s-2", None, &create(dec!(1), "10001", Method::Express))
            .unwrap()
            .remove(0);
        assert!(
            matches!(express, ShipmentEvent::Created { ref carrier, deliver_by, .. } if carrier == "DHL" && deliver_by == 2 * DAY_MS)
        );
    }

    #[test]
    fn lifecycle_and_cancellation_rules() {
        let mut s = None;
        for c in [
            create(dec!(5), "10001", Method::Standard),
            ShipmentCommand::Dispatch { at: 1 },
        ] {
            for e in decide("s", s.as_ref(), &c).unwrap() {
                s = evolve(s, &e);
            }
        }
        let cancel = ShipmentCommand::Cancel {
            reason: "customer".into(),
        };
        assert!(matches!(
            decide("s", s.as_ref(), &cancel),
            Err(Rejection::InvalidState {
                action: "cancel",
                ..
            })
        ));
        let delivered = evolve(
            s.clone(),
            &decide("s", s.as_ref(), &ShipmentCommand::Deliver { at: 2 }).unwrap()[0],
        )
        .unwrap();
        assert_eq!(
            (delivered.status, delivered.version),
            (ShipmentStatus::Delivered, 3)
        );
        assert_eq!(
            decide("s", None, &ShipmentCommand::Dispatch { at: 1 }),
            Err(Rejection::Unknown)
        );
    }
}
