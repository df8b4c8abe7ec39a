//! Org assignment (SPEC §4): a collector may belong to one org (all it
//! receives is that org's); otherwise the reporter IP is matched against
//! the orgs' IP ranges, longest prefix first; if the connection comes from
//! a relay the syslog HOSTNAME, when it is an IP address, is matched too;
//! otherwise the event is Super/Local's. (Whether an org is enabled, and
//! its EPS limit, are the gate's business, through the budget.)

use std::net::IpAddr;

use hashbrown::HashMap;
use parsers::{Network, OrgId, Str};

/// One org as the collector needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgRoute {
    /// Its id.
    pub id: OrgId,
    /// Its name, written into each event.
    pub name: Str,
    /// Reporter IP ranges that belong to it.
    pub ranges: Vec<Network>,
}

/// Two orgs claim the very same range: which one an event belongs to
/// would be arbitrary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{range} is claimed by both {first} and {second}")]
pub struct RangeConflict {
    /// The range.
    pub range: String,
    /// One org.
    pub first: Str,
    /// The other.
    pub second: Str,
}

/// Ranges of one family and prefix length, looked up by masked address.
#[derive(Debug)]
struct Level {
    probe: Network,
    orgs: HashMap<u128, usize>,
}

/// The assignment table; built from the store's orgs, replaced whole when
/// they change.
#[derive(Debug)]
pub struct OrgTable {
    orgs: Vec<OrgRoute>,
    /// Longest prefixes first.
    levels: Vec<Level>,
    collector_org: Option<usize>,
    local: usize,
}

impl OrgTable {
    /// A table over `orgs`. `collector_org` (an id in `orgs`) makes every
    /// event this collector's org's. Super/Local is added if missing.
    pub fn new(mut orgs: Vec<OrgRoute>, collector_org: Option<OrgId>) -> Result<OrgTable, RangeConflict> {
        if !orgs.iter().any(|o| o.id == OrgId::SUPER_LOCAL) {
            orgs.push(OrgRoute { id: OrgId::SUPER_LOCAL, name: "Super/Local".into(), ranges: vec![] });
        }
        let local = orgs.iter().position(|o| o.id == OrgId::SUPER_LOCAL).unwrap_or(0);
        let mut levels: Vec<Level> = Vec::new();
        for (i, org) in orgs.iter().enumerate() {
            for range in &org.ranges {
                let level = match levels
                    .iter_mut()
                    .position(|l| l.probe.is_ipv4() == range.is_ipv4() && l.probe.prefix() == range.prefix())
                {
                    Some(p) => &mut levels[p],
                    None => {
                        levels.push(Level { probe: *range, orgs: HashMap::new() });
                        let last = levels.len() - 1;
                        &mut levels[last]
                    }
                };
                if let Some(other) = level.orgs.insert(range.bits(), i)
                    && other != i
                {
                    return Err(RangeConflict {
                        range: range.to_string(),
                        first: orgs[other].name.clone(),
                        second: org.name.clone(),
                    });
                }
            }
        }
        levels.sort_by_key(|l| std::cmp::Reverse(l.probe.prefix()));
        let collector_org = collector_org.and_then(|id| orgs.iter().position(|o| o.id == id));
        Ok(OrgTable { orgs, levels, collector_org, local })
    }

    fn lookup(&self, ip: IpAddr) -> Option<usize> {
        self.levels.iter().find_map(|l| l.probe.key_of(ip).and_then(|k| l.orgs.get(&k).copied()))
    }

    /// The org of an event from `reporter` whose HOSTNAME is `host`.
    pub fn assign(&self, reporter: IpAddr, host: Option<&str>) -> &OrgRoute {
        self.assign_how(reporter, host).0
    }

    /// Like [`OrgTable::assign`], also saying whether the HOSTNAME decided
    /// (the reporter is a relay for it).
    pub fn assign_how(&self, reporter: IpAddr, host: Option<&str>) -> (&OrgRoute, bool) {
        if let Some(i) = self.collector_org.or_else(|| self.lookup(reporter)) {
            return (&self.orgs[i], false);
        }
        match host.and_then(|h| h.parse::<IpAddr>().ok()).and_then(|ip| self.lookup(ip)) {
            Some(i) => (&self.orgs[i], true),
            None => (&self.orgs[self.local], false),
        }
    }

    /// Every org in the table.
    pub fn orgs(&self) -> &[OrgRoute] {
        &self.orgs
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn route(id: u32, name: &str, ranges: &[&str]) -> OrgRoute {
        OrgRoute { id: OrgId(id), name: name.into(), ranges: ranges.iter().map(|r| r.parse().unwrap()).collect() }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_then_hostname_then_super_local() {
        let t = OrgTable::new(
            vec![route(3, "Acme", &["10.0.0.0/8", "2001:db8::/32"]), route(4, "Acme Lab", &["10.9.0.0/16"])],
            None,
        )
        .unwrap();
        assert_eq!(t.assign(ip("10.1.2.3"), None).name, "Acme");
        assert_eq!(t.assign(ip("10.9.2.3"), None).name, "Acme Lab");
        assert_eq!(t.assign(ip("2001:db8::7"), None).name, "Acme");
        assert_eq!(t.assign(ip("192.0.2.1"), None).name, "Super/Local");
        // A relay: the HOSTNAME decides when the reporter matches nothing.
        assert_eq!(t.assign(ip("127.0.0.1"), Some("10.9.0.1")).name, "Acme Lab");
        assert!(t.assign_how(ip("127.0.0.1"), Some("10.9.0.1")).1, "the HOSTNAME decided");
        assert!(!t.assign_how(ip("10.9.0.1"), Some("10.1.0.1")).1, "the reporter decided");
        assert_eq!(t.assign(ip("127.0.0.1"), Some("web-01")).name, "Super/Local");
        // A collector that belongs to an org takes everything for it.
        let t = OrgTable::new(vec![route(3, "Acme", &["10.0.0.0/8"]), route(4, "B", &[])], Some(OrgId(4))).unwrap();
        assert_eq!(t.assign(ip("10.1.2.3"), None).name, "B");
    }

    #[test]
    fn the_same_range_in_two_orgs_is_refused() {
        let e = OrgTable::new(vec![route(3, "A", &["10.0.0.0/8"]), route(4, "B", &["10.0.0.0/8"])], None);
        assert!(e.is_err_and(|e| e.to_string() == "10.0.0.0/8 is claimed by both A and B"));
    }
}
