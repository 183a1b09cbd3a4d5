//! Events of the Meshwork services, as CONTRACT.md's *Events* section says: every change is
//! also an event, written to the service's outbox in the change's own transaction, relayed
//! to NATS JetStream in commit order, and consumed by durable consumers.
//!
//! - `outbox`: [`Outbox`], the table (one per service, its migrations from
//!   [`sqlite_migration!`] / [`postgres_migration!`], then [`prune_by_seq_migration!`]),
//!   [`Append`] to write an event inside a
//!   transaction, and the reads the relay and `WatchOrders` replay need.
//! - `relay`: [`relay::start`], the task that publishes unsent rows and marks them sent
//!   once JetStream acknowledged them; on PostgreSQL one replica at a time (an advisory lock).
//! - `consumer`: [`consumer::start`], a durable pull consumer that acknowledges a message
//!   only after its handler (and so the handler's commit) succeeded.
//! - `wire`: the stream, the NATS headers (CloudEvents binary mode, `Nats-Msg-Id`, W3C
//!   `traceparent`) and connecting to the broker ([`EventsConfig`], `EVENTS_URL`).
//! - `metrics`: published, failed, pending and consumed events.
//!
//! Like `meshwork-database`, this crate knows nothing of gRPC or of the server runtime: a
//! service hands the relay's task to its server's drain (it flushes last), and writes its
//! own events' payloads (protobuf messages of `proto/`).

pub mod consumer;
mod metrics;
mod outbox;
pub mod relay;
mod wire;

pub use outbox::{Append, EventId, NewEvent, Outbox, StoredEvent};
pub use wire::{EventsConfig, EventsUrl, STREAM};
