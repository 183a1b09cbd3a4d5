//! Deadline propagation. A caller's deadline arrives as the `grpc-timeout` header; the next
//! hop gets what remains of it, capped by the hop's own limit, so a downstream call never
//! outlives the request that caused it.

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The time limit of an outgoing call, and who set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallBudget {
    /// How long the call may take.
    pub timeout: Duration,
    /// True when the caller's deadline is the limit (its expiry is `DEADLINE_EXCEEDED`),
    /// false when our own cap is (its expiry means the callee was too slow: `UNAVAILABLE`).
    pub caller_bound: bool,
}

/// The budget for a call made while serving a request with `incoming` metadata.
pub fn budget(incoming: &MetadataMap, cap: Duration) -> CallBudget {
    match caller_timeout(incoming) {
        Some(remaining) if remaining <= cap => CallBudget {
            timeout: remaining,
            caller_bound: true,
        },
        _ => CallBudget {
            timeout: cap,
            caller_bound: false,
        },
    }
}

/// The caller's `grpc-timeout`, if it sent one: digits and a unit, H M S m u n.
pub fn caller_timeout(incoming: &MetadataMap) -> Option<Duration> {
    let value = incoming.get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(value)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None; // the spec allows at most 8 digits
    }
    let (digits, unit) = value.split_at(value.len() - 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(timeout: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("grpc-timeout", timeout.parse().unwrap());
        map
    }

    #[test]
    fn parses_every_unit_and_refuses_garbage() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
    }

    #[test]
    fn the_shorter_of_caller_deadline_and_cap_wins() {
        let cap = Duration::from_secs(2);
        assert_eq!(
            budget(&metadata("500m"), cap),
            CallBudget {
                timeout: Duration::from_millis(500),
                caller_bound: true
            }
        );
        assert_eq!(
            budget(&metadata("10S"), cap),
            CallBudget {
                timeout: cap,
                caller_bound: false
            }
        );
        assert_eq!(
            budget(&MetadataMap::new(), cap),
            CallBudget {
                timeout: cap,
                caller_bound: false
            }
        );
    }
}
