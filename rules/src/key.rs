//! Values that group, join and watch-list state is keyed by.

use std::fmt;
use std::net::IpAddr;

use parsers::Str;

use crate::field::Value;

/// One field value inside a state key. Addresses and integers are kept in
/// binary form, so keys are compared and hashed without formatting.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Part {
    Text(Str),
    Ip(IpAddr),
    Int(i64),
    /// A non-integer number, by its bits.
    Float(u64),
}

impl Part {
    /// The value as a key part, as the field holds it.
    #[inline]
    pub fn of(value: Value<'_>) -> Part {
        match value {
            Value::Text(t) => Part::Text(Str::from(t)),
            Value::Ip(ip) => Part::Ip(ip.to_canonical()),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Part::Int(n as i64),
            Value::Num(n) => Part::Float(n.to_bits()),
        }
    }

    /// The value as a key part with text that spells an address read as
    /// that address, so a watch list filled from `src_ip` matches an
    /// `ext.src` text field holding the same address.
    pub fn normalized(value: Value<'_>) -> Part {
        if let Value::Text(t) = value
            && let Ok(ip) = t.trim().parse::<IpAddr>()
        {
            return Part::Ip(ip.to_canonical());
        }
        Part::of(value)
    }

    /// Heap bytes this part owns beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Part::Text(s) if s.is_heap_allocated() => s.capacity(),
            _ => 0,
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Part::Text(s) => f.write_str(s),
            Part::Ip(ip) => write!(f, "{ip}"),
            Part::Int(i) => write!(f, "{i}"),
            Part::Float(bits) => write!(f, "{}", f64::from_bits(*bits)),
        }
    }
}

/// The values of a pattern's `group_by` (or a rule's `join`) fields, in
/// order. One field, the common case, needs no allocation of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    /// No fields: one state for the whole org.
    Unit,
    One(Part),
    Many(Box<[Part]>),
}

impl Key {
    pub fn parts(&self) -> &[Part] {
        match self {
            Key::Unit => &[],
            Key::One(p) => std::slice::from_ref(p),
            Key::Many(parts) => parts,
        }
    }

    /// Heap bytes this key owns beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Key::Unit => 0,
            Key::One(p) => p.heap_bytes(),
            Key::Many(parts) => parts.iter().map(|p| std::mem::size_of::<Part>() + p.heap_bytes()).sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_normalize_addresses_and_integers() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(Part::normalized(Value::Text(" 10.0.0.1")), Part::Ip(ip));
        assert_eq!(Part::of(Value::Text("10.0.0.1")), Part::Text("10.0.0.1".into()));
        assert_eq!(Part::of(Value::Num(22.0)), Part::Int(22));
        assert_eq!(Part::of(Value::Num(0.5)).to_string(), "0.5");
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Part::of(Value::Ip(mapped)), Part::Ip(ip));
        assert_eq!(Key::One(Part::Int(1)).parts(), &[Part::Int(1)]);
        assert_eq!(Key::Unit.parts(), &[]);
    }
}
