//! The worker role: what happens to an event after the collector accepted
//! it.
//!
//! Owns: event storage ([`events`]: accepted events as Arrow record
//! batches written to zstd Parquet files partitioned
//! `events/org=<id>/date=YYYY-MM-DD/`, each file written under a temporary
//! name, synced and renamed, so a reader never sees half a file), and the
//! worker loop ([`pipeline`]: event ids, Arrow columns filled as events
//! arrive, Parquet encoded and written on a second thread, the rule engine
//! advanced to the receive-time horizon on a flush-interval tick,
//! incidents handed to a sink with the receive time that starts their
//! latency).
//!
//! Does not own: receiving, parsing and admitting events (the collector),
//! the rule language and engine (in `rules`; the worker drives one),
//! incidents' storage (the supervisor's record store).

pub mod cluster;
pub mod compact;
pub mod events;
pub mod node;
pub mod pipeline;
pub mod priority;
pub mod retention;
pub mod shards;

pub use events::{EventBuffer, EventWriter, EventWriterConfig, FileWriter, FlushReport, Sealed, WorkerError, schema};
pub use pipeline::{BatchSource, Detection, Worker, WorkerStats};
