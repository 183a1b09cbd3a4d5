//! The settings that say which database a service uses and how its pool behaves.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use clap::Args;
use sqlx::postgres::PgConnectOptions;

/// Where a service keeps its data: the `DATABASE_URL` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH`: an embedded database file, created (with its directory) if missing.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, kept whole for the driver (which has parsed it
    /// once already, so a malformed one stops the process at start).
    Postgres(String),
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err("expected sqlite://PATH with a file path".into());
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            PgConnectOptions::from_str(url).map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            return Ok(Self::Postgres(url.to_owned()));
        }
        Err("expected sqlite://PATH or postgres://...".into())
    }
}

impl fmt::Display for DatabaseUrl {
    /// Never prints a PostgreSQL password: this is what goes into logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

/// What replaces a password in a shown URL.
const REDACTED: &str = "REDACTED";

/// `url` with its password replaced, wherever libpq accepts one: in the user info
/// (`postgres://app:secret@db`) and in the query (`?password=secret`, and `sslpassword`, the
/// key of a client certificate). A URL that does not parse is not shown at all.
fn redacted(url: &str) -> String {
    let Ok(mut url) = url::Url::parse(url) else {
        return "postgres://(unparsable URL)".into();
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a user info, and this one has one.
        let _ = url.set_password(Some(REDACTED));
    }
    let secret = |key: &str| key.to_ascii_lowercase().ends_with("password");
    if url.query_pairs().any(|(key, _)| secret(&key)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if secret(&key) {
                    REDACTED.into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.into()
}

/// Settings of a service's connection pool (user and order).
#[derive(Args, Debug, Clone)]
pub struct DatabasePoolConfig {
    /// Most connections one process opens to PostgreSQL.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// How long a call waits for a free connection before it is answered `UNAVAILABLE`.
    #[arg(long, env = "DATABASE_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub database_acquire_timeout: Duration,

    /// Longest a PostgreSQL statement may run (`statement_timeout`).
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub database_statement_timeout: Duration,
}

impl Default for DatabasePoolConfig {
    /// The settings' defaults, for tests and embedding.
    fn default() -> Self {
        Self {
            database_max_connections: 10,
            database_acquire_timeout: Duration::from_secs(2),
            database_statement_timeout: Duration::from_secs(5),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_keeps_relative_and_absolute_paths() {
        assert_eq!(
            "sqlite://data/user.db".parse(),
            Ok(DatabaseUrl::Sqlite("data/user.db".into()))
        );
        assert_eq!(
            "sqlite:///var/lib/x.db?mode=rwc".parse(),
            Ok(DatabaseUrl::Sqlite("/var/lib/x.db".into()))
        );
    }

    #[test]
    fn database_url_rejects_other_schemes_empty_paths_and_malformed_postgres() {
        assert!("mysql://x".parse::<DatabaseUrl>().is_err());
        assert!("sqlite://".parse::<DatabaseUrl>().is_err());
        assert!("data/user.db".parse::<DatabaseUrl>().is_err());
        assert!("postgres://db:notaport/orders".parse::<DatabaseUrl>().is_err());
    }

    fn shown(url: &str) -> String {
        url.parse::<DatabaseUrl>().unwrap().to_string()
    }

    #[test]
    fn postgres_url_hides_the_password_wherever_it_is() {
        assert_eq!(
            shown("postgres://app:secret@db:5432/orders"),
            "postgres://app:REDACTED@db:5432/orders"
        );
        let url = shown("postgres://app@db/orders?sslmode=require&password=secret&sslpassword=key");
        assert_eq!(
            url,
            "postgres://app@db/orders?sslmode=require&password=REDACTED&sslpassword=REDACTED"
        );
        let both = shown("postgresql://app:one@db/orders?PassWord=two");
        assert!(!both.contains("one") && !both.contains("two"), "{both}");
        assert_eq!(shown("postgres://db/orders"), "postgres://db/orders");
    }

    #[test]
    fn pool_durations_parse_as_people_write_them() {
        use clap::Parser;

        #[derive(Parser)]
        struct Settings {
            #[command(flatten)]
            pool: DatabasePoolConfig,
        }
        let settings = Settings::try_parse_from(["x", "--database-acquire-timeout", "1500ms"]).unwrap();
        assert_eq!(
            settings.pool.database_acquire_timeout,
            Duration::from_millis(1500)
        );
        assert!(Settings::try_parse_from(["x", "--database-statement-timeout", "soon"]).is_err());
    }
}
