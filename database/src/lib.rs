//! The database side of the Meshwork services that keep data (user, order): which database
//! (`DATABASE_URL`), opening it with its embedded migrations, and one handle, [`Db`], over
//! both backends, so that each service writes its store once.
//!
//! - `settings`: [`DatabaseUrl`] (`sqlite://PATH` or `postgres://...`, shown in logs without its
//!   password) and [`DatabasePoolConfig`], the pool settings; both are clap settings that a
//!   service flattens into its own.
//! - `open`: [`Db::open`], pools tuned per backend, and [`Migrations`] compiled into the binary.
//! - `statement`: what a statement written once for both backends takes and gives:
//!   [`Params`] (its values, as a tuple), [`Json`], [`FromColumns`] (what a row becomes).
//! - `read`: [`Db::fetch_optional`], [`Db::fetch_all`] and [`Db::execute`], one statement.
//! - `write`: [`Db::begin`] and [`Tx`], a write transaction.
//! - `sqlite`: SQLite on the calling thread (the rusqlite driver): [`SqliteReaders`] and the
//!   one [`SqliteWriter`]. `postgres`: the same statements through sqlx, on any executor.
//! - `db`: [`Db`], [`Columns`] to read a row of either backend, and how driver errors are
//!   sorted ([`is_transient`]).
//!
//! One SQL text serves both backends: `$1`-style placeholders are bound by their number on
//! SQLite as on PostgreSQL (see the tests of `db`). What still differs between the
//! backends is written by each service in one place.
//!
//! This crate knows nothing of gRPC or of the server runtime: readiness (`meshwork::server::
//! Readiness`) is implemented by each store with [`Db::answers`].

mod db;
mod open;
pub mod postgres;
mod read;
mod settings;
pub mod sqlite;
mod statement;
mod write;

pub use db::{Columns, Db, SqliteDb, is_transient};
pub use open::{EmbeddedMigration, Migrations, OpenError};
pub use settings::{DatabasePoolConfig, DatabaseUrl};
pub use sqlite::{SqliteReaders, SqliteTx, SqliteWriter};
pub use statement::{FromColumns, Json, Param, Params};
pub use write::Tx;
