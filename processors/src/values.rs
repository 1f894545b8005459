//! Value objects shared by the bounded contexts. Constructors validate; a value that
//! exists is valid.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("unsupported currency {0:?} (supported: USD, EUR, CNY)")]
    UnsupportedCurrency(String),
    #[error("amount {0} is negative")]
    NegativeAmount(Decimal),
    #[error("amount {0:?} is not a decimal number")]
    NotADecimal(String),
    #[error("cannot combine {0} with {1}")]
    CurrencyMismatch(Currency, Currency),
    #[error("quantity must be greater than zero, got {0}")]
    NonPositiveQuantity(i64),
    #[error(
        "SKU {0:?} is invalid: 3-32 characters of A-Z, 0-9 and '-', starting with a letter or digit"
    )]
    InvalidSku(String),
    #[error("{field} {value:?} is not a UUID")]
    InvalidId { field: &'static str, value: String },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("postal code {0:?} is invalid: 3-10 characters of letters, digits, ' ' or '-'")]
    InvalidPostalCode(String),
    #[error(
        "email {0:?} is invalid: one '@', a non-empty local part, a dotted domain, at most 254 characters"
    )]
    InvalidEmail(String),
    #[error(
        "phone number {0:?} is invalid: E.164, '+' then 8-15 digits (spaces and dashes allowed)"
    )]
    InvalidPhone(String),
    #[error("{0}")]
    Invalid(String),
    #[error("amount {0} exceeds the largest supported amount (1000000000000)")]
    TooLarge(Decimal),
    #[error("arithmetic overflow: {0}")]
    Overflow(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    USD,
    EUR,
    CNY,
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::CNY => "CNY",
        })
    }
}

impl FromStr for Currency {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "USD" => Ok(Currency::USD),
            "EUR" => Ok(Currency::EUR),
            "CNY" => Ok(Currency::CNY),
            other => Err(ValueError::UnsupportedCurrency(other.to_string())),
        }
    }
}

/// A non-negative amount in one currency. Arithmetic refuses to mix currencies.
/// Rounding rule: to cents, half away from zero (0.005 → 0.01), applied to each priced
/// component (discount, tax, shipping) before they are summed.
/// The largest amount a Money value may hold: 10^12 in any currency.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    amount: Decimal,
    currency: Currency,
}

impl Money {
    pub fn new(amount: Decimal, currency: Currency) -> Result<Self, ValueError> {
        if amount.is_sign_negative() && !amount.is_zero() {
            return Err(ValueError::NegativeAmount(amount));
        }
        // A bound far above any real order keeps every sum and product of amounts and
        // quantities inside Decimal's range (no overflow panics on client input).
        if amount > MAX_AMOUNT {
            return Err(ValueError::TooLarge(amount));
        }
        Ok(Self { amount, currency })
    }

    pub fn parse(amount: &str, currency: Currency) -> Result<Self, ValueError> {
        let d = Decimal::from_str(amount.trim())
            .map_err(|_| ValueError::NotADecimal(amount.to_string()))?;
        Self::new(d, currency)
    }

    pub fn zero(currency: Currency) -> Self {
        Self {
            amount: Decimal::ZERO,
            currency,
        }
    }

    pub fn amount(&self) -> Decimal {
        self.amount
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, ValueError> {
        self.same_currency(other)?;
        let sum = self
            .amount
            .checked_add(other.amount)
            .ok_or(ValueError::Overflow("money addition"))?;
        Money::new(sum, self.currency)
    }

    /// Subtraction that never goes below zero is a caller's promise; a negative
    /// result is an error, not a silent clamp.
    pub fn checked_sub(self, other: Money) -> Result<Money, ValueError> {
        self.same_currency(other)?;
        let difference = self
            .amount
            .checked_sub(other.amount)
            .ok_or(ValueError::Overflow("money subtraction"))?;
        Money::new(difference, self.currency)
    }

    /// Multiplies by a non-negative factor (a quantity or a rate).
    pub fn times(self, factor: Decimal) -> Result<Money, ValueError> {
        let product = self
            .amount
            .checked_mul(factor)
            .ok_or(ValueError::Overflow("money multiplication"))?;
        Money::new(product, self.currency)
    }

    /// Rounded to cents and always shown with two decimals ("10.00").
    pub fn round_cents(self) -> Money {
        let mut amount = self
            .amount
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
        amount.rescale(2);
        Money {
            amount,
            currency: self.currency,
        }
    }

    fn same_currency(&self, other: Money) -> Result<(), ValueError> {
        if self.currency != other.currency {
            return Err(ValueError::CurrencyMismatch(self.currency, other.currency));
        }
        Ok(())
    }

    /// The decimal string used on the wire, always with two decimals ("12.50").
    pub fn to_wire(&self) -> String {
        format!("{:.2}", self.round_cents().amount)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_wire(), self.currency)
    }
}

/// A count of units, always > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Quantity(u32);

impl Quantity {
    pub fn new(n: i64) -> Result<Self, ValueError> {
        if n <= 0 || n > i64::from(i32::MAX) {
            return Err(ValueError::NonPositiveQuantity(n));
        }
        Ok(Self(n as u32))
    }
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Stock keeping unit: 3–32 characters of `A-Z`, `0-9` and `-`, not starting with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Sku(String);

impl Sku {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let ok = (3..=32).contains(&s.len())
            && !s.starts_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(ValueError::InvalidSku(s.to_string()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! uuid_id {
    ($name:ident, $field:literal) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn parse(s: &str) -> Result<Self, ValueError> {
                uuid::Uuid::parse_str(s)
                    .map(Self)
                    .map_err(|_| ValueError::InvalidId {
                        field: $field,
                        value: s.to_string(),
                    })
            }
            pub fn uuid(&self) -> uuid::Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(OrderId, "order_id");
uuid_id!(CustomerId, "customer_id");
uuid_id!(CommandId, "command_id");

/// An email address: one `@`, a non-empty local part without spaces, a domain with at
/// least one dot and no empty labels; at most 254 characters; stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let s = s.trim();
        let bad = || ValueError::InvalidEmail(s.to_string());
        if s.len() > 254 || s.chars().any(char::is_whitespace) {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let labels: Vec<&str> = domain.split('.').collect();
        if local.is_empty()
            || domain.contains('@')
            || labels.len() < 2
            || labels.iter().any(|l| l.is_empty())
        {
            return Err(bad());
        }
        Ok(Self(s.to_ascii_lowercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164: `+` and 8–15 digits; spaces and dashes are accepted on
/// input and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let compact: String = s
            .trim()
            .chars()
            .filter(|c| *c != ' ' && *c != '-')
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ValueError::InvalidPhone(s.to_string()));
        }
        Ok(Self(compact))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A delivery address. The postal code drives the remote-area shipping surcharge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub street: String,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

impl Address {
    pub fn new(
        street: &str,
        city: &str,
        postal_code: &str,
        country: &str,
    ) -> Result<Self, ValueError> {
        for (field, v) in [("street", street), ("city", city), ("country", country)] {
            if v.trim().is_empty() {
                return Err(ValueError::Empty(field));
            }
        }
        let pc = postal_code.trim();
        let pc_ok = (3..=10).contains(&pc.len())
            && pc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
        if !pc_ok {
            return Err(ValueError::InvalidPostalCode(postal_code.to_string()));
        }
        Ok(Self {
            street: street.trim().to_string(),
            city: city.trim().to_string(),
            postal_code: pc.to_string(),
            country: country.trim().to_string(),
        })
    }

    /// Remote areas (postal code starting with "9") pay a shipping surcharge.
    pub fn is_remote(&self) -> bool {
        self.postal_code.starts_with('9')
    }
}

/// Deterministic ids for events and commands a processor derives from an input: the same
/// input always yields the same ids, so a replay produces identical output.
pub fn derived_id(cause: &str, what: &str, index: usize) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{cause}/{what}/{index}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_amounts_are_refused_not_overflowed() {
        assert!(matches!(
            Money::parse("79228162514264337593543950335", Currency::USD),
            Err(ValueError::TooLarge(_))
        ));
        let max = Money::new(MAX_AMOUNT, Currency::USD).unwrap();
        assert!(matches!(max.checked_add(max), Err(ValueError::TooLarge(_))));
        assert!(matches!(
            max.times(Decimal::from(u32::MAX)),
            Err(ValueError::TooLarge(_))
        ));
        assert_eq!(MAX_AMOUNT, Decimal::from(1_000_000_000_000_i64));
    }
    use rust_decimal_macros::dec;

    #[test]
    fn money_refuses_negatives_and_mixed_currencies() {
        assert!(Money::new(dec!(-0.01), Currency::USD).is_err());
        let usd = Money::new(dec!(1), Currency::USD).unwrap();
        let eur = Money::new(dec!(1), Currency::EUR).unwrap();
        assert_eq!(
            usd.checked_add(eur),
            Err(ValueError::CurrencyMismatch(Currency::USD, Currency::EUR))
        );
        assert!(
            usd.checked_sub(Money::new(dec!(2), Currency::USD).unwrap())
                .is_err()
        );
        assert_eq!(
            "GBP".parse::<Currency>(),
            Err(ValueError::UnsupportedCurrency("GBP".into()))
        );
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_cents() {
        let m = Money::new(dec!(0.005), Currency::USD)
            .unwrap()
            .round_cents();
        assert_eq!(m.amount(), dec!(0.01));
        let m = Money::new(dec!(2.344), Currency::USD)
            .unwrap()
            .round_cents();
        assert_eq!(m.to_wire(), "2.34");
    }

    #[test]
    fn quantity_and_sku_validate() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-3).is_err());
        assert_eq!(Quantity::new(3).unwrap().get(), 3);
        assert!(Sku::parse("SKU-001").is_ok());
        assert!(Sku::parse("sku-001").is_err());
        assert!(Sku::parse("-AB").is_err());
        assert!(Sku::parse("AB").is_err());
    }

    #[test]
    fn address_validates_postal_code_and_knows_remote_areas() {
        assert!(
            Address::new("1 Main St", "Springfield", "90210", "US")
                .unwrap()
                .is_remote()
        );
        assert!(
            !Address::new("1 Main St", "Springfield", "10001", "US")
                .unwrap()
                .is_remote()
        );
        assert!(Address::new("1 Main St", "Springfield", "!!", "US").is_err());
        assert!(Address::new("", "Springfield", "10001", "US").is_err());
    }

    #[test]
    fn email_and_phone_validate() {
        assert_eq!(
            Email::parse(" Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "@example.com",
            "ann@",
            "ann@example",
            "ann@@example.com",
            "a nn@x.io",
            "ann@x..io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PhoneNumber::parse("+86 138-0013-8000").unwrap().as_str(),
            "+8613800138000"
        );
        for bad in [
            "13800138000",
            "+123",
            "+1234567890123456",
            "+1 800 CALL NOW",
        ] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derived_ids_are_deterministic() {
        assert_eq!(derived_id("c1", "evt", 0), derived_id("c1", "evt", 0));
        assert_ne!(derived_id("c1", "evt", 0), derived_id("c1", "evt", 1));
    }
}
