//! What the saga asks of other contexts after each order event (pure). Every command
//! goes out in the same Kafka transaction as the event that caused it.

use rust_decimal::Decimal;

use super::decider::{Order, OrderStatus};
use super::event::{Compensation, OrderEvent};
use crate::shipping::Method;
use crate::values::{Money, Sku};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaCommand {
    ReserveStock {
        sku: Sku,
        line_no: u32,
        quantity: u32,
    },
    /// Compensation: release everything this order holds on `sku`.
    ReleaseStock {
        sku: Sku,
        reason: String,
    },
    CommitReservation {
        sku: Sku,
    },
    /// Compensation after a commit: the sold units come back.
    ReturnStock {
        sku: Sku,
        quantity: u32,
        reason: String,
    },
    AuthorizePayment {
        amount: Money,
        method: String,
    },
    CapturePayment,
    VoidPayment {
        reason: String,
    },
    RefundPayment {
        reason: String,
    },
    CreateShipment {
        method: Method,
        weight_kg: Decimal,
    },
    CancelShipment {
        reason: String,
    },
}

impl SagaCommand {
    /// For timelines: the command and its target context.
    pub fn describe(&self) -> String {
        match self {
            SagaCommand::ReserveStock {
                sku,
                line_no,
                quantity,
            } => format!("inventory: ReserveStock {quantity} x {sku} (line {line_no})"),
            SagaCommand::ReleaseStock { sku, .. } => format!("inventory: ReleaseStock {sku}"),
            SagaCommand::CommitReservation { sku } => {
                format!("inventory: CommitReservation {sku}")
            }
            SagaCommand::ReturnStock { sku, quantity, .. } => {
                format!("inventory: ReturnStock {quantity} x {sku}")
            }
            SagaCommand::AuthorizePayment { amount, method } => {
                format!("payment: AuthorizePayment {amount} ({method})")
            }
            SagaCommand::CapturePayment => "payment: CapturePayment".into(),
            SagaCommand::VoidPayment { .. } => "payment: VoidAuthorization".into(),
            SagaCommand::RefundPayment { .. } => "payment: RefundPayment".into(),
            SagaCommand::CreateShipment { method, weight_kg } => {
                format!("shipping: CreateShipment {method:?} {weight_kg} kg")
            }
            SagaCommand::CancelShipment { .. } => "shipping: CancelShipment".into(),
        }
    }
}

fn compensate(c: &Compensation, reason: &str) -> SagaCommand {
    let reason = reason.to_string();
    match c {
        Compensation::ReleaseStock { sku } => SagaCommand::ReleaseStock {
            sku: sku.clone(),
            reason,
        },
        Compensation::ReturnStock { sku, quantity } => SagaCommand::ReturnStock {
            sku: sku.clone(),
            quantity: *quantity,
            reason,
        },
        Compensation::VoidPayment => SagaCommand::VoidPayment { reason },
        Compensation::RefundPayment => SagaCommand::RefundPayment { reason },
        Compensation::CancelShipment => SagaCommand::CancelShipment { reason },
    }
}

/// The commands that follow from `event`, given the order after it was applied.
pub fn react(order: &Order, event: &OrderEvent) -> Vec<SagaCommand> {
    let running = order.status != OrderStatus::Cancelled;
    let reserve_all = |order: &Order| -> Vec<SagaCommand> {
        order
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| SagaCommand::ReserveStock {
                sku: l.sku.clone(),
                line_no: order.first_line_no + i as u32,
                quantity: l.quantity.get(),
            })
            .collect()
    };
    match event {
        OrderEvent::Created { .. } => reserve_all(order),
        OrderEvent::Updated { released_skus, .. } => released_skus
            .iter()
            .map(|sku| SagaCommand::ReleaseStock {
                sku: sku.clone(),
                reason: "order updated".into(),
            })
            .chain(reserve_all(order))
            .collect(),
        OrderEvent::PaymentRequested { amount, method, .. } => {
            vec![SagaCommand::AuthorizePayment {
                amount: *amount,
                method: method.clone(),
            }]
        }
        OrderEvent::Confirmed { .. } if running => vec![SagaCommand::CapturePayment],
        OrderEvent::Paid { .. } if running => order
            .skus()
            .into_iter()
            .map(|sku| SagaCommand::CommitReservation { sku })
            .collect(),
        OrderEvent::ShipmentRequested {
            method, weight_kg, ..
        } => vec![SagaCommand::CreateShipment {
            method: *method,
            weight_kg: *weight_kg,
        }],
        OrderEvent::CancellationRequested { reason, .. } => {
            vec![SagaCommand::CancelShipment {
                reason: reason.clone(),
            }]
        }
        OrderEvent::Cancelled {
            reason,
            compensations,
            ..
        } => compensations
            .iter()
            .map(|c| compensate(c, reason))
            .collect(),
        OrderEvent::LateReplyCompensated {
            reply,
            compensation,
            ..
        } => vec![compensate(
            compensation,
            &format!("order cancelled before {reply} arrived"),
        )],
        _ => vec![],
    }
}
