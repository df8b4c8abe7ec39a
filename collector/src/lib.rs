//! What every entry node runs on the way in: the EPS gate of SPEC §3 and
//! the clock that cuts time into intervals.
//!
//! Owns: [`gate::Gate`] (per-interval node and org budgets, disabled orgs,
//! the received/accepted/dropped counters a node reports), [`clock`] (the
//! `Clock` trait with a system and a manual implementation, so everything
//! that waits or windows runs on virtual time in tests), and the node-side
//! protocol types ([`gate::Budget`], [`gate::IntervalReport`]); and the
//! syslog listeners ([`listen`]: UDP, TCP and TLS (RFC 5425) with
//! per-connection framing, a connection limit, idle and handshake
//! timeouts, batching into a bounded channel with backpressure on streams
//! and counted drops on UDP).
//!
//! Also: org assignment ([`orgs`]: collector org, then longest-prefix IP
//! ranges, then Super/Local), the intake ([`intake`]: parse, classify,
//! assign, admit through the gate, batch by batch) and clock-skew
//! detection ([`skew`]: events stamped ahead of their receive time counted
//! per org and announced per source with a system event).
//!
//! Assembled as a role in [`node`] (the collector of `vigil run` and of a
//! cluster, differing only in the transports passed in; [`cluster`] passes
//! NATS JetStream ones), writing its
//! series into a [`metrics::Exposition`].
//!
//! Does not own: deciding budgets (the supervisor's allocator does), the
//! grammars (in `parsers`), storing events (the worker), certificates
//! (the caller builds the `TlsAcceptor`).

pub mod clock;
pub mod cluster;
pub mod devices;
pub mod gate;
pub mod intake;
pub mod listen;
pub mod metrics;
pub mod node;
pub mod orgs;
pub mod skew;
pub mod spool;

pub use clock::{Clock, ManualClock, SystemClock};
pub use gate::{Admission, Budget, Gate, IntervalReport, NodeId, OrgBudget, OrgCounts};
