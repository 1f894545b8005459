//! The shipping context: one shipment per order, keyed by order id.
//!
//! - Cost (the seed's rule, as for order pricing): 10 base + 0.5 per kg above 50 kg +
//!   15 when the postal code starts with "9"; express adds 50 %.
//! - Delivery window from creation: standard 3–5 days, express 1–2 days.
//! - Carrier: express → "DHL"; standard → "UPS" above 50 kg, otherwise "USPS" (remote
//!   postal codes included).
//! - Tracking number: carrier prefix + 10 characters derived from the shipment id, so
//!   replays produce the same number.
//! - Undeliverable: postal codes starting with "000" are served by no carrier; creating
//!   a shipment there fails (the order saga refunds and returns the stock).

pub mod decider;
pub mod processor;

pub use decider::{
    Method, Rejection, Shipment, ShipmentCommand, ShipmentEvent, ShipmentStatus, UNSERVED_PREFIX,
    decide, evolve, shipping_cost,
};
