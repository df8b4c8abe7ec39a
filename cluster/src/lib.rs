//! vigil's cluster transport on NATS JetStream (nats-server 2.11 or newer).
//!
//! The cluster roles (collector, worker, supervisor) run as separate processes and talk
//! through an existing message server, never a home-made broker. This crate is the thin,
//! typed layer they stand on; it knows nothing about events (payloads are bytes):
//!
//! - [`connect`]: a client plus JetStream context, refusing servers older than 2.11;
//! - [`ensure_event_stream`] / [`open_event_stream`]: the `VIGIL_EVENTS` stream, one subject
//!   `vigil.events.<partition>` per partition, limits retention, *discard new* when full (a
//!   publisher gets an error: backpressure, never silent loss);
//! - [`Publisher`]: batches with a caller-chosen `Nats-Msg-Id`, a bounded in-flight window,
//!   retries of transient failures (JetStream's duplicate window makes them idempotent);
//! - [`PartitionReader`]: one partition, in stream order, from a given sequence, in bounded
//!   pulls, resuming after a server restart;
//! - [`EventStream::purge_partition_below`]: drop what the owner has stored and checkpointed;
//! - [`Leases`]: one owner per partition, by lease on the KV bucket `vigil_leases`;
//! - [`Checkpoints`]: the rule state of a partition with the sequence it covers, in the
//!   object store `vigil_checkpoints`;
//! - [`ControlKv`]: put/get/watch small control values (org table, budgets).

#![warn(missing_docs)]

mod connect;

pub use connect::{ConnectError, MIN_SERVER_VERSION, Nats, ServerVersion, connect, connect_with};

/// An error from the NATS client, kept as the source of this crate's errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

