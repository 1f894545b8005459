#!/usr/bin/env python3
"""One source for the wire format: writes schemas/avro/*.avsc and schemas/src/wire.rs.

Every topic has one envelope record with one optional field per message type, so one
subject per topic (TopicNameStrategy) carries every message of that topic, and new
message types are added as optional fields with a null default (BACKWARD compatible).
Money amounts are decimal strings with their currency alongside or implied by the
aggregate. Run: python3 schemas/codegen/gen_wire.py (CI checks the output is current).
"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TS = {"type": "long", "logicalType": "timestamp-millis"}


class Rec:
    def __init__(self, name, fields, doc=None, rust=None):
        self.name, self.fields, self.doc, self.rust = name, fields, doc, rust or name


def opt(t):
    return ("opt", t)


def arr(t):
    return ("arr", t)


def f(name, t, doc=None):
    return (name, t, doc)


ADDRESS = Rec("Address", [f("street", "string"), f("city", "string"),
                          f("postal_code", "string"), f("country", "string")])
ORDER_LINE = Rec("OrderLine", [
    f("sku", "string"), f("product_name", "string"), f("quantity", "int"),
    f("unit_price", "string"),
    f("unit_weight_kg", opt("string"), "kg per unit; 5 when absent"),
])


def rejected(ns):
    return Rec(f"{ns}CommandRejected", [f("command_id", "string"), f("reason", "string")],
               "A command that was not applied (invalid, or not allowed in the current state), with the reason.",
               rust="CommandRejected")


def payload(name, rec):
    return (name, opt(rec), None)


def event_head(key):
    return [f("event_id", "string", "Unique (UUID), derived from the cause: replays produce the same id."),
            f(key, "string", "Aggregate id; also the Kafka key."),
            f("version", "long", "Aggregate version after this event."),
            f("occurred_at", TS),
            f("correlation_id", opt("string"), "The saga (usually the order's first command)."),
            f("causation_id", opt("string"), "The command or event that caused this one.")]


def command_head(key):
    return [f("command_id", "string", "Idempotency key (UUID). A repeated id is never applied twice."),
            f(key, "string", "Aggregate id; also the Kafka key."),
            f("issued_at", TS),
            f("correlation_id", opt("string"))]


SCHEMAS = {
    "order-command": ("erp.order", Rec("OrderCommand", command_head("order_id") + [
        f("expected_version", opt("long"), "Optimistic concurrency: the aggregate version the sender expects."),
        payload("place_order", Rec("PlaceOrder", [
            f("customer_id", "string"), f("currency", "string", "ISO 4217: USD, EUR or CNY"),
            f("lines", arr(ORDER_LINE)), f("shipping_address", ADDRESS),
            f("payment_method", opt("string"), "Gateway token; tok_visa when absent"),
            f("shipping_method", opt("string"), "STANDARD (default) or EXPRESS"),
            f("manual_confirmation", opt("boolean"), "Wait for ConfirmOrder after reserving stock"),
        ])),
        payload("cancel_order", Rec("CancelOrder", [f("reason", "string")],
                                    "Customer cancel: allowed until the shipment leaves; runs the compensations of the steps done.")),
        payload("update_order", Rec("UpdateOrder", [f("lines", arr(ORDER_LINE))],
                                    "Replace the lines of a PENDING order whose payment has not started; re-priced.")),
        payload("confirm_order", Rec("ConfirmOrder", [f("note", opt("string"))],
                                     "The customer's go-ahead for an order placed with manual_confirmation.")),
    ], "A command to the order context, keyed by order id. Exactly one payload field is set. Money amounts are decimal strings in the order currency.")),
    "order-event": ("erp.order", Rec("OrderEvent", event_head("order_id") + [
        f("status", opt("string"), "Order status after the event: PENDING, CONFIRMED, PAID, SHIPPED, COMPLETED, CANCELLED"),
        payload("order_created", Rec("OrderCreated", [
            f("customer_id", "string"), f("customer_tier", "string"), f("currency", "string"),
            f("lines", arr(ORDER_LINE)), f("shipping_address", ADDRESS),
            f("subtotal", "string"), f("discount", "string"), f("tax", "string"),
            f("shipping_cost", "string"), f("total", "string"),
            f("payment_method", opt("string")), f("shipping_method", opt("string")),
            f("manual_confirmation", opt("boolean")),
        ])),
        payload("order_line_reserved", Rec("OrderLineReserved", [f("line_no", "int"), f("sku", "string"), f("quantity", "int")])),
        payload("order_line_rejected", Rec("OrderLineRejected", [f("line_no", "int"), f("sku", "string"), f("reason", "string")])),
        payload("order_confirmed", Rec("OrderConfirmed", [f("total", "string")])),
        payload("order_cancelled", Rec("OrderCancelled", [
            f("reason", "string"),
            f("released_skus", arr("string"), "SKUs whose stock is released or returned"),
            f("compensations", opt(arr("string")), "Compensating commands sent, e.g. 'refund payment'"),
        ])),
        payload("command_rejected", rejected("Order")),
        payload("order_updated", Rec("OrderUpdated", [
            f("lines", arr(ORDER_LINE)), f("first_line_no", "int"), f("released_skus", arr("string")),
            f("subtotal", "string"), f("discount", "string"), f("tax", "string"),
            f("shipping_cost", "string"), f("total", "string")])),
        payload("order_line_released", Rec("OrderLineReleased", [f("sku", "string"), f("reason", "string")])),
        payload("order_line_committed", Rec("OrderLineCommitted", [f("sku", "string")])),
        payload("order_line_commit_rejected", Rec("OrderLineCommitRejected", [f("sku", "string"), f("reason", "string")])),
        payload("order_confirmation_received", Rec("OrderConfirmationReceived", [f("customer_id", "string")])),
        payload("order_payment_requested", Rec("OrderPaymentRequested", [f("amount", "string"), f("method", "string")])),
        payload("order_payment_authorized", Rec("OrderPaymentAuthorized", [f("authorization_code", "string")])),
        payload("order_payment_declined", Rec("OrderPaymentDeclined", [f("reason", "string")])),
        payload("order_paid", Rec("OrderPaid", [f("amount", "string")])),
        payload("order_capture_failed", Rec("OrderCaptureFailed", [f("reason", "string")])),
        payload("order_shipment_requested", Rec("OrderShipmentRequested", [f("method", "string"), f("weight_kg", "string")])),
        payload("order_shipment_created", Rec("OrderShipmentCreated", [f("carrier", "string"), f("tracking_number", "string")])),
        payload("order_shipment_failed", Rec("OrderShipmentFailed", [f("reason", "string")])),
        payload("order_shipment_cancelled", Rec("OrderShipmentCancelled", [f("tracking_number", opt("string"))])),
        payload("order_cancellation_requested", Rec("OrderCancellationRequested", [f("reason", "string")])),
        payload("order_cancellation_refused", Rec("OrderCancellationRefused", [f("reason", "string")])),
        payload("order_shipped", Rec("OrderShipped", [f("tracking_number", opt("string"))])),
        payload("order_completed", Rec("OrderCompleted", [
            f("total", "string"),
            f("customer_id", opt("string"), "Who bought: the customer context's loyalty rule reads it"),
            f("currency", opt("string"))])),
        payload("order_late_reply_compensated", Rec("OrderLateReplyCompensated", [f("reply", "string"), f("compensation", "string")])),
    ], "A fact about one order, keyed by order id. Exactly one payload field is set.")),
    "inventory-command": ("erp.inventory", Rec("InventoryCommand", command_head("sku") + [
        payload("register_product", Rec("RegisterProduct", [
            f("name", "string"), f("initial_stock", "int"), f("low_stock_threshold", "int"),
            f("unit_weight_kg", opt("string")),
            f("warehouse", opt("string"), "Where the initial stock is; 'main' when absent"),
            f("reorder_point", opt("int")), f("reorder_quantity", opt("int"))])),
        payload("restock", Rec("Restock", [f("quantity", "int"), f("warehouse", opt("string"))])),
        payload("reserve_stock", Rec("ReserveStock", [f("order_id", "string"), f("line_no", "int"), f("quantity", "int"),
                                                      f("channel", opt("string"), "Who holds the stock outside an order saga (e.g. 'grpc'); null for the saga. A channel's holds get no replies on order-replies: their outcome is on inventory-events only.")],
                                     "Saga step: hold quantity for one order line. The reply goes to order-replies keyed by order id.")),
        payload("release_stock", Rec("ReleaseStock", [f("order_id", "string"), f("reason", "string"),
                                                      f("channel", opt("string"), "Set by a channel releasing its own hold: only a hold of that channel is released, and a missing one is answered with a rejection.")],
                                     "Compensation: let go of everything held (not sold) for the order on this SKU.")),
        payload("adjust_stock", Rec("AdjustStock", [f("warehouse", "string"), f("counted", "int"), f("reason", "string")],
                                    "Stock-taking: the counted quantity replaces the book figure of one warehouse.")),
        payload("commit_reservation", Rec("CommitReservation", [f("order_id", "string")],
                                          "Saga step after capture: the held stock is sold.")),
        payload("return_stock", Rec("ReturnStock", [f("order_id", "string"), f("quantity", "int"), f("reason", "string")],
                                    "Compensation after a commit: sold units come back on hand.")),
        payload("expire_reservation", Rec("ExpireReservation", [
            f("order_id", "string"),
            f("hold", opt("string"), "Which hold (reserved_at/first line): a newer hold of the order is left alone")],
                                          "Written by the expiry punctuation: release the hold if it is still there.")),
    ], "A command to the inventory context, keyed by SKU. Exactly one payload field is set.")),
    "inventory-event": ("erp.inventory", Rec("InventoryEvent", event_head("sku") + [
        payload("product_registered", Rec("ProductRegistered", [
            f("name", "string"), f("on_hand", "int"), f("low_stock_threshold", "int"), f("unit_weight_kg", "string"),
            f("warehouse", opt("string")), f("reorder_point", opt("int")), f("reorder_quantity", opt("int"))])),
        payload("stock_restocked", Rec("StockRestocked", [f("quantity", "int"), f("on_hand", "int"), f("available", "int"),
                                                          f("warehouse", opt("string"))])),
        payload("stock_reserved", Rec("StockReserved", [f("order_id", "string"), f("line_no", "int"), f("quantity", "int"),
                                                        f("available", "int"),
                                                        f("allocation", opt(arr(Rec("WarehouseQuantity", [f("warehouse", "string"), f("quantity", "int")]))))])),
        payload("stock_rejected", Rec("StockRejected", [f("order_id", "string"), f("line_no", "int"), f("quantity", "int"),
                                                        f("available", "int"), f("reason", "string")])),
        payload("stock_released", Rec("StockReleased", [f("order_id", "string"), f("quantity", "int"), f("available", "int"),
                                                        f("reason", opt("string"))])),
        payload("low_stock_warning", Rec("LowStockWarning", [f("available", "int"), f("threshold", "int")])),
        payload("command_rejected", rejected("Inventory")),
        payload("stock_adjusted", Rec("StockAdjusted", [f("warehouse", "string"), f("from_quantity", "int"), f("to_quantity", "int"),
                                                        f("reason", "string"), f("available", "int")])),
        payload("reservation_expired", Rec("ReservationExpired", [f("order_id", "string"), f("quantity", "int"), f("available", "int")])),
        payload("stock_committed", Rec("StockCommitted", [f("order_id", "string"), f("quantity", "int"), f("on_hand", "int"), f("available", "int")])),
        payload("stock_commit_rejected", Rec("StockCommitRejected", [f("order_id", "string"), f("reason", "string")])),
        payload("stock_returned", Rec("StockReturned", [f("order_id", "string"), f("warehouse", "string"), f("quantity", "int"),
                                                        f("on_hand", "int"), f("available", "int")])),
        payload("reorder_suggested", Rec("ReorderSuggested", [f("available", "int"), f("reorder_point", "int"), f("quantity", "int")])),
    ], "A fact about one product's stock, keyed by SKU (on inventory-events), or by order id when it answers the order saga (on order-replies).")),
    "payment-command": ("erp.payment", Rec("PaymentCommand", command_head("order_id") + [
        payload("authorize_payment", Rec("AuthorizePayment", [f("amount", "string"), f("currency", "string"), f("method", "string")])),
        payload("capture_payment", Rec("CapturePayment", [f("note", opt("string"))])),
        payload("void_authorization", Rec("VoidAuthorization", [f("reason", "string")])),
        payload("refund_payment", Rec("RefundPayment", [f("amount", opt("string"), "Everything left when absent"), f("reason", "string")])),
    ], "A command to the payment context, keyed by order id (one payment per order).")),
    "payment-event": ("erp.payment", Rec("PaymentEvent", event_head("order_id") + [
        payload("payment_authorized", Rec("PaymentAuthorized", [f("amount", "string"), f("currency", "string"), f("method", "string"), f("authorization_code", "string")])),
        payload("payment_failed", Rec("PaymentFailed", [f("reason", "string")])),
        payload("payment_captured", Rec("PaymentCaptured", [f("amount", "string"), f("currency", "string")])),
        payload("payment_capture_failed", Rec("PaymentCaptureFailed", [f("reason", "string")])),
        payload("payment_voided", Rec("PaymentVoided", [f("amount", "string"), f("currency", "string")])),
        payload("payment_refunded", Rec("PaymentRefunded", [f("amount", "string"), f("currency", "string"), f("total_refunded", "string")])),
        payload("command_rejected", rejected("Payment")),
    ], "A fact about one order's payment, keyed by order id.")),
    "shipping-command": ("erp.shipping", Rec("ShippingCommand", command_head("order_id") + [
        payload("create_shipment", Rec("CreateShipment", [f("address", ADDRESS), f("weight_kg", "string"), f("method", "string"), f("currency", "string")])),
        payload("dispatch_shipment", Rec("DispatchShipment", [f("note", opt("string"))])),
        payload("deliver_shipment", Rec("DeliverShipment", [f("note", opt("string"))])),
        payload("cancel_shipment", Rec("CancelShipment", [f("reason", "string")])),
    ], "A command to the shipping context, keyed by order id (one shipment per order).")),
    "shipping-event": ("erp.shipping", Rec("ShippingEvent", event_head("order_id") + [
        payload("shipment_created", Rec("ShipmentCreated", [f("carrier", "string"), f("tracking_number", "string"), f("method", "string"),
                                                            f("cost", "string"), f("currency", "string"), f("deliver_from", TS), f("deliver_by", TS)])),
        payload("shipment_failed", Rec("ShipmentFailed", [f("reason", "string")])),
        payload("shipment_dispatched", Rec("ShipmentDispatched", [f("tracking_number", "string")])),
        payload("shipment_delivered", Rec("ShipmentDelivered", [f("tracking_number", "string")])),
        payload("shipment_cancelled", Rec("ShipmentCancelled", [f("reason", "string")])),
        payload("command_rejected", rejected("Shipping")),
    ], "A fact about one order's shipment, keyed by order id.")),
    "customer-command": ("erp.customer", Rec("CustomerCommand", command_head("customer_id") + [
        f("expected_version", opt("long")),
        payload("register_customer", Rec("RegisterCustomer", [f("name", "string"), f("email", "string"), f("phone", opt("string")), f("address", ADDRESS)])),
        payload("update_customer", Rec("UpdateCustomer", [f("email", opt("string")), f("phone", opt("string")), f("addresses", opt(arr(ADDRESS)))])),
        payload("record_completed_order", Rec("RecordCompletedOrder", [f("order_id", "string"), f("total", "string"), f("currency", "string")],
                                              "From the order saga: an order of this customer completed (loyalty).")),
    ], "A command to the customer context, keyed by customer id.")),
    "customer-event": ("erp.customer", Rec("CustomerEvent", event_head("customer_id") + [
        payload("customer_registered", Rec("CustomerRegistered", [f("name", "string"), f("email", "string"), f("phone", opt("string")), f("address", ADDRESS)])),
        payload("customer_updated", Rec("CustomerUpdated", [f("email", opt("string")), f("phone", opt("string")), f("addresses", opt(arr(ADDRESS)))])),
        payload("customer_spend_recorded", Rec("CustomerSpendRecorded", [f("order_id", "string"), f("total", "string"), f("currency", "string")])),
        payload("customer_tier_promoted", Rec("CustomerTierPromoted", [f("from_tier", "string"), f("to_tier", "string")])),
        payload("command_rejected", rejected("Customer")),
    ], "A fact about one customer, keyed by customer id.")),
    "customer": ("erp.customer", Rec("Customer", [
        f("customer_id", "string"), f("name", "string"), f("email", "string"),
        f("tier", "string", "PLATINUM, GOLD, SILVER or BRONZE"), f("version", "long"),
    ], "The customer table (compacted topic, keyed by customer id): the latest state, read by the order processor as a global store.", rust="CustomerRow")),
}


def avro_type(t, seen):
    if isinstance(t, str):
        return t
    if isinstance(t, dict):
        return t
    if isinstance(t, Rec):
        if t.name in seen:
            return t.name
        seen.add(t.name)
        out = {"type": "record", "name": t.name}
        if t.doc:
            out["doc"] = t.doc
        out["fields"] = [avro_field(fl, seen) for fl in t.fields]
        return out
    kind, inner = t
    if kind == "opt":
        return ["null", avro_type(inner, seen)]
    return {"type": "array", "items": avro_type(inner, seen)}


def avro_field(fl, seen):
    name, t, doc = fl
    out = {"name": name, "type": avro_type(t, seen)}
    if isinstance(t, tuple) and t[0] == "opt":
        out["default"] = None
    if doc:
        out["doc"] = doc
    return out


def rust_type(t):
    if t == "string":
        return "String"
    if t == "int":
        return "i32"
    if t in ("long",) or t == TS:
        return "i64"
    if t == "boolean":
        return "bool"
    if isinstance(t, Rec):
        return t.rust
    kind, inner = t
    return f"Option<{rust_type(inner)}>" if kind == "opt" else f"Vec<{rust_type(inner)}>"


def collect(t, out):
    if isinstance(t, Rec):
        if t.rust in out:
            assert [x[:2] for x in out[t.rust].fields] == [x[:2] for x in t.fields] or t.rust == "CommandRejected", t.rust
            return
        out[t.rust] = t
        for fl in t.fields:
            collect(fl[1], out)
    elif isinstance(t, tuple):
        collect(t[1], out)


def main():
    structs = {}
    kinds = []
    for file, (ns, rec) in SCHEMAS.items():
        schema = avro_type(rec, set())
        schema = {"type": "record", "name": rec.name, "namespace": ns, **{k: v for k, v in schema.items() if k not in ("type", "name")}}
        (ROOT / "avro" / f"{file}.avsc").write_text(json.dumps(schema, indent=2) + "\n")
        collect(rec, structs)
        kinds.append((file, ns, rec))
    lines = ["//! Typed mirrors of the `.avsc` files, generated by `schemas/codegen/gen_wire.py`",
             "//! (do not edit by hand). Field names and order match the schemas; each envelope",
             "//! carries exactly one `Some` payload. Money is a decimal string.",
             "", "use serde::{Deserialize, Serialize};", ""]
    for name, rec in structs.items():
        if rec.doc:
            lines.append(f"/// {rec.doc}")
        lines.append("#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]")
        lines.append(f"pub struct {name} {{")
        for fname, t, _ in rec.fields:
            lines.append(f"    pub {fname}: {rust_type(t)},")
        lines.append("}")
        lines.append("")
    # `empty` constructors for envelopes: required fields as arguments, payloads None.
    for file, ns, rec in kinds:
        required = [(n, t) for n, t, _ in rec.fields if not (isinstance(t, tuple) and t[0] == "opt")]
        if file == "customer":
            continue
        args = ", ".join(f"{n}: {rust_type(t)}" for n, t in required)
        lines.append(f"impl {rec.rust} {{")
        lines.append("    /// No payload yet; the caller sets exactly one payload field.")
        lines.append(f"    pub fn empty({args}) -> Self {{")
        lines.append("        Self {")
        for n, t, _ in rec.fields:
            lines.append(f"            {n}," if (n, t) in required else f"            {n}: None,")
        lines.append("        }")
        lines.append("    }")
        lines.append("}")
        lines.append("")
    (ROOT / "src" / "wire.rs").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
