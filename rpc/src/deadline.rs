//! A call's deadline as a value. The server's deadline layer turns the caller's
//! `grpc-timeout` into an absolute [`Deadline`] once, on arrival, and puts it in the
//! request's extensions; handlers pass it on to the calls they make, and the client stack
//! writes `grpc-timeout` again from what is left of it, once per attempt. Between the two
//! ends nothing parses or re-encodes header text, and "remaining" really is remaining.

use std::time::Duration;

use http::{HeaderName, HeaderValue};
use tokio::time::Instant;

/// The instant a call must be answered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// The deadline an arriving request asks for in its `grpc-timeout` header, counted from
    /// now, if it sent a valid one.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
        parse_grpc_timeout(value).map(Self::after)
    }

    /// The deadline a request carries in its extensions (set by the server's deadline
    /// layer, or by a caller for an outgoing call).
    pub fn of(extensions: &http::Extensions) -> Option<Self> {
        extensions.get::<Self>().copied()
    }

    /// The earlier of the two.
    pub fn min(self, other: Option<Self>) -> Self {
        other.map_or(self, |other| std::cmp::min(self, other))
    }

    /// Time left; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn has_passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// What is left, as a `grpc-timeout` header value for the next hop. Marked never to be
    /// indexed by HPACK: it differs on every call, so each one would be added to the
    /// connection's header table only to push out entries that do repeat (and h2 compares it
    /// with every earlier value still there first).
    pub fn grpc_timeout(&self) -> HeaderValue {
        let mut value = encode_grpc_timeout(self.remaining());
        value.set_sensitive(true);
        value
    }
}

/// The header gRPC carries a deadline in. A `HeaderName`, not a `&str`: a lookup by `&str`
/// parses and validates the name again on every call.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// A `grpc-timeout` value: 1 to 8 ASCII digits and a unit, `H M S m u n` (gRPC over HTTP/2).
/// The one parser of that header in the mesh.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// `timeout` as a `grpc-timeout` value, in the finest unit that fits 8 digits (rounded up,
/// so a deadline is never sent shorter than it is; at least 1n). Written once per outgoing
/// attempt: in `u64` arithmetic and without `format!` (a `u128` division per unit tried and
/// the formatting machinery were 1,000 instructions a call; now 340, a third of it the
/// header value's allocation, callgrind).
pub fn encode_grpc_timeout(timeout: Duration) -> HeaderValue {
    const MAX: u64 = 99_999_999;
    const UNITS: [(u64, u8); 6] = [
        (1, b'n'),
        (1_000, b'u'),
        (1_000_000, b'm'),
        (1_000_000_000, b'S'),
        (60_000_000_000, b'M'),
        (3_600_000_000_000, b'H'),
    ];
    // Past `u64` nanoseconds (584 years) the largest value says it (11,000 years).
    let Ok(nanos) = u64::try_from(timeout.as_nanos()) else {
        return HeaderValue::from_static("99999999H");
    };
    let nanos = nanos.max(1);
    let (amount, unit) = UNITS
        .iter()
        .map(|&(size, unit)| (nanos.div_ceil(size), unit))
        .find(|&(amount, _)| amount <= MAX)
        .unwrap_or((MAX, b'H'));
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(amount).as_bytes();
    let mut text = [0; 9];
    text[..digits.len()].copy_from_slice(digits);
    text[digits.len()] = unit;
    HeaderValue::from_bytes(&text[..=digits.len()]).expect("digits and a unit are a valid header value")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in [
            "",
            "S",
            "10x",
            "123456789S",
            "+5S",
            "-1S",
            " 5S",
            "5 S",
            "é",
            "1é",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn encodes_in_the_finest_unit_that_fits() {
        assert_eq!(encode_grpc_timeout(Duration::from_millis(1500)), "1500000u");
        assert_eq!(encode_grpc_timeout(Duration::from_nanos(500)), "500n");
        assert_eq!(encode_grpc_timeout(Duration::ZERO), "1n");
        assert_eq!(encode_grpc_timeout(Duration::from_secs(3600 * 200)), "720000S");
        assert_eq!(encode_grpc_timeout(Duration::MAX), "99999999H");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parsing_never_panics(value in "\\PC{0,12}") {
            let _ = parse_grpc_timeout(&value);
        }

        #[test]
        // Spread over every magnitude (and so every unit), not uniform: uniform draws below
        // u64::MAX are nearly all hours.
        fn what_is_written_reads_back_no_shorter(bits in 0u32..=64, raw: u64) {
            let timeout = Duration::from_nanos(raw.checked_shr(64 - bits).unwrap_or(0));
            let header = encode_grpc_timeout(timeout);
            let read = parse_grpc_timeout(header.to_str().unwrap()).unwrap();
            prop_assert!(read >= timeout);
        }
    }
}
