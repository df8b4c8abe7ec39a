//! Address ranges (`10.1.0.0/16`, `2001:db8::/32`): what org IP ranges,
//! rule CIDR filters and org maps are written in.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`)
/// are treated as the IPv4 address they carry, on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    v4: bool,
    /// The network address, host bits cleared; IPv4 in the low 32 bits.
    bits: u128,
    prefix: u8,
}

fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    }
}

fn mask(v4: bool, bits: u128, prefix: u8) -> u128 {
    let width: u32 = if v4 { 32 } else { 128 };
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return 0;
    }
    let full: u128 = if v4 { u128::from(u32::MAX) } else { u128::MAX };
    bits & (full << (width - prefix)) & full
}

impl Network {
    /// The network of `addr` with `prefix` bits (host bits are cleared);
    /// `None` if the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Network> {
        let (v4, bits) = ip_bits(addr);
        let width = if v4 { 32 } else { 128 };
        // A mapped IPv4 address written with an IPv6 prefix.
        let prefix = match (addr, v4) {
            (IpAddr::V6(_), true) if prefix >= 96 => prefix - 96,
            _ => prefix,
        };
        (prefix <= width).then(|| Network { v4, bits: mask(v4, bits, prefix), prefix })
    }

    /// Whether `ip` is in the network.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v4, bits) = ip_bits(ip);
        v4 == self.v4 && mask(v4, bits, self.prefix) == self.bits
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether this is an IPv4 network.
    pub fn is_ipv4(&self) -> bool {
        self.v4
    }

    /// The network's address bits (IPv4 in the low 32 bits), host bits
    /// cleared; with [`Network::key_of`], for hashing many networks of
    /// one prefix length.
    pub fn bits(&self) -> u128 {
        self.bits
    }

    /// What [`Network::bits`] would be for `ip` in a network like this one
    /// (same family and prefix), or `None` for the other family.
    #[inline]
    pub fn key_of(&self, ip: IpAddr) -> Option<u128> {
        let (v4, bits) = ip_bits(ip);
        (v4 == self.v4).then(|| mask(v4, bits, self.prefix))
    }
}

/// Why text is not a network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    /// The address part is not an IP address.
    #[error("'{0}' is not an address range like 10.0.0.0/8")]
    Address(String),
    /// The prefix length is not a number within the address width.
    #[error("bad prefix length in '{0}': it must be 0 to 32 for IPv4, 0 to 128 for IPv6")]
    Prefix(String),
}

impl FromStr for Network {
    type Err = NetworkError;

    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
    fn from_str(text: &str) -> Result<Network, NetworkError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let ip: IpAddr = addr.trim().parse().map_err(|_| NetworkError::Address(text.to_owned()))?;
        let prefix = match prefix {
            None if ip_bits(ip).0 => 32,
            None => 128,
            Some(p) => p.trim().parse::<u8>().map_err(|_| NetworkError::Prefix(text.to_owned()))?,
        };
        Network::new(ip, prefix).ok_or_else(|| NetworkError::Prefix(text.to_owned()))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v4 {
            let addr = std::net::Ipv4Addr::from(u32::try_from(self.bits).unwrap_or(0));
            write!(f, "{addr}/{}", self.prefix)
        } else {
            write!(f, "{}/{}", std::net::Ipv6Addr::from(self.bits), self.prefix)
        }
    }
}

/// A server URL fit for messages and logs: a password in it becomes
/// `***` (`postgres://vigil:***@db/vigil`), and so does a lone token
/// where NATS takes one (`nats://***@host:4222`); a lone user name of
/// other schemes stays.
pub fn redact_url(url: &str) -> String {
    let (Some(scheme), Some(at)) = (url.find("://"), url.rfind('@')) else { return url.to_owned() };
    if at < scheme {
        return url.to_owned();
    }
    let (head, userinfo, tail) = (&url[..scheme + 3], &url[scheme + 3..at], &url[at..]);
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{head}{user}:***{tail}"),
        None if matches!(&url[..scheme], "nats" | "tls" | "ws" | "wss") => format!("{head}***{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_secrets() {
        assert_eq!(redact_url("postgres://vigil:s3cret@db:5432/vigil"), "postgres://vigil:***@db:5432/vigil");
        assert_eq!(redact_url("postgres://vigil@db/vigil"), "postgres://vigil@db/vigil");
        assert_eq!(redact_url("nats://t0ken@10.0.0.5:4222"), "nats://***@10.0.0.5:4222");
        assert_eq!(redact_url("nats://a:b@h:4222"), "nats://a:***@h:4222");
        assert_eq!(redact_url("sqlite://data/vigil.db?mode=rwc"), "sqlite://data/vigil.db?mode=rwc");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_contain_and_display() {
        let net: Network = "10.1.2.3/16".parse().unwrap();
        assert_eq!(net.to_string(), "10.1.0.0/16");
        assert!(net.contains(ip("10.1.200.7")));
        assert!(net.contains(ip("::ffff:10.1.0.1")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(!net.contains(ip("2001:db8::1")));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        let host: Network = "192.0.2.7".parse().unwrap();
        assert_eq!((host.prefix(), host.contains(ip("192.0.2.7")), host.contains(ip("192.0.2.8"))), (32, true, false));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        let mapped: Network = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
        let mapped_host: Network = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(mapped_host.to_string(), "10.0.0.1/32");
        assert_eq!(net.key_of(ip("10.1.9.9")), Some(net.bits()));
        assert_eq!(net.key_of(ip("::2")), None);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!("10.0.0.0/33".parse::<Network>(), Err(NetworkError::Prefix("10.0.0.0/33".into())));
        assert_eq!("::/129".parse::<Network>(), Err(NetworkError::Prefix("::/129".into())));
        assert_eq!("web/8".parse::<Network>(), Err(NetworkError::Address("web/8".into())));
        assert!("10.0.0.0/x".parse::<Network>().unwrap_err().to_string().contains("bad prefix length"));
    }
}
