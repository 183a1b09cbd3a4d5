//! Where a service is: the `USER_SERVICE_URL` forms of CONTRACT.md, parsed into a [`Target`].
//!
//! ```
//! use meshwork_clients::Target;
//!
//! let target: Target = "http://user-0:50052, http://user-1:50052".parse()?;
//! assert_eq!(target.to_string(), "http://user-0:50052/,http://user-1:50052/");
//! # Ok::<(), String>(())
//! ```

use std::{fmt, str::FromStr};

use http::Uri;

/// A service address, parsed from text with [`str::parse`]; anything else is refused with
/// a message that names the accepted forms.
///
/// ```
/// use meshwork_clients::Target;
///
/// assert_eq!(
///     "dns:///user-headless.meshwork.svc.cluster.local:50052".parse(),
///     Ok(Target::Dns { host: "user-headless.meshwork.svc.cluster.local".into(), port: 50052 })
/// );
/// assert!(matches!("http://127.0.0.1:50052".parse(), Ok(Target::Static(uris)) if uris.len() == 1));
/// assert!("localhost:50052".parse::<Target>().is_err(), "a scheme is required");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One or more fixed `http://host:port` endpoints (several: client-side balancing).
    Static(Vec<Uri>),
    /// `dns:///host:port`: every address the name resolves to, re-resolved periodically
    /// (a Kubernetes headless Service).
    Dns {
        /// The name to resolve.
        host: String,
        /// The port of every address it resolves to.
        port: u16,
    },
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(rest) = text.strip_prefix("dns:///") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| "expected dns:///host:port".to_string())?;
            let port = port
                .parse()
                .map_err(|_| format!("bad port {port:?} in {text:?}"))?;
            if host.is_empty() {
                return Err("expected dns:///host:port".into());
            }
            return Ok(Self::Dns {
                host: host.to_owned(),
                port,
            });
        }
        let uris = text
            .split(',')
            .map(str::trim)
            .map(parse_http_uri)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::Static(uris))
    }
}

fn parse_http_uri(text: &str) -> Result<Uri, String> {
    let uri: Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "{text:?}: expected http://host:port, several separated by commas, or dns:///host:port"
        )),
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(uris) => {
                let uris: Vec<String> = uris.iter().map(ToString::to_string).collect();
                f.write_str(&uris.join(","))
            }
            Self::Dns { host, port } => write!(f, "dns:///{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_contract_form() {
        assert_eq!(
            "http://127.0.0.1:50052".parse(),
            Ok(Target::Static(vec![Uri::from_static("http://127.0.0.1:50052")]))
        );
        let Ok(Target::Static(list)) = "http://a:1, http://b:2".parse() else {
            panic!("a list parses")
        };
        assert_eq!(list.len(), 2);
        assert_eq!(
            "dns:///user-headless.meshwork.svc.cluster.local:50052".parse(),
            Ok(Target::Dns {
                host: "user-headless.meshwork.svc.cluster.local".into(),
                port: 50052
            })
        );
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "localhost:50052",
            "dns:///nohost",
            "dns:///:1",
            "http://a:1,",
            "ftp://x:1",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} should be refused");
        }
    }
}
