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

/// The caller's `grpc-timeout`, if it sent one.
pub fn caller_timeout(incoming: &MetadataMap) -> Option<Duration> {
    let value = incoming.get("grpc-timeout")?.to_str().ok()?;
    meshwork::layers::deadline::parse_grpc_timeout(value)
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
