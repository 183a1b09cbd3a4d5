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

use meshwork_database::{Tx, postgres};

use crate::domain::UserId;

/// Taking turns with the other writers of one user's orders, until the commit.
pub(super) trait LockUser {
    async fn lock_user(&mut self, user_id: &UserId) -> Result<(), sqlx::Error>;
}

impl LockUser for Tx {
    async fn lock_user(&mut self, user_id: &UserId) -> Result<(), sqlx::Error> {
        let Some(connection) = self.postgres() else {
            // SQLite: the transaction holds the file's write lock already.
            return Ok(());
        };
        // Two-key form: the first key says "a user of order-service", so these never collide
        // with the outbox's own lock (one 64-bit key).
        let lock = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
        postgres::execute(connection, lock, (ORDER_USERS, user_id.as_str()))
            .await
            .map(drop)
    }
}

/// The first key of the per-user locks.
const ORDER_USERS: i32 = 0x6f75_7372; // "ousr"
