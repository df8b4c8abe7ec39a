//! Bounded reads for the few local files this crate reads (key file, CA bundle, host
//! name): the workspace forbids unbounded reads, and a misconfigured path pointing at a
//! huge file or a device should fail, not eat memory.

use std::io::Read;

/// Reads at most `limit + 1` bytes, so the caller can tell "exactly at the limit" from
/// "larger than the limit".
pub(crate) fn read_limited(r: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut limited = r.take(limit.saturating_add(1));
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match limited.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
