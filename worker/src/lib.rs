//! The worker role: what happens to an event after the collector accepted
//! it.
//!
//! Owns: event storage ([`events`]: accepted events as Arrow record
//! batches written to zstd Parquet files partitioned
//! `events/org=<id>/date=YYYY-MM-DD/`, each file written under a temporary
//! name, synced and renamed, so a reader never sees half a file).
//!
//! Does not own: receiving, parsing and admitting events (the collector),
//! the rule engine (in `rules`; the worker will drive it), incidents and
//! their store (the supervisor).

pub mod events;

pub use events::{EventWriter, EventWriterConfig, FlushReport, WorkerError, schema};
