//! The order, and the valid forms of what callers send. Parse, don't validate: a handler
//! turns a request into these types once (collecting every bad field), and the store takes
//! and returns them; nothing past that point handles a raw, unchecked string.

use meshwork::{
    error::{AllChecked, ApiError, Checked, FieldViolations},
    proto::order::v1 as pb,
    time::timestamp,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const MAX_ID_BYTES: usize = 128;
const MAX_SKU_CHARS: usize = 64;
const MAX_ITEMS: usize = 100;

/// A checked string. Its only constructors are the `parse` below (a caller's value, at the
/// edge) and the store's reading back of what it wrote. Serde is transparent: it carries
/// stored orders (the `items` column, notices between replicas), never requests.
macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

text_type!(
    /// An order id, chosen by the server ([`OrderId::generate`]).
    OrderId
);
text_type!(
    /// The user an order is for.
    UserId
);
text_type!(
    /// CreateOrder's idempotency key: one order per key.
    RequestId
);
text_type!(
    /// A stock-keeping unit: 1 to 64 characters, not only spaces.
    Sku
);

/// An id as a caller names it: any non-empty string up to 128 bytes (ids are opaque; an
/// unknown one is NOT_FOUND, not INVALID_ARGUMENT).
fn opaque_id(id: String) -> Result<String, String> {
    match id.len() {
        0 => Err("must not be empty".into()),
        n if n > MAX_ID_BYTES => Err(format!("must be at most {MAX_ID_BYTES} bytes")),
        _ => Ok(id),
    }
}

impl OrderId {
    /// A new id: a UUIDv7, unique without coordination and ordered by creation time, which
    /// is what pagination by id needs.
    pub fn generate() -> Self {
        Self(Uuid::now_v7().to_string())
    }

    pub fn parse(id: String) -> Result<Self, String> {
        opaque_id(id).map(Self)
    }
}

impl UserId {
    pub fn parse(id: String) -> Result<Self, String> {
        opaque_id(id).map(Self)
    }

    /// The `user_id` filter of ListOrders and WatchOrders: empty means every user.
    pub fn parse_filter(id: String) -> Result<Option<Self>, String> {
        match id.is_empty() {
            true => Ok(None),
            false => Self::parse(id).map(Some),
        }
    }
}

impl RequestId {
    /// Empty means no key; a key is at most 128 bytes.
    pub fn parse(id: String) -> Result<Option<Self>, String> {
        match id.len() {
            0 => Ok(None),
            n if n > MAX_ID_BYTES => Err(format!("must be at most {MAX_ID_BYTES} bytes")),
            _ => Ok(Some(Self(id))),
        }
    }
}

impl Sku {
    pub fn parse(sku: String) -> Result<Self, String> {
        if sku.trim().is_empty() {
            Err("must not be empty".into())
        } else if sku.chars().count() > MAX_SKU_CHARS {
            Err(format!("must be at most {MAX_SKU_CHARS} characters"))
        } else {
            Ok(Self(sku))
        }
    }
}

/// How many of an item: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(i32);

impl Quantity {
    pub fn parse(quantity: i32) -> Result<Self, String> {
        match quantity {
            1.. => Ok(Self(quantity)),
            _ => Err("must be at least 1".into()),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Money, in integer cents: never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cents(i64);

impl Cents {
    pub fn parse(cents: i64) -> Result<Self, String> {
        match cents {
            0.. => Ok(Self(cents)),
            _ => Err("must not be negative".into()),
        }
    }

    /// Σ quantity × unit price, refusing a total that does not fit in 64 bits.
    pub fn total(items: &[Item]) -> Result<Self, String> {
        items
            .iter()
            .try_fold(0i64, |total, item| {
                i64::from(item.quantity.0)
                    .checked_mul(item.unit_price_cents.0)
                    .and_then(|line| total.checked_add(line))
            })
            .map(Self)
            .ok_or_else(|| "total price overflows 64-bit cents".into())
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

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

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_cents: Cents,
}

impl Item {
    /// Line `i` of a request; each bad field is recorded by its path (`items[0].quantity`).
    fn parse(i: usize, item: pb::OrderItem, violations: &mut FieldViolations) -> Checked<Self> {
        let sku = violations.check(format!("items[{i}].sku"), Sku::parse(item.sku));
        let quantity = violations.check(format!("items[{i}].quantity"), Quantity::parse(item.quantity));
        let unit_price_cents = violations.check(
            format!("items[{i}].unit_price_cents"),
            Cents::parse(item.unit_price_cents),
        );
        let (sku, quantity, unit_price_cents) = (sku, quantity, unit_price_cents).all()?;
        Ok(Self {
            sku,
            quantity,
            unit_price_cents,
        })
    }
}

/// A stored order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub items: Vec<Item>,
    pub total_cents: Cents,
    pub status: OrderStatus,
    /// Microseconds since the Unix epoch.
    pub create_time: i64,
    pub update_time: i64,
}

/// An order as the store reads it back: the columns of its row. Its fields were parsed
/// before they were written, so they are not parsed again (a rule made stricter later must
/// not make stored orders unreadable).
pub struct StoredOrder {
    pub id: String,
    pub user_id: String,
    pub items: Vec<Item>,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub create_time: i64,
    pub update_time: i64,
}

impl From<StoredOrder> for Order {
    fn from(row: StoredOrder) -> Self {
        Self {
            id: OrderId(row.id),
            user_id: UserId(row.user_id),
            items: row.items,
            total_cents: Cents(row.total_cents),
            status: row.status,
            create_time: row.create_time,
            update_time: row.update_time,
        }
    }
}

impl From<Order> for pb::Order {
    fn from(order: Order) -> Self {
        Self {
            id: order.id.0,
            user_id: order.user_id.0,
            items: order
                .items
                .into_iter()
                .map(|item| pb::OrderItem {
                    sku: item.sku.0,
                    quantity: item.quantity.0,
                    unit_price_cents: item.unit_price_cents.0,
                })
                .collect(),
            total_cents: order.total_cents.0,
            status: pb::OrderStatus::from(order.status).into(),
            create_time: Some(timestamp(order.create_time)),
            update_time: Some(timestamp(order.update_time)),
        }
    }
}

/// A valid CreateOrder request, with its total computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub user_id: UserId,
    pub items: Vec<Item>,
    pub total_cents: Cents,
    /// The idempotency key, when the caller sent one.
    pub request_id: Option<RequestId>,
}

impl NewOrder {
    /// The order this request places at `now` (pending, with a new id), and its
    /// idempotency key.
    pub fn place(self, now: i64) -> (Order, Option<RequestId>) {
        let order = Order {
            id: OrderId::generate(),
            user_id: self.user_id,
            items: self.items,
            total_cents: self.total_cents,
            status: OrderStatus::Pending,
            create_time: now,
            update_time: now,
        };
        (order, self.request_id)
    }
}

impl TryFrom<pb::CreateOrderRequest> for NewOrder {
    type Error = ApiError;

    fn try_from(request: pb::CreateOrderRequest) -> Result<Self, ApiError> {
        let mut violations = FieldViolations::new();
        let user_id = violations.check("user_id", UserId::parse(request.user_id));
        let request_id = violations.check("request_id", RequestId::parse(request.request_id));
        match request.items.len() {
            0 => violations.add("items", "must have at least one item"),
            n if n > MAX_ITEMS => violations.add("items", format!("must have at most {MAX_ITEMS} items")),
            _ => {}
        }
        // Every line is parsed (and its violations recorded) before they are combined.
        let items: Vec<_> = request
            .items
            .into_iter()
            .enumerate()
            .map(|(i, item)| Item::parse(i, item, &mut violations))
            .collect();
        let items = items.all();
        let total_cents = violations.check_with("items", &items, |items| Cents::total(items));
        let (user_id, request_id, items, total_cents) =
            violations.finish((user_id, request_id, items, total_cents))?;
        Ok(Self {
            user_id,
            items,
            total_cents,
            request_id,
        })
    }
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

    fn order(user_id: &str, items: Vec<pb::OrderItem>) -> Result<NewOrder, ApiError> {
        NewOrder::try_from(pb::CreateOrderRequest {
            user_id: user_id.into(),
            items,
            request_id: String::new(),
        })
    }

    fn bad_fields(result: Result<NewOrder, ApiError>) -> Vec<String> {
        match result {
            Err(ApiError::InvalidArgument(v)) => v.fields().map(str::to_owned).collect(),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn total_is_the_sum_of_lines() {
        let order = order("u1", vec![item("a", 2, 250), item("b", 1, 99)]).unwrap();
        assert_eq!(order.total_cents, Cents(599));
        assert_eq!(order.user_id.as_str(), "u1");
        assert_eq!(order.items[0].quantity.get(), 2);
        assert_eq!(order.request_id, None);
    }

    #[test]
    fn overflowing_total_is_refused() {
        assert_eq!(
            bad_fields(order("u1", vec![item("a", 2, i64::MAX / 2 + 1)])),
            ["items"]
        );
        let lines = vec![item("a", 1, i64::MAX); 2];
        assert_eq!(bad_fields(order("", lines)), ["user_id", "items"]);
    }

    #[test]
    fn every_bad_item_field_is_named_by_its_path() {
        assert_eq!(
            bad_fields(order("", vec![item("ok", 1, 1), item("", 0, -5)])),
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
        assert_eq!(bad_fields(order("u1", vec![])), ["items"]);
    }

    #[test]
    fn ids_are_opaque_and_request_ids_optional() {
        assert!(OrderId::parse("any thing at all".into()).is_ok());
        assert!(OrderId::parse(String::new()).is_err());
        assert!(UserId::parse("x".repeat(129)).is_err());
        assert_eq!(UserId::parse_filter(String::new()), Ok(None));
        assert_eq!(RequestId::parse(String::new()), Ok(None));
        assert!(RequestId::parse("r".repeat(129)).is_err());
        let keyed = NewOrder::try_from(pb::CreateOrderRequest {
            user_id: "u1".into(),
            items: vec![item("a", 1, 1)],
            request_id: "r-1".into(),
        });
        assert_eq!(keyed.unwrap().request_id.unwrap().as_str(), "r-1");
    }
}
