//! Adapter: payment commands in (keyed by order id); payment events out, which the order
//! processor reads directly (co-partitioned by order id).

use std::str::FromStr;
use std::sync::Arc;

use erp_schemas::topics::Topics;
use erp_schemas::{AvroSerde, SchemaKind, wire};

use super::decider::{Payment, PaymentCommand, PaymentEvent, Rejection, decide, evolve};
use crate::adapter::{self, PROCESSED_STORE};
use crate::engine::{InputRecord, ProcessError, Processor, ProcessorContext, Topology};
use crate::order::processor::AUTHORIZATION_REFUSED;
use crate::values::{Currency, Money, OrderId, ValueError, derived_id};

pub const PAYMENTS_STORE: &str = "payments";

pub fn topology(topics: &Topics, serde: Arc<AvroSerde>) -> Topology {
    let t = topics.clone();
    Topology {
        application_id: topics.application_id("payment"),
        source_topics: vec![topics.payment_commands()],
        sink_topics: vec![topics.payment_events()],
        stores: vec![PAYMENTS_STORE.to_string(), PROCESSED_STORE.to_string()],
        global_stores: vec![],
        processor: Arc::new(move |_| {
            Box::new(PaymentProcessor {
                serde: serde.clone(),
                topics: t.clone(),
            })
        }),
    }
}

pub struct PaymentProcessor {
    serde: Arc<AvroSerde>,
    topics: Topics,
}

fn to_domain(cmd: &wire::PaymentCommand) -> Result<PaymentCommand, ValueError> {
    adapter::exactly_one_payload(&[
        cmd.authorize_payment.is_some(),
        cmd.capture_payment.is_some(),
        cmd.void_authorization.is_some(),
        cmd.refund_payment.is_some(),
    ])
    .map_err(ValueError::Invalid)?;
    if let Some(a) = &cmd.authorize_payment {
        let currency = Currency::from_str(&a.currency)?;
        return Ok(PaymentCommand::Authorize {
            amount: Money::parse(&a.amount, currency)?,
            method: a.method.clone(),
        });
    }
    if cmd.capture_payment.is_some() {
        return Ok(PaymentCommand::Capture);
    }
    if cmd.void_authorization.is_some() {
        return Ok(PaymentCommand::Void);
    }
    let r = cmd.refund_payment.as_ref().expect("one payload is set");
    // A partial refund names its amount in the payment's currency, checked by the decider.
    let amount = match &r.amount {
        None => None,
        Some(a) => Some(Money::parse(a, Currency::USD)?),
    };
    Ok(PaymentCommand::Refund { amount })
}

impl Processor for PaymentProcessor {
    fn process(
        &mut self,
        ctx: &mut ProcessorContext<'_>,
        record: &InputRecord<'_>,
    ) -> Result<(), ProcessError> {
        let cmd: wire::PaymentCommand =
            adapter::decode(&self.serde, SchemaKind::PaymentCommand, record)?;
        if adapter::seen_before(ctx, &cmd.command_id, cmd.issued_at)? {
            return Ok(());
        }
        let order_id = match OrderId::parse(&cmd.order_id) {
            Ok(id) => id,
            Err(e) => return self.reject(ctx, &cmd, 0, e.to_string()),
        };
        let key = order_id.to_string();
        let mut state: Option<Payment> = adapter::load(ctx, PAYMENTS_STORE, &key)?;
        let version = state.as_ref().map_or(0, |p| p.version);
        let refused = |reason: String| {
            if cmd.authorize_payment.is_some() {
                format!("{AUTHORIZATION_REFUSED}: {reason}")
            } else {
                reason
            }
        };
        let command = match to_domain(&cmd) {
            Ok(c) => c,
            Err(e) => return self.reject(ctx, &cmd, version, refused(e.to_string())),
        };
        // Refunds are in the payment's own currency.
        let command = match (command, &state) {
            (PaymentCommand::Refund { amount: Some(a) }, Some(p)) => {
                let currency = p.amount.map_or(Currency::USD, |m| m.currency());
                match Money::new(a.amount(), currency) {
                    Ok(m) => PaymentCommand::Refund { amount: Some(m) },
                    Err(e) => return self.reject(ctx, &cmd, version, e.to_string()),
                }
            }
            (c, _) => c,
        };
        let events = match decide(order_id, state.as_ref(), &command) {
            Ok(events) => events,
            Err(Rejection::AlreadyExists(_)) => {
                return self.reject(ctx, &cmd, version, "payment already exists".into());
            }
            Err(e) => return self.reject(ctx, &cmd, version, refused(e.to_string())),
        };
        let correlation = cmd
            .correlation_id
            .clone()
            .unwrap_or_else(|| cmd.command_id.clone());
        for (i, event) in events.iter().enumerate() {
            state = evolve(order_id, state, event);
            let p = state.as_ref().expect("an event leaves a payment");
            let mut out = wire::PaymentEvent::empty(
                derived_id(&cmd.command_id, "payment-event", i).to_string(),
                key.clone(),
                p.version,
                cmd.issued_at,
            );
            out.correlation_id = Some(correlation.clone());
            out.causation_id = Some(cmd.command_id.clone());
            set_payload(&mut out, event);
            let topic = self.topics.payment_events();
            let value = adapter::encode(&self.serde, &topic, SchemaKind::PaymentEvent, &out)?;
            ctx.forward(adapter::output(
                topic,
                &key,
                value,
                cmd.issued_at,
                adapter::headers(&correlation, &cmd.command_id),
            ));
        }
        if let Some(p) = state {
            adapter::save(ctx, PAYMENTS_STORE, &key, &p)?;
        }
        Ok(())
    }
}

fn set_payload(out: &mut wire::PaymentEvent, event: &PaymentEvent) {
    match event {
        PaymentEvent::Authorized {
            amount,
            method,
            authorization_code,
        } => {
            out.payment_authorized = Some(wire::PaymentAuthorized {
                amount: amount.to_wire(),
                currency: amount.currency().to_string(),
                method: method.clone(),
                authorization_code: authorization_code.clone(),
            })
        }
        PaymentEvent::Failed { reason } => {
            out.payment_failed = Some(wire::PaymentFailed {
                reason: reason.clone(),
            })
        }
        PaymentEvent::Captured { amount } => {
            out.payment_captured = Some(wire::PaymentCaptured {
                amount: amount.to_wire(),
                currency: amount.currency().to_string(),
            })
        }
        PaymentEvent::CaptureFailed { reason } => {
            out.payment_capture_failed = Some(wire::PaymentCaptureFailed {
                reason: reason.clone(),
            })
        }
        PaymentEvent::Voided { amount } => {
            out.payment_voided = Some(wire::PaymentVoided {
                amount: amount.to_wire(),
                currency: amount.currency().to_string(),
            })
        }
        PaymentEvent::Refunded {
            amount,
            total_refunded,
        } => {
            out.payment_refunded = Some(wire::PaymentRefunded {
                amount: amount.to_wire(),
                currency: amount.currency().to_string(),
                total_refunded: total_refunded.to_wire(),
            })
        }
    }
}

impl PaymentProcessor {
    fn reject(
        &self,
        ctx: &mut ProcessorContext<'_>,
        cmd: &wire::PaymentCommand,
        version: i64,
        reason: String,
    ) -> Result<(), ProcessError> {
        tracing::info!(order_id = %cmd.order_id, command = %cmd.command_id, %reason, "payment command rejected");
        let correlation = cmd
            .correlation_id
            .clone()
            .unwrap_or_else(|| cmd.command_id.clone());
        let mut out = wire::PaymentEvent::empty(
            derived_id(&cmd.command_id, "rejection", 0).to_string(),
            cmd.order_id.clone(),
            version,
            cmd.issued_at,
        );
        out.correlation_id = Some(correlation.clone());
        out.causation_id = Some(cmd.command_id.clone());
        out.command_rejected = Some(wire::CommandRejected {
            command_id: cmd.command_id.clone(),
            reason,
        });
        let topic = self.topics.payment_events();
        let value = adapter::encode(&self.serde, &topic, SchemaKind::PaymentEvent, &out)?;
        ctx.forward(adapter::output(
            topic,
            &cmd.order_id,
            value,
            cmd.issued_at,
            adapter::headers(&correlation, &cmd.command_id),
        ));
        Ok(())
    }
}
