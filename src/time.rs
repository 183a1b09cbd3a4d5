//! Times are stored as microseconds since the Unix epoch (an `INTEGER`/`BIGINT` column that
//! sorts and compares the same on every backend) and sent as `google.protobuf.Timestamp`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the system clock is set after 1970");
    i64::try_from(since_epoch.as_micros()).expect("microseconds since 1970 fit in i64 until year 294247")
}

/// The wire form of a stored time.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_splits_seconds_and_nanos() {
        let t = timestamp(1_700_000_000_123_456);
        assert_eq!(t.seconds, 1_700_000_000);
        assert_eq!(t.nanos, 123_456_000);
    }

    #[test]
    fn timestamp_before_epoch_keeps_nanos_positive() {
        let t = timestamp(-1);
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_000));
    }
}
