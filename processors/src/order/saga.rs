//! What the saga asks of other contexts after each order event (pure).

use super::decider::{Order, OrderStatus};
use super::event::OrderEvent;
use crate::values::Sku;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SagaCommand {
    ReserveStock {
        sku: Sku,
        line_no: u32,
        quantity: u32,
    },
    /// Compensation: release everything this order holds on `sku`.
    ReleaseStock { sku: Sku, reason: String },
}

/// The commands that follow from `event`, given the order after it was applied.
pub fn react(order: &Order, event: &OrderEvent) -> Vec<SagaCommand> {
    match event {
        OrderEvent::Created { lines, .. } => lines
            .iter()
            .enumerate()
            .map(|(i, l)| SagaCommand::ReserveStock {
                sku: l.sku.clone(),
                line_no: i as u32,
                quantity: l.quantity.get(),
            })
            .collect(),
        OrderEvent::Cancelled { reason, .. } => order
            .reserved_skus()
            .into_iter()
            .map(|sku| SagaCommand::ReleaseStock {
                sku,
                reason: reason.clone(),
            })
            .collect(),
        // A reservation that landed after the customer cancelled is given back.
        OrderEvent::LineReserved { sku, .. } if order.status == OrderStatus::Cancelled => {
            vec![SagaCommand::ReleaseStock {
                sku: sku.clone(),
                reason: "order cancelled".into(),
            }]
        }
        OrderEvent::LineReserved { .. }
        | OrderEvent::LineRejected { .. }
        | OrderEvent::Confirmed { .. } => vec![],
    }
}
