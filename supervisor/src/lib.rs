//! The supervisor's licence and EPS logic (SPEC §3).
//!
//! Owns: licences ([`licence`]: signing, verification, the unlicensed
//! allowance), the allocation policy ([`allocation`]: a pure function with
//! its pool), the interval control loop ([`control`]) and the capacity
//! planners' simulator ([`simulate`]).
//!
//! Does not own: the gate that enforces budgets on each node (in
//! `collector`), the record store and incident API (they arrive with the
//! record-store issue).

pub mod allocation;
pub mod api;
pub mod control;
mod error;
pub mod licence;
pub mod simulate;
pub mod store;

pub use error::Error;
