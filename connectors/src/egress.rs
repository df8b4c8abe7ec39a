//! The egress guard. Connectors are configured by tenant admins, and the SIEM usually
//! sits inside a trusted network: without a guard a connector is a way to make the
//! server call its own admin APIs, a database, or the cloud metadata service (SSRF).
//!
//! The check runs on the *resolved* addresses at send time and the connection goes to
//! the address that was checked, so a DNS answer that changes between check and
//! connect (rebinding) cannot slip past it. If any address of a name is forbidden the
//! whole name is refused: a name that mixes public and private answers is suspicious.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::{Outcome, Settings};

/// The egress guard: loopback, unspecified, link-local (incl. 169.254.169.254 metadata),
/// private (10/8, 172.16/12, 192.168/16), CGNAT 100.64/10, unique-local fc00::/7,
/// IPv4-mapped/compatible forms of those, multicast, broadcast, documentation ranges,
/// fd00:ec2::254 — refused unless allowed.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 // "this network", incl. 0.0.0.0 (reaches the local host on Linux)
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT, also used by some clouds internally
        || (a == 169 && b == 254) // link-local: the metadata service lives here
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224 // multicast, reserved, broadcast
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Forms that carry an IPv4 address: judge the address they lead to.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated) plus :: and ::1.
        return ip.is_unspecified() || ip.is_loopback() || forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 well-known prefix 64:ff9b::/96; 64:ff9b:1::/48 is for local use.
        return s[2] != 0 || forbidden_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: the IPv4 address sits in bits 16..48.
        return forbidden_v4(embedded(s[1], s[2]));
    }
    if s[0] == 0x2001 && s[1] == 0 {
        // Teredo: the client's IPv4 address is the inverted last 32 bits.
        return forbidden_v4(embedded(!s[6], !s[7]));
    }
    (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. AWS's fd00:ec2::254)
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated, still routed internally)
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] & 0xfff0) == 0x3ff0 // documentation 3fff::/20
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
}

fn embedded(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// The refusal text, shared so every connector says the same thing.
pub(crate) fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "target {host} resolves to {ip}, a private/loopback/link-local address; \
         set [connectors] allow_private_targets = true to allow it"
    )
}

/// Resolves `host` and returns the address to connect to, or the outcome to report:
/// `Failed` for a refused address (configuration will not change by itself), `Retry`
/// for a resolution failure (DNS is often transient).
pub(crate) async fn resolve(host: &str, port: u16, settings: Settings) -> Result<SocketAddr, Outcome> {
    // An IPv6 literal comes bracketed from URLs; lookup_host wants it bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => match tokio::net::lookup_host((bare, port)).await {
            Ok(it) => it.collect(),
            Err(e) => return Err(Outcome::retry(format!("cannot resolve {host}: {e}"))),
        },
    };
    let Some(first) = addrs.first().copied() else {
        return Err(Outcome::retry(format!("cannot resolve {host}: no addresses")));
    };
    if !settings.allow_private_targets
        && let Some(bad) = addrs.iter().find(|a| is_forbidden_ip(a.ip()))
    {
        return Err(Outcome::failed(refusal(host, bad.ip())));
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_table() {
        let forbidden = [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "fec0::1",
        ];
        for s in forbidden {
            assert!(is_forbidden_ip(ip(s)), "{s} should be forbidden");
        }
        let allowed = [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "169.253.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        for s in allowed {
            assert!(!is_forbidden_ip(ip(s)), "{s} should be allowed");
        }
    }

    #[tokio::test]
    async fn resolve_refuses_loopback_unless_allowed() {
        let refused = resolve("127.0.0.1", 80, Settings::default()).await.unwrap_err();
        let Outcome::Failed { error, .. } = refused else { panic!("{refused:?}") };
        assert!(error.contains("target 127.0.0.1 resolves to 127.0.0.1"), "{error}");
        assert!(error.contains("allow_private_targets = true"), "{error}");
        let localhost = resolve("localhost", 80, Settings::default()).await.unwrap_err();
        assert_eq!(localhost.as_str(), "failed");
        let ok = resolve("[::1]", 80, Settings { allow_private_targets: true }).await.unwrap();
        assert_eq!(ok, "[::1]:80".parse().unwrap());
    }
}
