//! The payment context, one payment per order (keyed by order id): a deterministic simulated gateway and
//! fraud rule, so tests can drive every branch.
//!
//! Gateway rules, by the payment method token in the command:
//! - `tok_decline`: authorization declined ("card declined")
//! - `tok_insufficient`: declined when the amount exceeds 100.00 ("insufficient funds")
//! - `tok_capture_fail`: authorized, but every capture fails ("capture rejected by issuer")
//! - any other non-empty token: approved
//!
//! Fraud rule, before the gateway: an amount above 10,000.00 (any currency) is refused
//! ("fraud check: amount above 10000").

pub mod decider;
pub mod processor;

pub use decider::{
    Payment, PaymentCommand, PaymentEvent, PaymentStatus, Rejection, decide, evolve,
};
