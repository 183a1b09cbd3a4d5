//! The database side of the Meshwork services that keep data (user, order): which database
//! (`DATABASE_URL`), opening it with its embedded migrations, and one handle, [`Db`], over
//! both backends, so that each service writes its store once.
//!
//! - `settings`: [`DatabaseUrl`] (`sqlite://PATH` or `postgres://...`, shown in logs without its
//!   password) and [`DatabasePoolConfig`], the pool settings; both are clap settings that a
//!   service flattens into its own.
//! - `open`: [`Db::open`], pools tuned per backend, and [`Migrations`] compiled into the binary.
//! - `read`: [`Db::fetch_optional`] and [`Db::fetch_all`], a read statement written once
//!   ([`Params`], [`FromColumns`]); on SQLite run on the calling thread by `sqlite_reads`
//!   ([`SqliteReaders`], the rusqlite driver), on PostgreSQL by sqlx.
//! - `db`: [`Db`], the [`with_writer!`] dispatch that runs one piece of code that writes on
//!   either backend,
//!   [`Columns`] to read a row of either backend, and how driver errors are sorted
//!   ([`is_transient`]).
//!
//! One SQL text serves both backends: sqlx's SQLite driver binds `$1`-style numbered
//! placeholders by their number, as PostgreSQL does (see the tests of `db`). What still
//! differs between the backends is written by each service in one place.
//!
//! This crate knows nothing of gRPC or of the server runtime: readiness (`meshwork::server::
//! Readiness`) is implemented by each store with [`Db::answers`].

mod db;
mod open;
mod read;
mod settings;
mod sqlite_reads;

pub use db::{Columns, Db, SqliteDb, is_transient};
pub use open::{EmbeddedMigration, Migrations, OpenError};
pub use read::{FromColumns, Param, Params};
pub use settings::{DatabasePoolConfig, DatabaseUrl};
pub use sqlite_reads::SqliteReaders;
