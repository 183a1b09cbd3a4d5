//! The order, and the valid forms of what callers send (parse, don't validate).

use meshwork::{
    error::{ApiError, FieldViolations},
    proto::order::v1 as pb,
    time::timestamp,
};
use serde::{Deserialize, Serialize};

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    Pending,
    Cancelled,
}

impl OrderStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Cancelled => "CANCELLED",
        }
    }

    pub fn from_stored(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(Self::Pending),
            "CANCELLED" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

impl From<OrderStatus> for pb::OrderStatus {
    fn from(status: OrderStatus) -> Self {
        match status {
            OrderStatus::Pending => Self::Pending,
            OrderStatus::Cancelled => Self::Cancelled,
        }
    }
}

/// One line of an order: a valid one (sku 1..=64 chars, quantity ≥ 1, price ≥ 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub status: OrderStatus,
    /// Microseconds since the Unix epoch.
    pub create_time: i64,
    pub update_time: i64,
}

impl From<Order> for pb::Order {
    fn from(order: Order) -> Self {
        Self {
            id: order.id,
            user_id: order.user_id,
            items: order
                .items
                .into_iter()
                .map(|item| pb::OrderItem {
                    sku: item.sku,
                    quantity: item.quantity,
                    unit_price_cents: item.unit_price_cents,
                })
                .collect(),
            total_cents: order.total_cents,
            status: pb::OrderStatus::from(order.status).into(),
            create_time: Some(timestamp(order.create_time)),
            update_time: Some(timestamp(order.update_time)),
        }
    }
}

const MAX_ID_BYTES: usize = 128;
const MAX_SKU_CHARS: usize = 64;
const MAX_ITEMS: usize = 100;

/// An id as a caller names it: any non-empty string up to 128 bytes (ids are opaque; an
/// unknown one is NOT_FOUND, not INVALID_ARGUMENT).
pub fn parse_id(id: &str) -> Result<(), String> {
    match id.len() {
        0 => Err("must not be empty".into()),
        n if n > MAX_ID_BYTES => Err(format!("must be at most {MAX_ID_BYTES} bytes")),
        _ => Ok(()),
    }
}

/// A valid CreateOrder request, with its total computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    /// The idempotency key, when the caller sent one.
    pub request_id: Option<String>,
}

impl TryFrom<pb::CreateOrderRequest> for NewOrder {
    type Error = ApiError;

    fn try_from(request: pb::CreateOrderRequest) -> Result<Self, ApiError> {
        let mut violations = FieldViolations::new();
        violations.check("user_id", parse_id(&request.user_id));
        if request.request_id.len() > MAX_ID_BYTES {
            violations.add("request_id", format!("must be at most {MAX_ID_BYTES} bytes"));
        }
        match request.items.len() {
            0 => violations.add("items", "must have at least one item"),
            n if n > MAX_ITEMS => violations.add("items", format!("must have at most {MAX_ITEMS} items")),
            _ => {}
        }
        let items: Vec<Item> = request
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| parse_item(i, item, &mut violations))
            .collect();
        let total_cents = violations.check("items", total_of(&items));
        violations.into_result(|| Self {
            user_id: request.user_id,
            items,
            total_cents: total_cents.expect("no violation means the total was computed"),
            request_id: Some(request.request_id).filter(|id| !id.is_empty()),
        })
    }
}

fn parse_item(i: usize, item: pb::OrderItem, violations: &mut FieldViolations) -> Item {
    let sku_chars = item.sku.chars().count();
    if item.sku.trim().is_empty() {
        violations.add(format!("items[{i}].sku"), "must not be empty");
    } else if sku_chars > MAX_SKU_CHARS {
        violations.add(
            format!("items[{i}].sku"),
            format!("must be at most {MAX_SKU_CHARS} characters"),
        );
    }
    if item.quantity <= 0 {
        violations.add(format!("items[{i}].quantity"), "must be at least 1");
    }
    if item.unit_price_cents < 0 {
        violations.add(format!("items[{i}].unit_price_cents"), "must not be negative");
    }
    Item {
        sku: item.sku,
        quantity: item.quantity,
        unit_price_cents: item.unit_price_cents,
    }
}

/// Σ quantity × unit price, refusing a total that does not fit in 64 bits.
pub fn total_of(items: &[Item]) -> Result<i64, String> {
    items
        .iter()
        .try_fold(0i64, |total, item| {
            i64::from(item.quantity)
                .checked_mul(item.unit_price_cents)
                .and_then(|line| total.checked_add(line))
        })
        .ok_or_else(|| "total price overflows 64-bit cents".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: i32, unit_price_cents: i64) -> pb::OrderItem {
        pb::OrderItem {
            sku: sku.into(),
            quantity,
            unit_price_cents,
        }
    }

    fn bad_fields(request: pb::CreateOrderRequest) -> Vec<String> {
        match NewOrder::try_from(request) {
            Err(ApiError::InvalidArgument(v)) => v.fields().map(str::to_owned).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn total_is_the_sum_of_lines() {
        let order = NewOrder::try_from(pb::CreateOrderRequest {
            user_id: "u1".into(),
            items: vec![item("a", 2, 250), item("b", 1, 99)],
            request_id: String::new(),
        })
        .unwrap();
        assert_eq!(order.total_cents, 599);
        assert_eq!(order.request_id, None);
    }

    #[test]
    fn overflowing_total_is_refused() {
        let lines = [Item {
            sku: "a".into(),
            quantity: 2,
            unit_price_cents: i64::MAX / 2 + 1,
        }];
        assert!(total_of(&lines).is_err());
        let lines = vec![
            Item {
                sku: "a".into(),
                quantity: 1,
                unit_price_cents: i64::MAX
            };
            2
        ];
        assert!(total_of(&lines).is_err());
    }

    #[test]
    fn every_bad_item_field_is_named_by_its_path() {
        let request = pb::CreateOrderRequest {
            user_id: String::new(),
            items: vec![item("ok", 1, 1), item("", 0, -5)],
            request_id: String::new(),
        };
        assert_eq!(
            bad_fields(request),
            [
                "user_id",
                "items[1].sku",
                "items[1].quantity",
                "items[1].unit_price_cents"
            ]
        );
    }

    #[test]
    fn an_order_needs_items() {
        let request = pb::CreateOrderRequest {
            user_id: "u1".into(),
            items: vec![],
            request_id: String::new(),
        };
        assert_eq!(bad_fields(request), ["items"]);
    }
}
