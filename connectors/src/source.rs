//! The bulk command source: NDJSON or CSV files of orders, customers, products or
//! restocks, validated line by line and published as Avro commands.
//!
//! Every bad line is reported with its line number and skipped; the good ones are
//! published. Re-running a file publishes no new effects: command ids are derived from
//! the file's name, the record's content and its occurrence (the 2nd identical line is
//! a different command from the 1st), and the processors drop a command id they have
//! seen. A record may name its own `command_id` instead. Customers without an id get
//! one derived from their email, so an orders file may name a customer by
//! `customer_email`.

use std::collections::HashMap;
use std::fmt;
use std::io::BufRead;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use erp_schemas::wire;

/// What a file holds (one kind per file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Orders,
    Customers,
    Products,
    Restocks,
}

impl Kind {
    /// From a file name that starts with the kind (`orders-2026-11.csv`).
    pub fn from_path(path: &std::path::Path) -> Option<Kind> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        [
            ("order", Kind::Orders),
            ("customer", Kind::Customers),
            ("product", Kind::Products),
            ("restock", Kind::Restocks),
        ]
        .into_iter()
        .find(|(prefix, _)| name.starts_with(prefix))
        .map(|(_, k)| k)
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "orders" => Ok(Kind::Orders),
            "customers" => Ok(Kind::Customers),
            "products" => Ok(Kind::Products),
            "restocks" => Ok(Kind::Restocks),
            other => Err(format!(
                "unknown kind {other:?}: use orders, customers, products or restocks"
            )),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Orders => "orders",
            Kind::Customers => "customers",
            Kind::Products => "products",
            Kind::Restocks => "restocks",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

impl Format {
    /// From a file name: `.csv` is CSV, `.ndjson`/`.jsonl`/`.json` is NDJSON.
    pub fn from_path(path: &str) -> Option<Format> {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Format::Csv)
        } else if [".ndjson", ".jsonl", ".json"]
            .iter()
            .any(|e| lower.ends_with(e))
        {
            Some(Format::Ndjson)
        } else {
            None
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown format {other:?}: use ndjson or csv")),
        }
    }
}

/// A command ready to publish, with the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceCommand {
    Order(wire::OrderCommand),
    Customer(wire::CustomerCommand),
    Inventory(wire::InventoryCommand),
}

impl SourceCommand {
    pub fn command_id(&self) -> &str {
        match self {
            SourceCommand::Order(c) => &c.command_id,
            SourceCommand::Customer(c) => &c.command_id,
            SourceCommand::Inventory(c) => &c.command_id,
        }
    }
}

/// A line that cannot become a command, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Ids of records without one: UUID v5 in this namespace (fixed: the same file gives
/// the same ids on every machine and every run).
const NAMESPACE: Uuid = Uuid::from_u128(0x5d2f_7a61_3c1e_4b8e_9a07_e4c3_1f2b_6d90);

/// The id a customer registered without one gets (and an order's `customer_email`
/// resolves to).
pub fn customer_id_for_email(email: &str) -> String {
    Uuid::new_v5(
        &NAMESPACE,
        format!("customer\0{}", email.trim().to_lowercase()).as_bytes(),
    )
    .to_string()
}

/// Turns one file's records into commands. Feed it lines in order; it remembers how
/// often it saw each record so identical lines stay distinct commands.
pub struct Source {
    kind: Kind,
    format: Format,
    /// Names the file in derived ids: the same name and content give the same ids.
    source_id: String,
    issued_at: i64,
    seen: HashMap<String, u32>,
    csv_header: Option<Vec<String>>,
}

impl Source {
    pub fn new(kind: Kind, format: Format, source_id: &str, issued_at: i64) -> Self {
        Self {
            kind,
            format,
            source_id: source_id.to_string(),
            issued_at,
            seen: HashMap::new(),
            csv_header: None,
        }
    }

    /// One physical line (numbered from 1). `Ok(None)` for blank lines, comments and the
    /// CSV header.
    pub fn line(&mut self, line_no: usize, text: &str) -> Result<Option<SourceCommand>, LineError> {
        let err = |message: String| LineError {
            line: line_no,
            message,
        };
        // A byte-order mark some spreadsheets write is not part of the first field.
        let text = if line_no == 1 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        let trimmed = text.trim();
        if trimmed.is_empty() || (self.format == Format::Ndjson && trimmed.starts_with('#')) {
            return Ok(None);
        }
        let record = match self.format {
            Format::Ndjson => match serde_json::from_str::<Value>(trimmed) {
                Ok(Value::Object(m)) => m,
                Ok(_) => return Err(err("a line must hold one JSON object".into())),
                Err(e) => return Err(err(format!("not JSON: {e}"))),
            },
            Format::Csv => {
                let fields = csv_fields(text).map_err(err)?;
                let Some(header) = &self.csv_header else {
                    self.csv_header = Some(fields.iter().map(|f| f.trim().to_string()).collect());
                    return Ok(None);
                };
                if fields.len() != header.len() {
                    return Err(err(format!(
                        "{} fields where the header has {}",
                        fields.len(),
                        header.len()
                    )));
                }
                csv_record(self.kind, header, fields).map_err(err)?
            }
        };
        // The record's canonical text (keys sorted) names it in derived ids.
        let canonical = canonical(&Value::Object(record.clone()));
        let occurrence = {
            let n = self.seen.entry(canonical.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let derive = |what: &str| {
            Uuid::new_v5(
                &NAMESPACE,
                format!(
                    "{}\0{}\0{what}\0{occurrence}\0{canonical}",
                    self.source_id, self.kind
                )
                .as_bytes(),
            )
            .to_string()
        };
        let command = build(self.kind, Value::Object(record), &derive, self.issued_at);
        command.map(Some).map_err(err)
    }
}

/// JSON text with every object's keys sorted, whatever order the input had.
fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Reads a whole file's lines through [`Source::line`].
pub fn parse_all(
    source: &mut Source,
    reader: impl BufRead,
) -> (Vec<(usize, SourceCommand)>, Vec<LineError>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        match line {
            Ok(text) => match source.line(line_no, &text) {
                Ok(Some(c)) => ok.push((line_no, c)),
                Ok(None) => {}
                Err(e) => bad.push(e),
            },
            Err(e) => bad.push(LineError {
                line: line_no,
                message: format!("unreadable: {e}"),
            }),
        }
    }
    (ok, bad)
}

/// What [`load_file`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Lines read (blank lines, comments and the CSV header included).
    pub lines: usize,
    /// Commands published (or, in a dry run, that would be).
    pub published: usize,
    /// Every line that was skipped, and why.
    pub errors: Vec<LineError>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}: cannot tell the format from the name; pass --format ndjson|csv")]
    UnknownFormat(String),
    #[error(transparent)]
    Publish(#[from] crate::PublishError),
}

/// Validates `path` line by line and publishes every good line through `publisher`
/// (none in a dry run), with a progress bar over the file's bytes. Returns after every
/// published command is acknowledged by the broker.
pub fn load_file(
    path: &std::path::Path,
    kind: Kind,
    format: Option<Format>,
    source_id: Option<&str>,
    publisher: Option<&crate::CommandPublisher>,
    progress: bool,
) -> Result<LoadReport, SourceError> {
    let name = path.display().to_string();
    let format = match format.or_else(|| Format::from_path(&name)) {
        Some(f) => f,
        None => return Err(SourceError::UnknownFormat(name)),
    };
    let io = |source| SourceError::Io {
        path: name.clone(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    // The file's name (not its directory) names its commands: moving a file keeps ids.
    let default_id = path
        .file_name()
        .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned());
    let mut source = Source::new(
        kind,
        format,
        source_id.unwrap_or(&default_id),
        chrono::Utc::now().timestamp_millis(),
    );
    let bar = if progress {
        indicatif::ProgressBar::new(size)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {per_sec} ({eta}) {pos} ",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(format!("{kind} {name}"));
    let mut report = LoadReport::default();
    let mut reader = std::io::BufReader::new(file);
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = reader.read_until(b'\n', &mut raw).map_err(io)?;
        if n == 0 {
            break;
        }
        report.lines += 1;
        bar.inc(n as u64);
        let Ok(text) = std::str::from_utf8(&raw) else {
            report.errors.push(LineError {
                line: report.lines,
                message: "not UTF-8 text".into(),
            });
            continue;
        };
        match source.line(report.lines, text) {
            Ok(Some(command)) => {
                if let Some(p) = publisher {
                    match &command {
                        SourceCommand::Order(c) => p.order(c)?,
                        SourceCommand::Customer(c) => p.customer(c)?,
                        SourceCommand::Inventory(c) => p.inventory(c)?,
                    }
                }
                report.published += 1;
            }
            Ok(None) => {}
            Err(e) => report.errors.push(e),
        }
    }
    if let Some(p) = publisher {
        p.flush()?;
    }
    bar.finish_and_clear();
    Ok(report)
}

/// One CSV line's fields (RFC 4180 quoting; a record may not span lines).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.as_bytes());
    match reader.records().next() {
        Some(Ok(r)) => Ok(r.iter().map(str::to_string).collect()),
        Some(Err(e)) => Err(format!("not CSV: {e}")),
        None => Ok(Vec::new()),
    }
}

/// A CSV row as the JSON shape of an NDJSON record: empty cells are absent, the address
/// columns form `address`/`shipping_address`, and an order's `lines` cell is
/// `sku:quantity:unit_price` items separated by `|`.
fn csv_record(
    kind: Kind,
    header: &[String],
    fields: Vec<String>,
) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    let mut address = Map::new();
    for (name, value) in header.iter().zip(fields) {
        let value = value.trim().to_string();
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "street" | "city" | "postal_code" | "country" => {
                address.insert(name.clone(), Value::String(value));
            }
            "lines" if kind == Kind::Orders => {
                let mut lines = Vec::new();
                for (i, item) in value.split('|').enumerate() {
                    let parts: Vec<&str> = item.split(':').map(str::trim).collect();
                    let [sku, quantity, unit_price] = parts[..] else {
                        return Err(format!(
                            "lines item {} ({item:?}) is not sku:quantity:unit_price",
                            i + 1
                        ));
                    };
                    let quantity: i64 = quantity.parse().map_err(|_| {
                        format!(
                            "lines item {}: quantity {quantity:?} is not a whole number",
                            i + 1
                        )
                    })?;
                    lines.push(serde_json::json!({
                        "sku": sku, "quantity": quantity, "unit_price": unit_price
                    }));
                }
                m.insert("lines".into(), Value::Array(lines));
            }
            // The columns that are numbers or flags in every kind's record; everything
            // else stays text (a numeric SKU or name is still a string).
            "quantity"
            | "initial_stock"
            | "low_stock_threshold"
            | "reorder_point"
            | "reorder_quantity" => {
                let v = match value.parse::<i64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => Value::String(value),
                };
                m.insert(name.clone(), v);
            }
            "manual_confirmation" => {
                let v = match value.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => Value::String(value),
                };
                m.insert(name.clone(), v);
            }
            _ => {
                m.insert(name.clone(), Value::String(value));
            }
        }
    }
    if !address.is_empty() {
        let key = if kind == Kind::Orders {
            "shipping_address"
        } else {
            "address"
        };
        m.insert(key.into(), Value::Object(address));
    }
    Ok(m)
}

/// A decimal given as a JSON string or number.
#[derive(Debug, Clone)]
struct Amount(String);

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Amount(s)),
            Value::Number(n) => Ok(Amount(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a decimal, got {other}"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressRecord {
    street: String,
    city: String,
    postal_code: String,
    country: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineRecord {
    sku: String,
    quantity: i64,
    unit_price: Amount,
    product_name: Option<String>,
    unit_weight_kg: Option<Amount>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderRecord {
    command_id: Option<String>,
    order_id: Option<String>,
    customer_id: Option<String>,
    customer_email: Option<String>,
    currency: String,
    lines: Vec<LineRecord>,
    shipping_address: AddressRecord,
    payment_method: Option<String>,
    shipping_method: Option<String>,
    manual_confirmation: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerRecord {
    command_id: Option<String>,
    customer_id: Option<String>,
    name: String,
    email: String,
    phone: Option<Value>,
    address: AddressRecord,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductRecord {
    command_id: Option<String>,
    sku: String,
    name: String,
    initial_stock: i64,
    low_stock_threshold: Option<i64>,
    unit_weight_kg: Option<Amount>,
    warehouse: Option<String>,
    reorder_point: Option<i64>,
    reorder_quantity: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockRecord {
    command_id: Option<String>,
    sku: String,
    quantity: i64,
    warehouse: Option<String>,
}

/// The edge's checks: shapes and ranges a command must have before it is worth
/// publishing. Business rules (a known SKU, a supported currency, enough stock) stay
/// with the processors, which refuse with a reason on their event topics.
fn non_empty(field: &str, v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(v.to_string())
}

fn id(field: &str, v: &str) -> Result<String, String> {
    Uuid::parse_str(v.trim())
        .map(|u| u.to_string())
        .map_err(|_| format!("{field} {v:?} is not a UUID"))
}

fn count(field: &str, v: i64, min: i64) -> Result<i32, String> {
    if v < min {
        return Err(format!("{field} must be at least {min}, got {v}"));
    }
    i32::try_from(v).map_err(|_| format!("{field} {v} is too large"))
}

fn decimal(field: &str, v: &Amount) -> Result<String, String> {
    let d = Decimal::from_str(v.0.trim())
        .map_err(|_| format!("{field} {:?} is not a decimal number", v.0))?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(format!("{field} must not be negative, got {d}"));
    }
    if d.scale() > 2 && d.normalize().scale() > 2 {
        return Err(format!("{field} {d} has more than 2 decimal places"));
    }
    Ok(d.normalize().to_string())
}

fn address(a: AddressRecord) -> Result<wire::Address, String> {
    Ok(wire::Address {
        street: non_empty("street", &a.street)?,
        city: non_empty("city", &a.city)?,
        postal_code: non_empty("postal_code", &a.postal_code)?,
        country: non_empty("country", &a.country)?,
    })
}

fn email(v: &str) -> Result<String, String> {
    let v = v.trim();
    match v.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') =>
        {
            Ok(v.to_string())
        }
        _ => Err(format!("email {v:?} is not an email address")),
    }
}

fn typed<T: serde::de::DeserializeOwned>(record: Value) -> Result<T, String> {
    // The path names the field ("lines[0].quantity: invalid type …").
    serde_path_to_error::deserialize(record).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

fn build(
    kind: Kind,
    record: Value,
    derive: &dyn Fn(&str) -> String,
    at: i64,
) -> Result<SourceCommand, String> {
    let command_id = |given: &Option<String>| match given {
        Some(id) => non_empty("command_id", id),
        None => Ok(derive("command")),
    };
    match kind {
        Kind::Orders => {
            let r: OrderRecord = typed(record)?;
            let customer_id = match (&r.customer_id, &r.customer_email) {
                (Some(c), None) => id("customer_id", c)?,
                (None, Some(e)) => customer_id_for_email(&email(e)?),
                (Some(_), Some(_)) => {
                    return Err("give customer_id or customer_email, not both".into());
                }
                (None, None) => return Err("missing customer_id (or customer_email)".into()),
            };
            let currency = r.currency.trim().to_string();
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "currency {currency:?} is not an ISO 4217 code (three capital letters)"
                ));
            }
            if r.lines.is_empty() {
                return Err("an order needs at least one line".into());
            }
            let lines = r
                .lines
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    let at = |e: String| format!("lines[{}]: {e}", i + 1);
                    let sku = non_empty("sku", &l.sku).map_err(at)?;
                    Ok(wire::OrderLine {
                        product_name: l.product_name.unwrap_or_else(|| sku.clone()),
                        sku,
                        quantity: count("quantity", l.quantity, 1).map_err(at)?,
                        unit_price: decimal("unit_price", &l.unit_price).map_err(at)?,
                        unit_weight_kg: l
                            .unit_weight_kg
                            .as_ref()
                            .map(|w| decimal("unit_weight_kg", w))
                            .transpose()
                            .map_err(at)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let order_id = match &r.order_id {
                Some(o) => id("order_id", o)?,
                None => derive("order"),
            };
            let command_id = command_id(&r.command_id)?;
            let mut c = wire::OrderCommand::empty(command_id.clone(), order_id, at);
            c.correlation_id = Some(command_id);
            c.place_order = Some(wire::PlaceOrder {
                customer_id,
                currency,
                lines,
                shipping_address: address(r.shipping_address)?,
                payment_method: r.payment_method,
                shipping_method: r.shipping_method,
                manual_confirmation: r.manual_confirmation,
            });
            Ok(SourceCommand::Order(c))
        }
        Kind::Customers => {
            let r: CustomerRecord = typed(record)?;
            let email = email(&r.email)?;
            let customer_id = match &r.customer_id {
                Some(c) => id("customer_id", c)?,
                None => customer_id_for_email(&email),
            };
            let phone = match r.phone {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(other) => return Err(format!("phone {other} is not a phone number")),
            };
            let mut c = wire::CustomerCommand::empty(command_id(&r.command_id)?, customer_id, at);
            c.register_customer = Some(wire::RegisterCustomer {
                name: non_empty("name", &r.name)?,
                email,
                phone,
                address: address(r.address)?,
            });
            Ok(SourceCommand::Customer(c))
        }
        Kind::Products => {
            let r: ProductRecord = typed(record)?;
            let stock = count("initial_stock", r.initial_stock, 0)?;
            let opt = |f: &str, v: Option<i64>| v.map(|v| count(f, v, 0)).transpose();
            let mut c = wire::InventoryCommand::empty(
                command_id(&r.command_id)?,
                non_empty("sku", &r.sku)?,
                at,
            );
            c.register_product = Some(wire::RegisterProduct {
                name: non_empty("name", &r.name)?,
                initial_stock: stock,
                low_stock_threshold: opt("low_stock_threshold", r.low_stock_threshold)?
                    .unwrap_or(stock / 5),
                unit_weight_kg: r
                    .unit_weight_kg
                    .as_ref()
                    .map(|w| decimal("unit_weight_kg", w))
                    .transpose()?,
                warehouse: r.warehouse,
                reorder_point: opt("reorder_point", r.reorder_point)?,
                reorder_quantity: opt("reorder_quantity", r.reorder_quantity)?,
            });
            Ok(SourceCommand::Inventory(c))
        }
        Kind::Restocks => {
            let r: RestockRecord = typed(record)?;
            let mut c = wire::InventoryCommand::empty(
                command_id(&r.command_id)?,
                non_empty("sku", &r.sku)?,
                at,
            );
            c.restock = Some(wire::Restock {
                quantity: count("quantity", r.quantity, 1)?,
                warehouse: r.warehouse,
            });
            Ok(SourceCommand::Inventory(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(kind: Kind, format: Format, lines: &[&str]) -> (Vec<SourceCommand>, Vec<LineError>) {
        let mut s = Source::new(kind, format, "test.file", 1);
        let text = lines.join("\n");
        let (ok, bad) = parse_all(&mut s, text.as_bytes());
        (ok.into_iter().map(|(_, c)| c).collect(), bad)
    }

    const ORDER: &str = r#"{"customer_email":"a@example.com","currency":"USD","lines":[{"sku":"SKU-1","quantity":2,"unit_price":"9.50"}],"shipping_address":{"street":"1 Main","city":"X","postal_code":"12345","country":"US"}}"#;

    #[test]
    fn given_an_ndjson_order_when_parsed_then_ids_are_derived_and_stable() {
        let (a, bad) = one(Kind::Orders, Format::Ndjson, &[ORDER]);
        assert!(bad.is_empty(), "{bad:?}");
        let (b, _) = one(Kind::Orders, Format::Ndjson, &[ORDER]);
        assert_eq!(a, b, "the same file gives the same commands");
        let SourceCommand::Order(o) = &a[0] else {
            panic!("{a:?}")
        };
        let place = o.place_order.as_ref().unwrap();
        assert_eq!(place.customer_id, customer_id_for_email("A@example.com "));
        assert_eq!(place.lines[0].unit_price, "9.5");
        assert!(Uuid::parse_str(&o.order_id).is_ok());
    }

    #[test]
    fn identical_lines_are_distinct_commands_and_other_files_other_ids() {
        let (a, _) = one(Kind::Orders, Format::Ndjson, &[ORDER, ORDER]);
        assert_ne!(a[0].command_id(), a[1].command_id());
        let mut other = Source::new(Kind::Orders, Format::Ndjson, "other.file", 1);
        let c = other.line(1, ORDER).unwrap().unwrap();
        assert_ne!(c.command_id(), a[0].command_id());
    }

    #[test]
    fn bad_lines_are_reported_with_their_numbers_and_good_ones_kept() {
        let lines = [
            ORDER,
            "{not json",
            "",
            r#"{"customer_email":"a@example.com","currency":"USD","lines":[{"sku":"S","quantity":-1,"unit_price":"1"}],"shipping_address":{"street":"1","city":"X","postal_code":"1","country":"US"}}"#,
            r#"{"customer_email":"a@example.com","currency":"usd","lines":[{"sku":"S","quantity":1,"unit_price":"1"}],"shipping_address":{"street":"1","city":"X","postal_code":"1","country":"US"}}"#,
            r#"{"customer_email":"a@example.com","currency":"USD","lines":[{"sku":"S","quantity":1,"unit_price":"1.001"}],"shipping_address":{"street":"1","city":"X","postal_code":"1","country":"US"}}"#,
            r#"{"customer_id":"nope","currency":"USD","lines":[],"shipping_address":{"street":"1","city":"X","postal_code":"1","country":"US"}}"#,
            r#"{"customer_email":"a@example.com","currency":"USD","colour":"red","lines":[{"sku":"S","quantity":1,"unit_price":"1"}],"shipping_address":{"street":"1","city":"X","postal_code":"1","country":"US"}}"#,
            "[1,2]",
            ORDER,
        ];
        let (ok, bad) = one(Kind::Orders, Format::Ndjson, &lines);
        assert_eq!(ok.len(), 2);
        let at: Vec<usize> = bad.iter().map(|e| e.line).collect();
        assert_eq!(at, vec![2, 4, 5, 6, 7, 8, 9], "{bad:#?}");
        let text = |n: usize| bad.iter().find(|e| e.line == n).unwrap().message.clone();
        assert!(text(2).contains("not JSON"), "{}", text(2));
        assert!(
            text(4).contains("quantity must be at least 1"),
            "{}",
            text(4)
        );
        assert!(text(5).contains("ISO 4217"), "{}", text(5));
        assert!(text(6).contains("2 decimal places"), "{}", text(6));
        assert!(text(7).contains("not a UUID"), "{}", text(7));
        assert!(text(8).contains("unknown field `colour`"), "{}", text(8));
        assert!(text(9).contains("one JSON object"), "{}", text(9));
    }

    #[test]
    fn csv_rows_become_the_same_commands_as_ndjson_records() {
        let csv = [
            "customer_email,currency,lines,street,city,postal_code,country",
            r#"a@example.com,USD,SKU-1:2:9.50,1 Main,X,12345,US"#,
        ];
        let (from_csv, bad) = one(Kind::Orders, Format::Csv, &csv);
        assert!(bad.is_empty(), "{bad:?}");
        let (from_json, _) = one(Kind::Orders, Format::Ndjson, &[ORDER]);
        assert_eq!(from_csv, from_json);
    }

    #[test]
    fn csv_errors_name_the_line_and_the_field() {
        let csv = [
            "sku,quantity,warehouse",
            "SKU-1,10,MAIN",
            "SKU-2,zero,MAIN",
            "SKU-3,0,",
            "SKU-4,5",
            "\"SKU-5,5,MAIN",
            "SKU-6,5,",
        ];
        let (ok, bad) = one(Kind::Restocks, Format::Csv, &csv);
        assert_eq!(ok.len(), 2, "{bad:?}");
        let at: Vec<usize> = bad.iter().map(|e| e.line).collect();
        assert_eq!(at, vec![3, 4, 5, 6], "{bad:#?}");
        assert!(bad[0].message.contains("quantity"), "{}", bad[0]);
        assert!(bad[1].message.contains("at least 1"), "{}", bad[1]);
        assert!(
            bad[2].message.contains("2 fields where the header has 3"),
            "{}",
            bad[2]
        );
    }

    #[test]
    fn csv_text_columns_stay_text_even_when_they_look_like_numbers() {
        let (ok, bad) = one(
            Kind::Restocks,
            Format::Csv,
            &["\u{feff}sku,quantity,warehouse", "12345,7,007", "#1,2,main"],
        );
        assert!(bad.is_empty(), "{bad:?}");
        let SourceCommand::Inventory(c) = &ok[0] else {
            panic!()
        };
        assert_eq!(c.sku, "12345");
        assert_eq!(
            c.restock.as_ref().unwrap().warehouse.as_deref(),
            Some("007")
        );
        let SourceCommand::Inventory(c) = &ok[1] else {
            panic!()
        };
        assert_eq!(c.sku, "#1", "a CSV row is never a comment");
    }

    #[test]
    fn customers_and_products_parse_with_their_defaults() {
        let (c, bad) = one(
            Kind::Customers,
            Format::Csv,
            &[
                "name,email,phone,street,city,postal_code,country",
                "Ada,ada@example.com,+14155550000,1 Main,X,12345,US",
                "Bob,bob-at-example.com,,1 Main,X,12345,US",
            ],
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].message.contains("not an email"), "{}", bad[0]);
        let SourceCommand::Customer(c) = &c[0] else {
            panic!()
        };
        assert_eq!(c.customer_id, customer_id_for_email("ada@example.com"));
        let (p, bad) = one(
            Kind::Products,
            Format::Ndjson,
            &[r#"{"sku":"SKU-9","name":"Nine","initial_stock":50,"unit_weight_kg":1.5}"#],
        );
        assert!(bad.is_empty(), "{bad:?}");
        let SourceCommand::Inventory(p) = &p[0] else {
            panic!()
        };
        let r = p.register_product.as_ref().unwrap();
        assert_eq!((r.initial_stock, r.low_stock_threshold), (50, 10));
        assert_eq!(r.unit_weight_kg.as_deref(), Some("1.5"));
    }
}
