//! What differs between the backends: keeping an order for a user and that user's deletion
//! apart.
//!
//! A `CreateOrder` whose User check passed just before the user was deleted must not leave a
//! pending order behind: either its insert commits first and the deletion's cancellations
//! (which update every pending order of the user) see it, or the deletion commits first and
//! the insert sees the user in `deleted_users` and inserts nothing. Under PostgreSQL's READ
//! COMMITTED each statement sees what was committed when it began, so two transactions that
//! overlap could each miss the other; a transaction-level advisory lock per user makes them
//! take turns. SQLite has one writer at a time, and both transactions begin with a write, so
//! they take turns already.

use sqlx::{Postgres, Sqlite, Transaction};

use crate::domain::UserId;

/// Taking turns with the other writers of one user's orders, until the commit.
pub(super) trait LockUser {
    async fn lock_user(&mut self, user_id: &UserId) -> Result<(), sqlx::Error>;
}

impl LockUser for Transaction<'_, Sqlite> {
    async fn lock_user(&mut self, _user_id: &UserId) -> Result<(), sqlx::Error> {
        Ok(())
    }
}

impl LockUser for Transaction<'_, Postgres> {
    async fn lock_user(&mut self, user_id: &UserId) -> Result<(), sqlx::Error> {
        // Two-key form: the first key says "a user of order-service", so these never collide
        // with the outbox's own lock (one 64-bit key).
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(ORDER_USERS)
            .bind(user_id.as_str())
            .execute(&mut **self)
            .await?;
        Ok(())
    }
}

/// The first key of the per-user locks.
const ORDER_USERS: i32 = 0x6f75_7372; // "ousr"
