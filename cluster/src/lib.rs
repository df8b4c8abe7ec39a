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
//! - [`ControlKv`]: put/get/watch small control values (org table, budgets), compare and
//!   set for commit records and slot claims;
//! - [`auth`]: node credentials (NATS JWTs and nkeys) and the subjects each role may use;
//! - [`WorkQueue`]: small messages many publish and one durable consumer takes until it
//!   acknowledges them (detections).

#![warn(missing_docs)]

pub mod auth;
mod checkpoint;
mod config;
mod connect;
mod control;
mod lease;
mod publish;
mod queue;
mod reader;
mod stream;

pub use async_nats::connection::State as ConnectionState;
pub use async_nats::{Client, HeaderMap, Subscriber};
pub use checkpoint::{CHECKPOINT_BUCKET, Checkpoint, CheckpointError, Checkpoints};
pub use config::{ClusterConfig, ClusterSettings, cross_partition, org_partitions};
pub use connect::{
    ConnectError, MIN_SERVER_VERSION, Nats, ServerVersion, connect, connect_config, connect_system, connect_with,
};
pub use control::{ControlKv, KvError, KvUpdate, KvWatch};
pub use futures_util::StreamExt;
pub use lease::{Holder, LEASE_BUCKET, Lease, LeaseError, Leases};
pub use publish::{Acked, PublishError, PublishHandle, Publisher, PublisherConfig, PublisherStats};
pub use queue::{DETECTION_STREAM, DETECTION_SUBJECT_PREFIX, QueueConsumer, QueueError, Taken, WorkQueue};
pub use reader::{PartitionReader, ReadError, ReaderConfig, Record};
pub use stream::{
    EVENT_STREAM, EVENT_SUBJECT_PREFIX, EventStream, NoStorage, StreamError, StreamSpec, StreamState, batch_subject,
    ensure_event_stream, open_event_stream, parse_batch_subject, partition_subject, wait_for_event_stream,
};

/// Core NATS subject of node `node`'s interval reports (collector → supervisor).
pub fn report_subject(node: &str) -> String {
    format!("vigil.control.report.{node}")
}

/// Control-bucket key of the org each enrolled collector is bound to
/// (supervisor → workers, which reject batches outside a sender's binding).
pub const BINDINGS_KEY: &str = "bindings";

/// Control-bucket key of the device limit's standings (supervisor →
/// entry nodes): whole, or a header naming how many parts carry them.
pub const DEVICES_KEY: &str = "devices";

/// Control-bucket key of part `part` of standings version `version`.
pub fn devices_part_key(version: u64, part: u32) -> String {
    format!("devices.part.{version}.{part}")
}

/// Core NATS subject of node `node`'s device reports (collector → supervisor).
pub fn devices_subject(node: &str) -> String {
    format!("vigil.control.devices.{node}")
}

/// Core NATS subject of node `node`'s heartbeats (every node → supervisor).
pub fn heartbeat_subject(node: &str) -> String {
    format!("vigil.control.heartbeat.{node}")
}

/// The control bucket: `orgs` (the org table), `budget.<node>` (EPS budgets) and
/// `bindings` (enrolled collectors' orgs), written by the supervisor, read by the others.
pub const CONTROL_BUCKET: &str = "vigil_control";

/// The KV bucket of each partition's commit record (worker-owned).
pub const STORED_BUCKET: &str = "vigil_stored";

/// The KV bucket of live workers' presence, with the lease TTL (worker-owned).
pub const WORKERS_BUCKET: &str = "vigil_workers";

/// Whether `name` can be a node name: it becomes a subject token and a KV key part, so
/// 1–64 characters of letters, digits, `-` and `_`.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The partition an org's events go to: all of one org's events in one partition, so
/// one owner correlates them; orgs spread evenly (ids are dense).
pub fn partition_of(org_id: u32, partitions: u16) -> u16 {
    u16::try_from(org_id % u32::from(partitions.max(1))).unwrap_or(0)
}

/// An error from the NATS client, kept as the source of this crate's errors.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A token unique to this process and call (process id, start time, counter), for
/// consumer names and lease values; no randomness needed.
pub(crate) fn unique_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:x}{count:x}", std::process::id(), nanos)
}
