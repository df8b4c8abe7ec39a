//! Joins the records of one Linux audit event into one more event.
//!
//! The kernel writes one audit event as several records (`SYSCALL`,
//! `EXECVE`, `CWD`, `PATH`…, `PROCTITLE`, then `EOE`), all stamped with the
//! same `msg=audit(TIME:SERIAL)`. Each record stays an event of its own
//! (SigmaHQ's auditd rules select one record type each); this stage also
//! emits one `audit.event` per audit event of two records or more, whose
//! `ext` holds every record's pairs under the record type in lower case
//! (`syscall.exe`, `execve.a1`, `path.name`, a second `PATH` as
//! `path2.name`), plus `serial`, `types` (the record types in order) and
//! `records`. A rule or a search can then ask about the command line and
//! the syscall's outcome of one event together.
//!
//! Records are joined per org, reporter, host, serial and audit time. An
//! event is complete at its `EOE` record, or when `window_ms` has passed
//! since its first record was seen (single-record user-space events carry
//! no `EOE` and, with one record, emit nothing). Pure: the caller passes
//! the time, and at most `max_pending` events are held (the oldest is
//! emitted early to make room, and counted).

use std::collections::VecDeque;
use std::net::IpAddr;

use bytes::Bytes;

use crate::{Event, OrgId, Str};

/// The `event_type` of a joined audit event.
pub const AUDIT_EVENT_TYPE: &str = "audit.event";

/// Records one joined event takes at most; more are counted and left out
/// of it (they are still events of their own).
const MAX_RECORDS: usize = 64;

/// Which audit event a record belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    org: Option<OrgId>,
    reporter: Option<IpAddr>,
    host: Option<Str>,
    serial: u64,
    time_ms: i64,
}

/// An audit event being joined.
struct Pending {
    /// The joined event so far, its records' pairs in `ext` (boxed: held
    /// and moved in the table).
    base: Box<Event>,
    types: Vec<Str>,
    deadline_ms: i64,
}

/// What the stage has done, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditJoinStats {
    /// Joined events emitted.
    pub joined: u64,
    /// Of those, emitted before completion to stay within `max_pending`.
    pub evicted: u64,
    /// Records left out of a joined event past its record limit.
    pub records_left_out: u64,
}

/// The joining stage; see the module documentation.
pub struct AuditJoin {
    window_ms: i64,
    max_pending: usize,
    pending: hashbrown::HashMap<Key, Pending>,
    /// Keys in the order their first record came (with its deadline); a
    /// key already emitted is skipped when reached.
    order: VecDeque<(i64, Key)>,
    stats: AuditJoinStats,
}

impl AuditJoin {
    /// A stage completing events after `window_ms` at the latest and
    /// holding at most `max_pending` of them.
    pub fn new(window_ms: i64, max_pending: usize) -> AuditJoin {
        AuditJoin {
            window_ms: window_ms.max(0),
            max_pending: max_pending.max(1),
            pending: hashbrown::HashMap::new(),
            order: VecDeque::new(),
            stats: AuditJoinStats::default(),
        }
    }

    /// Audit events being joined.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// What it has done so far.
    pub fn stats(&self) -> AuditJoinStats {
        self.stats
    }

    /// Whether `event` is an audit record this stage reads.
    pub fn reads(event: &Event) -> bool {
        event.event_type.as_deref().is_some_and(|t| t.starts_with("audit.") && t != AUDIT_EVENT_TYPE)
            && event.ext.get("serial").is_some()
    }

    /// Takes in one record seen at `now_ms`; appends to `out` the events
    /// it completes (its own at `EOE`, the oldest when full).
    pub fn observe(&mut self, record: &Event, now_ms: i64, out: &mut Vec<Event>) {
        // `audit.<type in lower case>`: the prefix of its pairs.
        let Some(lower) = record.event_type.as_deref().and_then(|t| t.strip_prefix("audit.")) else { return };
        if lower == "event" {
            return;
        }
        let (Some(kind), Some(serial)) =
            (record.ext.get("type"), record.ext.get("serial").and_then(|s| s.parse::<u64>().ok()))
        else {
            return;
        };
        let key = Key {
            org: record.org_id,
            reporter: record.reporter_ip,
            host: record.host.clone(),
            serial,
            time_ms: record.time.unix_millis(),
        };
        if kind == "EOE" {
            if let Some(p) = self.pending.remove(&key) {
                self.emit(&key, p, out);
            }
            return;
        }
        if !self.pending.contains_key(&key) {
            while self.pending.len() >= self.max_pending {
                let Some((_, oldest)) = self.order.pop_front() else { break };
                if let Some(p) = self.pending.remove(&oldest)
                    && self.emit(&oldest, p, out)
                {
                    self.stats.evicted += 1;
                }
            }
            let deadline_ms = now_ms.saturating_add(self.window_ms);
            self.order.push_back((deadline_ms, key.clone()));
            let p = Pending { base: base(record), types: Vec::new(), deadline_ms };
            self.pending.insert(key.clone(), p);
        }
        let Some(p) = self.pending.get_mut(&key) else { return };
        if p.types.len() >= MAX_RECORDS {
            self.stats.records_left_out += 1;
            return;
        }
        let nth = p.types.iter().filter(|t| t.as_str() == kind).count() + 1;
        p.types.push(kind.into());
        let numbered;
        let prefix = if nth == 1 {
            lower
        } else {
            numbered = format!("{lower}{nth}");
            numbered.as_str()
        };
        let b = &mut p.base;
        for (k, v) in record.ext.iter().filter(|(k, _)| *k != "type" && *k != "serial") {
            b.ext.push_prefixed(prefix, k, v);
        }
        // The first record that names them gives the normalized fields.
        if b.user.is_none() {
            b.user.clone_from(&record.user);
        }
        if b.src_ip.is_none() {
            b.src_ip = record.src_ip;
        }
        if b.outcome.is_none() {
            b.outcome.clone_from(&record.outcome);
        }
    }

    /// Appends to `out` the events whose window ended by `now_ms`.
    pub fn expire(&mut self, now_ms: i64, out: &mut Vec<Event>) {
        while let Some((deadline, _)) = self.order.front() {
            if *deadline > now_ms {
                break;
            }
            let Some((deadline, key)) = self.order.pop_front() else { break };
            // Emitted already (EOE), or a newer event under the same key.
            if self.pending.get(&key).is_some_and(|p| p.deadline_ms == deadline)
                && let Some(p) = self.pending.remove(&key)
            {
                self.emit(&key, p, out);
            }
        }
    }

    /// Appends every event held to `out` (the input has ended).
    pub fn drain(&mut self, out: &mut Vec<Event>) {
        while let Some((_, key)) = self.order.pop_front() {
            if let Some(p) = self.pending.remove(&key) {
                self.emit(&key, p, out);
            }
        }
    }

    /// Appends the joined event, if it has two records or more.
    fn emit(&mut self, key: &Key, p: Pending, out: &mut Vec<Event>) -> bool {
        if p.types.len() < 2 {
            return false;
        }
        let mut e = *p.base;
        e.ext.push("serial", &key.serial.to_string());
        e.ext.push("types", &p.types.join(","));
        e.ext.push("records", &p.types.len().to_string());
        let millis = key.time_ms.rem_euclid(1_000);
        let line = format!(
            "audit({}.{millis:03}:{}): {}",
            key.time_ms.div_euclid(1_000),
            key.serial,
            p.types.iter().map(Str::as_str).collect::<Vec<_>>().join(" ")
        );
        e.message = Some(line.as_str().into());
        e.raw = Bytes::from(line);
        self.stats.joined += 1;
        out.push(e);
        true
    }
}

/// The joined event's frame: where and when, taken from its first record.
fn base(record: &Event) -> Box<Event> {
    let mut e = Box::new(Event::empty(Bytes::new(), record.received_at));
    // A kernel event's records: some 40 pairs.
    e.ext.reserve(48, 2_048);
    e.time = record.time;
    e.org_id = record.org_id;
    e.org.clone_from(&record.org);
    e.collector.clone_from(&record.collector);
    e.reporter_ip = record.reporter_ip;
    e.format = record.format;
    e.facility = record.facility;
    e.severity = record.severity;
    e.host.clone_from(&record.host);
    e.app.clone_from(&record.app);
    e.event_type = Some(AUDIT_EVENT_TYPE.into());
    e
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::EventTime;

    fn millis(ms: i64) -> EventTime {
        EventTime::from_unix(ms.div_euclid(1_000), u32::try_from(ms.rem_euclid(1_000)).unwrap_or(0) * 1_000_000, 0)
    }

    fn record(kind: &str, serial: &str, pairs: &[(&str, &str)]) -> Event {
        let mut e = Event::empty(Bytes::new(), millis(1_000));
        e.time = millis(500);
        e.org_id = Some(OrgId(7));
        e.event_type = Some(format!("audit.{}", kind.to_ascii_lowercase()).into());
        e.ext.push("type", kind);
        e.ext.push("serial", serial);
        for (k, v) in pairs {
            e.ext.push(k, v);
        }
        e
    }

    #[test]
    fn records_of_one_event_become_one_at_eoe() {
        let mut j = AuditJoin::new(2_000, 100);
        let mut out = Vec::new();
        j.observe(&record("SYSCALL", "42", &[("exe", "/usr/bin/chmod"), ("success", "yes")]), 0, &mut out);
        j.observe(&record("EXECVE", "42", &[("a0", "chmod"), ("a1", "+x")]), 0, &mut out);
        j.observe(&record("PATH", "42", &[("name", "/tmp/a")]), 0, &mut out);
        j.observe(&record("PATH", "42", &[("name", "/tmp/b")]), 0, &mut out);
        j.observe(&record("SYSCALL", "43", &[("exe", "/bin/ls")]), 0, &mut out);
        assert!(out.is_empty());
        j.observe(&record("EOE", "42", &[]), 10, &mut out);
        assert_eq!(out.len(), 1);
        let e = &out[0];
        assert_eq!(e.event_type.as_deref(), Some(AUDIT_EVENT_TYPE));
        assert_eq!(e.org_id, Some(OrgId(7)));
        for (k, v) in [
            ("serial", "42"),
            ("types", "SYSCALL,EXECVE,PATH,PATH"),
            ("records", "4"),
            ("syscall.exe", "/usr/bin/chmod"),
            ("execve.a1", "+x"),
            ("path.name", "/tmp/a"),
            ("path2.name", "/tmp/b"),
        ] {
            assert_eq!(e.ext.get(k), Some(v), "{k}");
        }
        assert_eq!(e.ext.get("type"), None, "no record-level type: per-record rules do not fire twice");
        assert_eq!(e.message.as_deref(), Some("audit(0.500:42): SYSCALL EXECVE PATH PATH"));
        assert_eq!(j.pending(), 1);
        assert_eq!(j.stats().joined, 1);
    }

    #[test]
    fn the_window_completes_events_without_eoe_and_singles_emit_nothing() {
        let mut j = AuditJoin::new(2_000, 100);
        let mut out = Vec::new();
        j.observe(&record("SYSCALL", "1", &[]), 0, &mut out);
        j.observe(&record("PROCTITLE", "1", &[("proctitle", "sh")]), 100, &mut out);
        j.observe(&record("USER_LOGIN", "2", &[("acct", "root")]), 500, &mut out);
        j.expire(1_999, &mut out);
        assert!(out.is_empty());
        j.expire(2_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].ext.get("proctitle.proctitle"), Some("sh"));
        j.expire(2_500, &mut out);
        assert_eq!(out.len(), 1, "a single record is not joined");
        assert_eq!(j.pending(), 0);
    }

    #[test]
    fn the_same_serial_from_other_orgs_hosts_or_times_is_another_event() {
        let mut j = AuditJoin::new(2_000, 100);
        let mut out = Vec::new();
        let mut other_org = record("EXECVE", "9", &[]);
        other_org.org_id = Some(OrgId(8));
        let mut other_host = record("EXECVE", "9", &[]);
        other_host.host = Some("db-1".into());
        let mut other_time = record("EXECVE", "9", &[]);
        other_time.time = millis(900);
        for e in [record("SYSCALL", "9", &[]), other_org, other_host, other_time] {
            j.observe(&e, 0, &mut out);
        }
        assert_eq!(j.pending(), 4);
        j.drain(&mut out);
        assert!(out.is_empty(), "each held one record");
    }

    #[test]
    fn held_events_are_bounded() {
        let mut j = AuditJoin::new(60_000, 3);
        let mut out = Vec::new();
        for serial in 0..10 {
            j.observe(&record("SYSCALL", &serial.to_string(), &[]), serial, &mut out);
            j.observe(&record("CWD", &serial.to_string(), &[("cwd", "/")]), serial, &mut out);
        }
        assert_eq!(j.pending(), 3);
        assert_eq!(out.len(), 7, "the oldest emitted early");
        assert_eq!(j.stats().evicted, 7);
        assert_eq!(out[0].ext.get("serial"), Some("0"));
        let mut many = AuditJoin::new(60_000, 3);
        for _ in 0..(MAX_RECORDS + 5) {
            many.observe(&record("PATH", "1", &[]), 0, &mut out);
        }
        assert_eq!(many.stats().records_left_out, 5);
    }

    #[test]
    fn other_events_pass_by() {
        let mut j = AuditJoin::new(2_000, 100);
        let mut out = Vec::new();
        let mut e = record("SYSCALL", "1", &[]);
        e.event_type = Some("sshd.failed_password".into());
        j.observe(&e, 0, &mut out);
        let mut no_serial = Event::empty(Bytes::new(), millis(0));
        no_serial.event_type = Some("audit.syscall".into());
        j.observe(&no_serial, 0, &mut out);
        let mut bad_serial = record("SYSCALL", "x1", &[]);
        j.observe(&bad_serial, 0, &mut out);
        bad_serial.event_type = Some(AUDIT_EVENT_TYPE.into());
        assert!(!AuditJoin::reads(&bad_serial));
        assert_eq!(j.pending(), 0);
    }
}
