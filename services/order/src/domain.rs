//! The order, and the valid forms of what callers send. Parse, don't validate: a handler
//! turns a request into these types once (collecting every bad field), and the store takes
//! and returns them; nothing past that point handles a raw, unchecked string.

use meshwork::{
    error::{AllChecked, ApiError, Checked, FieldViolations},
    time::timestamp,
};
use meshwork_proto::order::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
    /// CreateOrder's idempotency key: one order per user and key.
    RequestId
);
text_type!(
    /// What a CreateOrder asked for, in short ([`Fingerprint::of`]): stored beside its
    /// `request_id`, so that a key reused for a different order is told apart from a retry.
    Fingerprint
);
text_type!(
    /// A stock-keeping unit: 1 to 64 characters, not only spaces.
    Sku
);

/// An id as a caller names it: any non-empty string up to 128 bytes without control
/// characters (ids are opaque; an unknown one is NOT_FOUND, not INVALID_ARGUMENT). The
/// length is checked first, so a huge id costs nothing more than its decoding.
fn opaque_id(id: String) -> Result<String, String> {
    match id.len() {
        0 => Err("must not be empty".into()),
        n if n > MAX_ID_BYTES => Err(format!("must be at most {MAX_ID_BYTES} bytes")),
        _ => no_control_characters(id),
    }
}

/// `text` unless it holds a NUL or another control character (Unicode `Cc`: C0, DEL, C1).
/// PostgreSQL refuses NUL in `TEXT` and SQLite keeps it, so without this the answer
/// would depend on the backend; such characters are never meant in an id or a sku.
fn no_control_characters(text: String) -> Result<String, String> {
    match text.chars().any(char::is_control) {
        true => Err("must not contain control characters".into()),
        false => Ok(text),
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
    /// Empty means no key; a key is at most 128 bytes, without control characters.
    pub fn parse(id: String) -> Result<Option<Self>, String> {
        match id.len() {
            0 => Ok(None),
            _ => opaque_id(id).map(|id| Some(Self(id))),
        }
    }
}

impl Sku {
    pub fn parse(sku: String) -> Result<Self, String> {
        // A character is at most 4 bytes: a longer string is refused before it is walked.
        let too_long = || Err(format!("must be at most {MAX_SKU_CHARS} characters"));
        if sku.len() > 4 * MAX_SKU_CHARS || sku.chars().count() > MAX_SKU_CHARS {
            too_long()
        } else if sku.trim().is_empty() {
            Err("must not be empty".into())
        } else {
            no_control_characters(sku).map(Self)
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

impl Fingerprint {
    /// SHA-256, in lower-case hex, of the user id and the items in their order. Every
    /// string is length-prefixed and every number fixed-width, so two different requests
    /// never encode alike; the leading version lets the encoding change later.
    pub fn of(user_id: &UserId, items: &[Item]) -> Self {
        let mut hash = Sha256::new();
        let mut text = |text: &str| {
            hash.update((text.len() as u64).to_le_bytes());
            hash.update(text.as_bytes());
        };
        text("order.v1.CreateOrder/1");
        text(user_id.as_str());
        for item in items {
            text(item.sku.as_str());
        }
        hash.update((items.len() as u64).to_le_bytes());
        for item in items {
            hash.update(item.quantity.0.to_le_bytes());
            hash.update(item.unit_price_cents.0.to_le_bytes());
        }
        let digest = hash.finalize();
        Self(digest.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// Whether a request with this fingerprint repeats the one stored with `stored`. An
    /// order stored before fingerprints were has none (`''`, read from NULL): unknown, so
    /// accepted.
    pub fn repeats(&self, stored: &Fingerprint) -> bool {
        stored.0.is_empty() || stored.0 == self.0
    }

    /// What the store reads back.
    pub fn from_stored(text: String) -> Self {
        Self(text)
    }
}

/// CreateOrder's idempotency key, with the fingerprint of what it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub request_id: RequestId,
    pub fingerprint: Fingerprint,
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
    /// The idempotency key of this request, when it has one.
    pub fn idempotency(&self) -> Option<Idempotency> {
        self.request_id.clone().map(|request_id| Idempotency {
            request_id,
            fingerprint: Fingerprint::of(&self.user_id, &self.items),
        })
    }

    /// The order this request places at `now` (pending, with a new id), and its
    /// idempotency key.
    pub fn place(self, now: i64) -> (Order, Option<Idempotency>) {
        let key = self.idempotency();
        let order = Order {
            id: OrderId::generate(),
            user_id: self.user_id,
            items: self.items,
            total_cents: self.total_cents,
            status: OrderStatus::Pending,
            create_time: now,
            update_time: now,
        };
        (order, key)
    }
}

impl TryFrom<pb::CreateOrderRequest> for NewOrder {
    type Error = ApiError;

    fn try_from(request: pb::CreateOrderRequest) -> Result<Self, ApiError> {
        let mut violations = FieldViolations::new();
        let user_id = violations.check("user_id", UserId::parse(request.user_id));
        let request_id = violations.check("request_id", RequestId::parse(request.request_id));
        // The count is decided before any item is looked at: too many items cost nothing
        // beyond their decoding.
        let items = match request.items.len() {
            0 => violations.check("items", Err("must have at least one item".into())),
            n if n > MAX_ITEMS => {
                violations.check("items", Err(format!("must have at most {MAX_ITEMS} items")))
            }
            // Every line is parsed (and its violations recorded) before they are combined.
            _ => {
                let items: Vec<_> = request
                    .items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| Item::parse(i, item, &mut violations))
                    .collect();
                items.all()
            }
        };
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

    #[test]
    fn control_characters_are_refused_in_every_id_sku_and_request_id() {
        for bad in ["a\0b", "\0", "tab\there", "new\nline", "del\u{7f}", "c1\u{85}"] {
            assert!(OrderId::parse(bad.into()).is_err(), "{bad:?}");
            assert!(UserId::parse(bad.into()).is_err(), "{bad:?}");
            assert!(UserId::parse_filter(bad.into()).is_err(), "{bad:?}");
            assert!(RequestId::parse(bad.into()).is_err(), "{bad:?}");
            assert!(Sku::parse(bad.into()).is_err(), "{bad:?}");
        }
        assert!(Sku::parse("ünïcödé ok".into()).is_ok());
        let request = pb::CreateOrderRequest {
            user_id: "u\0".into(),
            items: vec![item("ok", 1, 1), item("a\0", 1, 1)],
            request_id: "r\0".into(),
        };
        assert_eq!(
            bad_fields(NewOrder::try_from(request)),
            ["user_id", "request_id", "items[1].sku"]
        );
    }

    #[test]
    fn sizes_are_limited() {
        assert!(Sku::parse("s".repeat(64)).is_ok());
        assert!(Sku::parse("é".repeat(64)).is_ok(), "characters, not bytes");
        assert!(Sku::parse("s".repeat(65)).is_err());
        assert!(Sku::parse("s".repeat(10_000_000)).is_err());
        assert!(OrderId::parse("i".repeat(128)).is_ok());
        assert!(OrderId::parse("i".repeat(129)).is_err());
        assert!(RequestId::parse("é".repeat(65)).is_err(), "bytes, not characters");
        assert_eq!(bad_fields(order("u1", vec![item("a", 1, 1); 101])), ["items"]);
        assert!(order("u1", vec![item("a", 1, 1); 100]).is_ok());
    }

    #[test]
    fn too_many_items_are_refused_before_any_item_is_looked_at() {
        // A million bad items: one violation, for the count, none per item.
        let items = vec![item("", 0, -1); 1_000_000];
        let started = std::time::Instant::now();
        assert_eq!(bad_fields(order("u1", items)), ["items"]);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn a_fingerprint_is_of_the_user_and_the_items_in_order() {
        let of = |user: &str, items: Vec<pb::OrderItem>| {
            order(user, items)
                .map(|o| Fingerprint::of(&o.user_id, &o.items))
                .unwrap()
        };
        let first = of("u1", vec![item("a", 1, 2), item("b", 3, 4)]);
        assert_eq!(first.as_str().len(), 64, "SHA-256 in hex");
        assert!(first.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(first, of("u1", vec![item("a", 1, 2), item("b", 3, 4)]), "stable");
        for other in [
            of("u2", vec![item("a", 1, 2), item("b", 3, 4)]),
            of("u1", vec![item("b", 3, 4), item("a", 1, 2)]),
            of("u1", vec![item("a", 1, 2), item("b", 3, 5)]),
            of("u1", vec![item("a", 1, 2)]),
            of("u1", vec![item("ab", 1, 2)]),
        ] {
            assert_ne!(first, other);
            assert!(!first.repeats(&other));
        }
        assert!(first.repeats(&first.clone()));
        assert!(
            first.repeats(&Fingerprint::from_stored(String::new())),
            "unknown: accepted"
        );
    }

    mod properties {
        use meshwork_proto::order::v1 as pb;
        use proptest::prelude::*;

        use super::super::NewOrder;
        use meshwork::ApiError;

        fn item() -> impl Strategy<Value = pb::OrderItem> {
            ("\\PC{0,80}", any::<i32>(), any::<i64>()).prop_map(|(sku, quantity, unit_price_cents)| {
                pb::OrderItem {
                    sku,
                    quantity,
                    unit_price_cents,
                }
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever a caller sends, parsing answers: a valid order whose every field is
            /// within the limits, or INVALID_ARGUMENT with at most 20 violations, never a panic.
            #[test]
            fn any_create_order_is_parsed_or_refused_within_limits(
                user_id in "\\PC{0,140}",
                request_id in "\\PC{0,140}",
                items in proptest::collection::vec(item(), 0..120),
            ) {
                let request = pb::CreateOrderRequest { user_id, items, request_id };
                match NewOrder::try_from(request) {
                    Ok(order) => {
                        prop_assert!(!order.items.is_empty() && order.items.len() <= 100);
                        prop_assert!(order.user_id.as_str().len() <= 128);
                        prop_assert!(!order.user_id.as_str().chars().any(char::is_control));
                        for item in &order.items {
                            prop_assert!(item.sku.as_str().chars().count() <= 64);
                            prop_assert!(!item.sku.as_str().chars().any(char::is_control));
                        }
                    }
                    Err(ApiError::InvalidArgument(violations)) => {
                        prop_assert!(violations.fields().count() <= 20);
                    }
                    Err(other) => prop_assert!(false, "unexpected {other:?}"),
                }
            }
        }
    }
}
