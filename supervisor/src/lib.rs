//! The supervisor role: licences and EPS allocation (SPEC §3), and the
//! tenant-aware record store with its HTTP API (SPEC §4, §6).
//!
//! Owns: licences ([`licence`]: signing, verification, the unlicensed
//! allowance), the allocation policy ([`allocation`]: a pure function with
//! its pool), the interval control loop ([`control`]), the capacity
//! planners' simulator ([`simulate`]), the record store ([`store`]: orgs,
//! users, teams, roles, tokens, incidents, alerts, comments, the audit log
//! and the pipeline's incident upsert, on SQLite or PostgreSQL) and the
//! incident API over it ([`api`]), the dispatcher that sends incidents on
//! through connectors ([`notify`]); assembled as a role in [`node`] (the
//! same in `vigil run` and in a cluster, the transports passed in;
//! [`cluster`] passes NATS JetStream ones).
//!
//! Does not own: the gate that enforces budgets on each node (in
//! `collector`), turning rule hits into [`store::IncidentUpdate`]s (the
//! worker does that), listeners, or the process around the API (the
//! `vigil` binary).

pub mod allocation;
pub mod api;
pub mod cluster;
pub mod control;
mod error;
pub mod inventory;
pub mod licence;
pub mod node;
pub mod notify;
pub mod simulate;
pub mod store;

pub use error::Error;
