use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::values::{Money, OrderId, derived_id};

#[derive(Debug, Clone, PartialEq)]
pub enum PaymentCommand {
    Authorize {
        amount: Money,
        method: String,
    },
    Capture,
    /// Compensation before capture.
    Void,
    /// Compensation after capture; `None` refunds what is left.
    Refund {
        amount: Option<Money>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    Authorized {
        amount: Money,
        method: String,
        authorization_code: String,
    },
    /// Authorization refused (gateway or fraud rule): terminal for this payment.
    Failed {
        reason: String,
    },
    Captured {
        amount: Money,
    },
    CaptureFailed {
        reason: String,
    },
    Voided {
        amount: Money,
    },
    Refunded {
        amount: Money,
        total_refunded: Money,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    Authorized,
    Failed,
    Captured,
    CaptureFailed,
    Voided,
    Refunded,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub order_id: OrderId,
    pub status: PaymentStatus,
    pub amount: Option<Money>,
    pub method: String,
    pub captured: Option<Money>,
    pub refunded: Option<Money>,
    pub failure: Option<String>,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("payment for order {0} already exists")]
    AlreadyExists(OrderId),
    #[error("no payment for order {0}")]
    Unknown(OrderId),
    #[error("cannot {action} a payment that is {status:?}")]
    InvalidState {
        action: &'static str,
        status: PaymentStatus,
    },
    #[error("refund of {requested} exceeds the {left} left to refund")]
    RefundTooLarge { requested: String, left: String },
    #[error("payment method must not be empty")]
    NoMethod,
    #[error("amounts are in {expected}, got {found}")]
    Currency { expected: String, found: String },
}

const FRAUD_LIMIT: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);
const INSUFFICIENT_LIMIT: Decimal = Decimal::from_parts(100, 0, 0, false, 0);

pub fn decide(
    order_id: OrderId,
    state: Option<&Payment>,
    command: &PaymentCommand,
) -> Result<Vec<PaymentEvent>, Rejection> {
    use PaymentCommand as C;
    use PaymentEvent as E;
    use PaymentStatus as S;
    let invalid = |action, status| Err(Rejection::InvalidState { action, status });
    match (state, command) {
        (Some(_), C::Authorize { .. }) => Err(Rejection::AlreadyExists(order_id)),
        (None, C::Authorize { amount, method }) => {
            if method.trim().is_empty() {
                return Err(Rejection::NoMethod);
            }
            let refuse = |reason: &str| {
                Ok(vec![E::Failed {
                    reason: reason.to_string(),
                }])
            };
            if amount.amount() > FRAUD_LIMIT {
                return refuse("fraud check: amount above 10000");
            }
            match method.as_str() {
                "tok_decline" => refuse("card declined"),
                "tok_insufficient" if amount.amount() > INSUFFICIENT_LIMIT => {
                    refuse("insufficient funds")
                }
                _ => Ok(vec![E::Authorized {
                    amount: *amount,
                    method: method.clone(),
                    // Deterministic: the same order always gets the same code (replays match).
                    authorization_code: derived_id(&order_id.to_string(), "authorization", 0)
                        .simple()
                        .to_string()[..12]
                        .to_uppercase(),
                }]),
            }
        }
        (None, _) => Err(Rejection::Unknown(order_id)),
        (Some(p), C::Capture) => match p.status {
            S::Authorized if p.method == "tok_capture_fail" => Ok(vec![E::CaptureFailed {
                reason: "capture rejected by issuer".into(),
            }]),
            S::Authorized => Ok(vec![E::Captured {
                amount: p.amount.expect("authorized amount"),
            }]),
            S::Captured => Ok(vec![]), // already done: idempotent
            other => invalid("capture", other),
        },
        (Some(p), C::Void) => match p.status {
            S::Authorized | S::CaptureFailed => Ok(vec![E::Voided {
                amount: p.amount.expect("authorized amount"),
            }]),
            S::Voided | S::Failed => Ok(vec![]), // nothing (more) to give back
            other => invalid("void", other),
        },
        (Some(p), C::Refund { amount }) => {
            if !matches!(p.status, S::Captured | S::Refunded) {
                return invalid("refund", p.status);
            }
            let captured = p.captured.expect("captured amount");
            let refunded = p.refunded.unwrap_or(Money::zero(captured.currency()));
            let left = captured
                .checked_sub(refunded)
                .expect("never refunds more than captured");
            let requested = amount.unwrap_or(left);
            if requested.currency() != captured.currency() {
                return Err(Rejection::Currency {
                    expected: captured.currency().to_string(),
                    found: requested.currency().to_string(),
                });
            }
            if requested.amount() > left.amount() {
                return Err(Rejection::RefundTooLarge {
                    requested: requested.to_string(),
                    left: left.to_string(),
                });
            }
            if requested.amount().is_zero() {
                return Ok(vec![]);
            }
            let total = refunded.checked_add(requested).expect("same currency");
            Ok(vec![E::Refunded {
                amount: requested,
                total_refunded: total,
            }])
        }
    }
}

pub fn evolve(order_id: OrderId, state: Option<Payment>, event: &PaymentEvent) -> Option<Payment> {
    use PaymentEvent as E;
    use PaymentStatus as S;
    let mut p = state.unwrap_or(Payment {
        order_id,
        status: S::Failed,
        amount: None,
        method: String::new(),
        captured: None,
        refunded: None,
        failure: None,
        version: 0,
    });
    match event {
        E::Authorized { amount, method, .. } => {
            p.status = S::Authorized;
            p.amount = Some(*amount);
            p.method = method.clone();
        }
        E::Failed { reason } => {
            p.status = S::Failed;
            p.failure = Some(reason.clone());
        }
        E::Captured { amount } => {
            p.status = S::Captured;
            p.captured = Some(*amount);
        }
        E::CaptureFailed { reason } => {
            p.status = S::CaptureFailed;
            p.failure = Some(reason.clone());
        }
        E::Voided { .. } => p.status = S::Voided,
        E::Refunded { total_refunded, .. } => {
            p.status = S::Refunded;
            p.refunded = Some(*total_refunded);
        }
    }
    p.version += 1;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Currency;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn oid() -> OrderId {
        OrderId::parse("6f1c1f8e-3c1a-4f57-9a0e-0d7f3b1c2a11").unwrap()
    }
    fn usd(a: Decimal) -> Money {
        Money::new(a, Currency::USD).unwrap()
    }
    fn authorize(amount: Decimal, method: &str) -> PaymentCommand {
        PaymentCommand::Authorize {
            amount: usd(amount),
            method: method.into(),
        }
    }
    fn run(history: &[PaymentCommand]) -> Option<Payment> {
        let mut state = None;
        for c in history {
            for e in decide(oid(), state.as_ref(), c).unwrap() {
                state = evolve(oid(), state, &e);
            }
        }
        state
    }

    #[test]
    fn every_gateway_branch() {
        let first = |cmd| decide(oid(), None, &cmd).unwrap().remove(0);
        assert!(matches!(
            first(authorize(dec!(50), "tok_visa")),
            PaymentEvent::Authorized { .. }
        ));
        assert_eq!(
            first(authorize(dec!(50), "tok_decline")),
            PaymentEvent::Failed {
                reason: "card declined".into()
            }
        );
        assert!(matches!(
            first(authorize(dec!(100), "tok_insufficient")),
            PaymentEvent::Authorized { .. }
        ));
        assert_eq!(
            first(authorize(dec!(100.01), "tok_insufficient")),
            PaymentEvent::Failed {
                reason: "insufficient funds".into()
            }
        );
        assert_eq!(
            first(authorize(dec!(10000.01), "tok_visa")),
            PaymentEvent::Failed {
                reason: "fraud check: amount above 10000".into()
            }
        );
        let p = run(&[authorize(dec!(20), "tok_capture_fail")]);
        assert!(matches!(
            decide(oid(), p.as_ref(), &PaymentCommand::Capture).unwrap()[0],
            PaymentEvent::CaptureFailed { .. }
        ));
    }

    #[test]
    fn authorization_codes_are_deterministic() {
        let code = |_: u8| match decide(oid(), None, &authorize(dec!(5), "tok_visa"))
            .unwrap()
            .remove(0)
        {
            PaymentEvent::Authorized {
                authorization_code, ..
            } => authorization_code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code(1), code(2));
        assert_eq!(code(1).len(), 12);
    }

    #[test]
    fn compensations_follow_the_state_machine() {
        let authorized = run(&[authorize(dec!(30), "tok_visa")]);
        assert_eq!(
            decide(oid(), authorized.as_ref(), &PaymentCommand::Void).unwrap(),
            vec![PaymentEvent::Voided {
                amount: usd(dec!(30))
            }]
        );
        assert!(matches!(
            decide(
                oid(),
                authorized.as_ref(),
                &PaymentCommand::Refund { amount: None }
            ),
            Err(Rejection::InvalidState {
                action: "refund",
                ..
            })
        ));
        let captured = run(&[authorize(dec!(30), "tok_visa"), PaymentCommand::Capture]);
        assert!(matches!(
            decide(oid(), captured.as_ref(), &PaymentCommand::Void),
            Err(Rejection::InvalidState { action: "void", .. })
        ));
        let partly = run(&[
            authorize(dec!(30), "tok_visa"),
            PaymentCommand::Capture,
            PaymentCommand::Refund {
                amount: Some(usd(dec!(10))),
            },
        ]);
        assert_eq!(
            decide(
                oid(),
                partly.as_ref(),
                &PaymentCommand::Refund { amount: None }
            )
            .unwrap(),
            vec![PaymentEvent::Refunded {
                amount: usd(dec!(20)),
                total_refunded: usd(dec!(30))
            }]
        );
        assert!(matches!(
            decide(
                oid(),
                partly.as_ref(),
                &PaymentCommand::Refund {
                    amount: Some(usd(dec!(20.01)))
                }
            ),
            Err(Rejection::RefundTooLarge { .. })
        ));
        assert_eq!(
            decide(oid(), None, &PaymentCommand::Capture),
            Err(Rejection::Unknown(oid()))
        );
    }

    proptest! {
        /// Whatever sequence of commands: refunded never exceeds captured, and captured
        /// equals the authorized amount when present.
        #[test]
        fn money_is_conserved(cents in 1u32..2_000_000, ops in proptest::collection::vec(0u8..4, 0..20), method in prop_oneof![Just("tok_visa"), Just("tok_capture_fail"), Just("tok_insufficient")]) {
            let amount = Decimal::new(cents.into(), 2);
            let mut state = None;
            for e in decide(oid(), None, &authorize(amount, method)).unwrap() { state = evolve(oid(), state, &e); }
            for op in ops {
                let cmd = match op {
                    0 => PaymentCommand::Capture,
                    1 => PaymentCommand::Void,
                    2 => PaymentCommand::Refund { amount: Some(usd(Decimal::new(i64::from(cents / 3), 2))) },
                    _ => PaymentCommand::Refund { amount: None },
                };
                if let Ok(events) = decide(oid(), state.as_ref(), &cmd) {
                    for e in events { state = evolve(oid(), state, &e); }
                }
                let p = state.as_ref().unwrap();
                if let (Some(c), Some(r)) = (p.captured, p.refunded) {
                    prop_assert!(r.amount() <= c.amount());
                }
                if let Some(c) = p.captured {
                    prop_assert_eq!(Some(c), p.amount);
                }
            }
        }
    }
}
