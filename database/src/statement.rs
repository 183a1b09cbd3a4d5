//! A statement's values and rows, the same for both backends: [`Params`] (its placeholders'
//! values, as a tuple: `$1` is the first), [`Json`] (a value kept as JSON) and [`FromColumns`]
//! (what a row becomes). [`Db::fetch_optional`](crate::Db::fetch_optional), `fetch_all` and
//! the write transaction [`Tx`](crate::Tx) take them.

use serde::Serialize;
use sqlx::{
    Encode, Postgres, Type,
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgArguments, PgTypeInfo},
    query::Query,
};

use crate::{Columns, sqlite::bind_numbered};

/// What a row of a read becomes: a store implements it for its domain types, with its own
/// error (which a driver's error converts into).
pub trait FromColumns: Sized {
    type Error: From<sqlx::Error>;
    fn from_columns(row: &impl Columns) -> Result<Self, Self::Error>;
}

/// A value both backends bind: `&str`, `i64`, `&[u8]`, their `Option`s, and [`Json`] (`'a`:
/// what it borrows).
pub trait Param<'a>: Encode<'a, Postgres> + Type<Postgres> + rusqlite::ToSql + Send {}

impl<'a, T: Encode<'a, Postgres> + Type<Postgres> + rusqlite::ToSql + Send> Param<'a> for T {}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// The values of a statement's placeholders, in order: `$1` is the tuple's first.
pub trait Params<'a>: Send {
    fn bind_postgres(self, query: PgQuery<'_>) -> PgQuery<'_>;
    fn bind_sqlite(&self, statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()>;
}

macro_rules! params_tuple {
    ($($index:tt $value:ident),+) => {
        impl<'a, $($value: Param<'a>),+> Params<'a> for ($($value,)+) {
            fn bind_postgres(self, query: PgQuery<'_>) -> PgQuery<'_> {
                query$(.bind(self.$index))+
            }
            fn bind_sqlite(&self, statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
                $(bind_numbered(statement, $index + 1, &self.$index)?;)+
                Ok(())
            }
        }
    };
}

/// A statement without placeholders.
impl Params<'_> for () {
    fn bind_postgres(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
    }
    fn bind_sqlite(&self, _statement: &mut rusqlite::Statement<'_>) -> rusqlite::Result<()> {
        Ok(())
    }
}

params_tuple!(0 A);
params_tuple!(0 A, 1 B);
params_tuple!(0 A, 1 B, 2 C);
params_tuple!(0 A, 1 B, 2 C, 3 D);
params_tuple!(0 A, 1 B, 2 C, 3 D, 4 E);
params_tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F);
params_tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G);
params_tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H);
params_tuple!(0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I);

/// A value bound as JSON: `JSONB` on PostgreSQL, `TEXT` on SQLite (read back with
/// [`Columns::json`]).
pub struct Json<'a, T>(pub &'a T);

impl<T: Serialize> Encode<'_, Postgres> for Json<'_, T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <sqlx::types::Json<&T> as Encode<'_, Postgres>>::encode_by_ref(&sqlx::types::Json(self.0), buf)
    }
}

impl<T> Type<Postgres> for Json<'_, T> {
    fn type_info() -> PgTypeInfo {
        <sqlx::types::Json<T> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <sqlx::types::Json<T> as Type<Postgres>>::compatible(ty)
    }
}

impl<T: Serialize> rusqlite::ToSql for Json<'_, T> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        let text = serde_json::to_string(self.0)
            .map_err(|error| rusqlite::Error::ToSqlConversionFailure(error.into()))?;
        Ok(text.into())
    }
}
