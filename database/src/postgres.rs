//! A statement written once ([`Params`], [`FromColumns`]) on PostgreSQL, through sqlx, on
//! any of its executors: the pool, a transaction, a connection of one's own (the outbox
//! relay's, which holds its lease).

use sqlx::{PgExecutor, postgres::PgRow};

use crate::{FromColumns, Params};

/// The row `sql` finds, if any (the first, if it finds several).
pub async fn fetch_optional<'c, T: FromColumns>(
    executor: impl PgExecutor<'c>,
    sql: &'static str,
    params: impl Params<'_>,
) -> Result<Option<T>, T::Error> {
    let row: Option<PgRow> = params
        .bind_postgres(sqlx::query(sql))
        .fetch_optional(executor)
        .await?;
    row.as_ref().map(T::from_columns).transpose()
}

/// Every row `sql` finds, in its order.
pub async fn fetch_all<'c, T: FromColumns>(
    executor: impl PgExecutor<'c>,
    sql: &'static str,
    params: impl Params<'_>,
) -> Result<Vec<T>, T::Error> {
    let rows: Vec<PgRow> = params.bind_postgres(sqlx::query(sql)).fetch_all(executor).await?;
    rows.iter().map(T::from_columns).collect()
}

/// Runs `sql`, which returns no rows; how many rows it changed.
pub async fn execute<'c>(
    executor: impl PgExecutor<'c>,
    sql: &'static str,
    params: impl Params<'_>,
) -> Result<u64, sqlx::Error> {
    let done = params.bind_postgres(sqlx::query(sql)).execute(executor).await?;
    Ok(done.rows_affected())
}
