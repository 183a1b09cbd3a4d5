//! AIP-158 pagination: page sizes and opaque page tokens.
//!
//! Lists are ordered by id. Ids are UUIDv7 (time-ordered, unique), so "the rows after the
//! last id seen" is a stable cursor: walking the pages never shows a row twice or skips
//! one that existed when the walk began. The token is that cursor plus the list's filter,
//! base64-encoded: callers must treat it as opaque, and a token from a differently
//! filtered list is refused instead of silently giving a wrong page.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{AllChecked, Checked, FieldViolations};

/// What `page_size = 0` means.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Larger page sizes are lowered to this.
pub const MAX_PAGE_SIZE: u32 = 1000;

const TOKEN_VERSION: &str = "v1";

/// Room kept in a page's response for everything but its rows: the `next_page_token`, whose
/// cursor is an id of at most 128 bytes (with the filter, base64: under 400 bytes).
const PAGE_OVERHEAD_BYTES: usize = 1024;

/// Longest page token accepted, in bytes: more is refused before it is decoded.
const MAX_TOKEN_BYTES: usize = 1024;

/// A parsed page request: how many rows, after which id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Rows on this page, 1..=MAX_PAGE_SIZE.
    pub size: u32,
    /// Return rows whose id sorts after this one; `None` for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    /// Parses `page_size` and `page_token` of a list request whose filter is `filter`
    /// (e.g. the `user_id` of ListOrders; `""` when the list has none). Bad fields are
    /// recorded in `violations`.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        filter: &str,
        violations: &mut FieldViolations,
    ) -> Checked<Self> {
        let size = violations.check("page_size", page_size_of(page_size));
        let after = violations.check("page_token", cursor_of(page_token, filter));
        let (size, after) = (size, after).all()?;
        Ok(Self { size, after })
    }

    /// Number of rows to fetch: one more than the page, to learn whether another follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// Cuts the fetched rows to the page and makes the `next_page_token` ("" at the end).
    /// The page is also cut short where its rows, encoded (`encoded_len`), would no longer
    /// fit a response of `max_bytes`: a list answers with a shorter page and a token for the
    /// rest rather than fail. A page holds at least one row, so a walk always moves on.
    pub fn finish<T>(
        &self,
        mut rows: Vec<T>,
        filter: &str,
        id: impl Fn(&T) -> &str,
        encoded_len: impl Fn(&T) -> usize,
        max_bytes: usize,
    ) -> (Vec<T>, String) {
        let budget = max_bytes.saturating_sub(PAGE_OVERHEAD_BYTES);
        let mut used = 0usize;
        let fits = rows
            .iter()
            .take(self.size as usize)
            .take_while(|row| {
                // A repeated field's element: its bytes, a tag and a length prefix.
                used = used.saturating_add(encoded_len(row) + 11);
                used <= budget
            })
            .count()
            .max(1);
        if rows.len() <= fits {
            return (rows, String::new());
        }
        rows.truncate(fits);
        let last = rows.last().map(&id).unwrap_or_default();
        let token = encode_token(filter, last);
        (rows, token)
    }
}

fn page_size_of(requested: i32) -> Result<u32, String> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err("must not be negative".into()),
        n => Ok((n as u32).min(MAX_PAGE_SIZE)),
    }
}

fn cursor_of(token: &str, filter: &str) -> Result<Option<String>, String> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || "is not a page token of this list".to_string();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(TOKEN_VERSION), Some(token_filter), Some(after))
            if token_filter == filter && !after.is_empty() =>
        {
            Ok(Some(after.to_owned()))
        }
        _ => Err(invalid()),
    }
}

fn encode_token(filter: &str, after: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_VERSION}\n{filter}\n{after}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(size: i32, token: &str, filter: &str) -> Result<PageRequest, Vec<String>> {
        let mut violations = FieldViolations::new();
        let page = PageRequest::parse(size, token, filter, &mut violations);
        violations.finish(page).map_err(|error| match error {
            crate::error::ApiError::InvalidArgument(violations) => {
                violations.fields().map(str::to_owned).collect()
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        })
    }

    #[test]
    fn page_size_zero_is_default_and_large_is_capped() {
        assert_eq!(parse(0, "", "").unwrap().size, DEFAULT_PAGE_SIZE);
        assert_eq!(parse(7, "", "").unwrap().size, 7);
        assert_eq!(parse(i32::MAX, "", "").unwrap().size, MAX_PAGE_SIZE);
    }

    #[test]
    fn negative_size_and_garbage_token_are_both_reported() {
        assert_eq!(
            parse(-1, "%%%", ""),
            Err(vec!["page_size".into(), "page_token".into()])
        );
    }

    #[test]
    fn token_round_trips_only_for_the_same_filter() {
        let page = parse(2, "", "user-1").unwrap();
        let (rows, token) = page.finish(vec!["a", "b", "c"], "user-1", |s| s, |_| 0, usize::MAX);
        assert_eq!(rows, ["a", "b"]);
        assert_eq!(parse(2, &token, "user-1").unwrap().after.as_deref(), Some("b"));
        assert_eq!(parse(2, &token, "user-2"), Err(vec!["page_token".into()]));
    }

    #[test]
    fn last_page_has_empty_token() {
        let page = parse(3, "", "").unwrap();
        let (rows, token) = page.finish(vec!["a", "b", "c"], "", |s| s, |_| 0, usize::MAX);
        assert_eq!(rows.len(), 3);
        assert_eq!(token, "");
    }

    #[test]
    fn a_page_is_cut_short_where_its_rows_stop_fitting() {
        let page = parse(10, "", "").unwrap();
        let rows: Vec<String> = (0..10).map(|i| format!("{i:0>3}")).collect();
        // Each row "weighs" 1000 bytes: 4 fit in 5 KiB once the overhead is kept.
        let (kept, token) = page.finish(rows.clone(), "", |s| s, |_| 1000, 5 * 1024);
        assert_eq!(kept, ["000", "001", "002", "003"]);
        assert_eq!(parse(10, &token, "").unwrap().after.as_deref(), Some("003"));
        // A row too big for any page still makes a page of one: the walk moves on.
        let (kept, token) = page.finish(rows, "", |s| s, |_| 1 << 30, 5 * 1024);
        assert_eq!(kept, ["000"]);
        assert!(!token.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever a caller sends as a token, decoding answers (never panics), and only a
        /// token made for the same filter reads back as a cursor.
        #[test]
        fn any_token_is_refused_or_read_never_a_panic(token in "\\PC{0,200}", filter in "[a-z0-9-]{0,12}") {
            let _ = cursor_of(&token, &filter);
        }

        #[test]
        fn tokens_round_trip(after in "[ -~]{1,128}", filter in "[a-z0-9-]{0,40}") {
            let token = encode_token(&filter, &after);
            proptest::prop_assert_eq!(cursor_of(&token, &filter), Ok(Some(after)));
        }
    }
}
