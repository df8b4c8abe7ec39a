//! vigil's lowest layer: the event model and everything that turns bytes
//! from a log source into [`Event`]s.
//!
//! Owns:
//! - the event model of SPEC §2 ([`Event`], [`Format`], [`OrgId`], [`EventTime`]);
//! - framing of byte streams and datagrams into lines ([`framing`]);
//! - the RFC 5424, RFC 3164, CEF and LEEF grammars, written with `nom` over
//!   `&[u8]`, producing a borrowed [`View`] that is converted once into an
//!   owned [`Event`] ([`Parser`]);
//! - data-driven device parsers that add `event_type` and normalized fields
//!   ([`device`]);
//! - the protocol types the roles exchange ([`protocol`]);
//! - address ranges ([`Network`]), as org IP ranges and rule filters write them;
//! - the binary form of event batches between collectors and workers ([`wire`]).
//!
//! Does not own: sockets, threads, clocks, org assignment or licensing. This
//! crate is pure: no I/O except reading pattern files when asked, no wall
//! clock (every "now" is a parameter), and no input can make it panic.

pub mod cef;
pub mod device;
pub mod error;
pub mod event;
pub mod framing;
mod grammar;
pub mod leef;
pub mod net;
pub mod parser;
pub mod protocol;
pub mod syslog;
pub mod time;
pub mod wire;

pub use device::{DeviceParsers, DeviceRegistry};
pub use error::Error;
pub use event::{Event, Format, OrgId, Pairs, SdElement, Str, StructuredData};
pub use grammar::SyntaxError;
pub use net::{Network, redact_url};
pub use parser::{InputFormat, Parser, ParserConfig, Payload, View};
pub use protocol::{
    BUILTIN_ORGS, Budget, Clock, DetectionSink, DeviceLimits, DeviceLimitsPart, DeviceReport, DeviceSeen, EventIds,
    IncidentUpdate, IntervalReport, MESSAGE_PART_BYTES, ManualClock, NodeHeartbeat, NodeId, NodeRole, OrgBudget,
    OrgCounts, OrgEntry, OrgSnapshot, PartsError, Severity,
};
pub use time::{EventTime, SourceZone};
