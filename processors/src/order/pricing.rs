//! The seed's pricing rules, as one pure function.
//!
//! - subtotal = Σ unit_price × quantity
//! - discount = subtotal × tier rate (Platinum 15 %, Gold 10 %, Silver 5 %, Bronze 0 %)
//! - tax = 10 % of (subtotal − discount)
//! - shipping = 10 base + 0.5 per kg of total weight above 50 kg + 15 when the postal
//!   code starts with "9"; amounts are in the order's currency
//! - total = subtotal − discount + tax + shipping
//!
//! Each component is rounded to cents (half away from zero) before summing, so the
//! parts always add up to the total exactly.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::command::OrderLineRequest;
use crate::shipping::{Method, shipping_cost};
use crate::values::{Address, Currency, Money, ValueError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CustomerTier {
    Platinum,
    Gold,
    Silver,
    Bronze,
}

impl CustomerTier {
    pub fn discount_rate(self) -> Decimal {
        match self {
            CustomerTier::Platinum => Decimal::new(15, 2),
            CustomerTier::Gold => Decimal::new(10, 2),
            CustomerTier::Silver => Decimal::new(5, 2),
            CustomerTier::Bronze => Decimal::ZERO,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Platinum, Self::Gold, Self::Silver, Self::Bronze]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
    }

    pub fn name(self) -> &'static str {
        match self {
            CustomerTier::Platinum => "PLATINUM",
            CustomerTier::Gold => "GOLD",
            CustomerTier::Silver => "SILVER",
            CustomerTier::Bronze => "BRONZE",
        }
    }
}

pub const TAX_RATE: Decimal = Decimal::from_parts(10, 0, 0, false, 2);
pub const DEFAULT_UNIT_WEIGHT_KG: Decimal = Decimal::from_parts(5, 0, 0, false, 0);
const BASE_SHIPPING: Decimal = Decimal::from_parts(10, 0, 0, false, 0);
const FREE_WEIGHT_KG: Decimal = Decimal::from_parts(50, 0, 0, false, 0);
const PER_KG_OVER: Decimal = Decimal::from_parts(5, 0, 0, false, 1);
const REMOTE_SURCHARGE: Decimal = Decimal::from_parts(15, 0, 0, false, 0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pricing {
    pub subtotal: Money,
    pub discount: Money,
    pub tax: Money,
    pub shipping: Money,
    pub total: Money,
    pub total_weight_kg: Decimal,
}

pub fn price(
    lines: &[OrderLineRequest],
    tier: CustomerTier,
    address: &Address,
    currency: Currency,
) -> Result<Pricing, ValueError> {
    let mut subtotal = Money::zero(currency);
    let mut weight = Decimal::ZERO;
    for line in lines {
        let qty = Decimal::from(line.quantity.get());
        subtotal = subtotal.checked_add(line.unit_price.times(qty)?)?;
        weight = line
            .unit_weight_kg
            .checked_mul(qty)
            .and_then(|w| weight.checked_add(w))
            .ok_or(ValueError::Overflow("order weight"))?;
    }
    let subtotal = subtotal.round_cents();
    let discount = subtotal.times(tier.discount_rate())?.round_cents();
    let taxable = subtotal.checked_sub(discount)?;
    let tax = taxable.times(TAX_RATE)?.round_cents();
    let mut shipping = BASE_SHIPPING;
    if weight > FREE_WEIGHT_KG {
        shipping += (weight - FREE_WEIGHT_KG) * PER_KG_OVER;
    }
    if address.is_remote() {
        shipping += REMOTE_SURCHARGE;
    }
    let shipping = Money::new(shipping, currency)?.round_cents();
    let total = taxable.checked_add(tax)?.checked_add(shipping)?;
    Ok(Pricing {
        subtotal,
        discount,
        tax,
        shipping,
        total,
        total_weight_kg: weight,
    })
}

/// [`price`] for a shipping method: express shipping costs 50 % more (the shipping
/// context's rule, so the order charges what the shipment costs).
pub fn price_for(
    lines: &[OrderLineRequest],
    tier: CustomerTier,
    address: &Address,
    currency: Currency,
    method: Method,
) -> Result<Pricing, ValueError> {
    let mut p = price(lines, tier, address, currency)?;
    if method == Method::Express {
        let shipping = shipping_cost(p.total_weight_kg, address, method, currency)?;
        p.total = p.total.checked_sub(p.shipping)?.checked_add(shipping)?;
        p.shipping = shipping;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{Quantity, Sku};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn line(price: Decimal, qty: i64, weight: Decimal) -> OrderLineRequest {
        OrderLineRequest {
            sku: Sku::parse("SKU-1").unwrap(),
            product_name: "thing".into(),
            quantity: Quantity::new(qty).unwrap(),
            unit_price: Money::new(price, Currency::USD).unwrap(),
            unit_weight_kg: weight,
        }
    }

    fn addr(pc: &str) -> Address {
        Address::new("1 Main St", "Town", pc, "US").unwrap()
    }

    #[test]
    fn bronze_order_light_and_local() {
        // 2 × 19.99 = 39.98; tax 4.00 (3.998 rounds up); shipping 10 (10 kg)
        let p = price(
            &[line(dec!(19.99), 2, dec!(5))],
            CustomerTier::Bronze,
            &addr("10001"),
            Currency::USD,
        )
        .unwrap();
        assert_eq!(p.subtotal.amount(), dec!(39.98));
        assert_eq!(p.discount.amount(), dec!(0));
        assert_eq!(p.tax.amount(), dec!(4.00));
        assert_eq!(p.shipping.amount(), dec!(10));
        assert_eq!(p.total.amount(), dec!(53.98));
    }

    #[test]
    fn gold_order_heavy_and_remote() {
        // 12 × 10.00 = 120.00; gold 10 % = 12.00; tax 10.80; weight 60 kg → 10 + 5 + 15
        let p = price(
            &[line(dec!(10.00), 12, dec!(5))],
            CustomerTier::Gold,
            &addr("94107"),
            Currency::USD,
        )
        .unwrap();
        assert_eq!(p.discount.amount(), dec!(12.00));
        assert_eq!(p.tax.amount(), dec!(10.80));
        assert_eq!(p.shipping.amount(), dec!(30.0));
        assert_eq!(p.total.amount(), dec!(148.80));
    }

    #[test]
    fn tier_rates_follow_the_seed() {
        assert_eq!(CustomerTier::Platinum.discount_rate(), dec!(0.15));
        assert_eq!(CustomerTier::Gold.discount_rate(), dec!(0.10));
        assert_eq!(CustomerTier::Silver.discount_rate(), dec!(0.05));
        assert_eq!(CustomerTier::Bronze.discount_rate(), dec!(0));
    }

    proptest! {
        #[test]
        fn parts_always_add_up_to_the_total(
            cents in 1u32..1_000_000, qty in 1i64..500, grams in 0u32..100_000,
            tier in prop_oneof![Just(CustomerTier::Platinum), Just(CustomerTier::Gold),
                                Just(CustomerTier::Silver), Just(CustomerTier::Bronze)],
            remote in any::<bool>())
        {
            let l = line(Decimal::new(cents.into(), 2), qty, Decimal::new(grams.into(), 3));
            let p = price(&[l], tier, &addr(if remote { "90001" } else { "10001" }), Currency::USD).unwrap();
            prop_assert_eq!(p.total.amount(),
                p.subtotal.amount() - p.discount.amount() + p.tax.amount() + p.shipping.amount());
            prop_assert!(p.total.amount() >= dec!(10));
            prop_assert!(p.discount.amount() <= p.subtotal.amount());
            prop_assert_eq!(p.total.amount().scale() <= 2, true);
        }
    }
}
