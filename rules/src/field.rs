//! Event fields as rules name them (the SPEC §2 names, `ext.<key>` and
//! `sd.<id>.<param>`), resolved once at compile time so evaluation is a
//! match on an enum, not a string lookup.

use std::fmt;
use std::net::IpAddr;

use parsers::{Event, Str};

/// A field of an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// `org`: the organization's name.
    Org,
    /// `collector`.
    Collector,
    /// `reporter_ip`.
    ReporterIp,
    /// `format`.
    Format,
    /// `facility`.
    Facility,
    /// `severity` (syslog).
    Severity,
    /// `host`.
    Host,
    /// `app`.
    App,
    /// `procid`.
    Procid,
    /// `msgid`.
    Msgid,
    /// `message`.
    Message,
    /// `vendor`.
    Vendor,
    /// `product`.
    Product,
    /// `product_version`.
    ProductVersion,
    /// `signature_id`.
    SignatureId,
    /// `name`.
    Name,
    /// `cef_severity`.
    CefSeverity,
    /// `event_type`.
    EventType,
    /// `src_ip`.
    SrcIp,
    /// `src_port`.
    SrcPort,
    /// `dst_ip`.
    DstIp,
    /// `dst_port`.
    DstPort,
    /// `user`.
    User,
    /// `action`.
    Action,
    /// `outcome`.
    Outcome,
    /// `parse_error`.
    ParseError,
    /// `time`: the event time, as seconds since the epoch (for the
    /// time-part tests `minute hour day week month year`, in UTC).
    Time,
    /// `ext.<key>`.
    Ext(Str),
    /// `sd.<id>.<param>`.
    Sd(Str, Str),
}

/// What kind of values a field holds, for type checks at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// Text.
    Text,
    /// An IP address.
    Ip,
    /// A number.
    Number,
    /// Text that may hold numbers or addresses (`ext`, `sd`).
    Any,
}

/// A field's value in one event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    /// Text.
    Text(&'a str),
    /// An address.
    Ip(IpAddr),
    /// A number.
    Num(f64),
}

impl Value<'_> {
    /// The value as a number, if it is one (text is parsed).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Text(t) => t.trim().parse().ok(),
            Value::Ip(_) => None,
        }
    }

    /// The value as an address, if it is one (text is parsed).
    pub fn as_ip(&self) -> Option<IpAddr> {
        match self {
            Value::Ip(ip) => Some(*ip),
            Value::Text(t) => t.trim().parse().ok(),
            Value::Num(_) => None,
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(t) => f.write_str(t),
            Value::Ip(ip) => write!(f, "{ip}"),
            Value::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{}", *n as i64),
            Value::Num(n) => write!(f, "{n}"),
        }
    }
}

impl Field {
    /// The names of the fixed fields (for suggestions).
    pub const NAMES: [&'static str; 27] = [
        "org",
        "collector",
        "reporter_ip",
        "format",
        "facility",
        "severity",
        "host",
        "app",
        "procid",
        "msgid",
        "message",
        "vendor",
        "product",
        "product_version",
        "signature_id",
        "name",
        "cef_severity",
        "event_type",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "user",
        "action",
        "outcome",
        "parse_error",
        "time",
    ];

    /// Resolves a field name as rules write it.
    pub fn parse(name: &str) -> Option<Field> {
        Some(match name {
            "org" => Field::Org,
            "collector" => Field::Collector,
            "reporter_ip" => Field::ReporterIp,
            "format" => Field::Format,
            "facility" => Field::Facility,
            "severity" => Field::Severity,
            "host" => Field::Host,
            "app" => Field::App,
            "procid" => Field::Procid,
            "msgid" => Field::Msgid,
            "message" => Field::Message,
            "vendor" => Field::Vendor,
            "product" => Field::Product,
            "product_version" => Field::ProductVersion,
            "signature_id" => Field::SignatureId,
            "name" => Field::Name,
            "cef_severity" => Field::CefSeverity,
            "event_type" => Field::EventType,
            "src_ip" => Field::SrcIp,
            "src_port" => Field::SrcPort,
            "dst_ip" => Field::DstIp,
            "dst_port" => Field::DstPort,
            "user" => Field::User,
            "action" => Field::Action,
            "outcome" => Field::Outcome,
            "parse_error" => Field::ParseError,
            "time" => Field::Time,
            _ => {
                if let Some(key) = name.strip_prefix("ext.").filter(|k| !k.is_empty()) {
                    return Some(Field::Ext(Str::from(key)));
                }
                let rest = name.strip_prefix("sd.")?;
                let (id, param) = rest.rsplit_once('.')?;
                if id.is_empty() || param.is_empty() {
                    return None;
                }
                return Some(Field::Sd(Str::from(id), Str::from(param)));
            }
        })
    }

    /// The kind of values this field holds.
    pub fn field_type(&self) -> FieldType {
        match self {
            Field::ReporterIp | Field::SrcIp | Field::DstIp => FieldType::Ip,
            Field::Facility | Field::Severity | Field::SrcPort | Field::DstPort | Field::Time => FieldType::Number,
            Field::Ext(_) | Field::Sd(..) => FieldType::Any,
            _ => FieldType::Text,
        }
    }

    /// The field's value in `event`, if present.
    #[inline]
    pub fn get<'a>(&self, event: &'a Event) -> Option<Value<'a>> {
        let text = |s: &'a Option<Str>| s.as_deref().map(Value::Text);
        match self {
            Field::EventType => text(&event.event_type),
            Field::SrcIp => event.src_ip.map(Value::Ip),
            Field::DstIp => event.dst_ip.map(Value::Ip),
            Field::User => text(&event.user),
            Field::SrcPort => event.src_port.map(|p| Value::Num(f64::from(p))),
            Field::DstPort => event.dst_port.map(|p| Value::Num(f64::from(p))),
            Field::Action => text(&event.action),
            Field::Outcome => text(&event.outcome),
            Field::Host => text(&event.host),
            Field::App => text(&event.app),
            Field::Message => text(&event.message),
            Field::Org => text(&event.org),
            Field::Collector => text(&event.collector),
            Field::ReporterIp => event.reporter_ip.map(Value::Ip),
            Field::Format => Some(Value::Text(event.format.as_str())),
            Field::Facility => event.facility.map(|v| Value::Num(f64::from(v))),
            Field::Severity => event.severity.map(|v| Value::Num(f64::from(v))),
            Field::Procid => text(&event.procid),
            Field::Msgid => text(&event.msgid),
            Field::Vendor => text(&event.vendor),
            Field::Product => text(&event.product),
            Field::ProductVersion => text(&event.product_version),
            Field::SignatureId => text(&event.signature_id),
            Field::Name => text(&event.name),
            Field::CefSeverity => text(&event.cef_severity),
            Field::ParseError => text(&event.parse_error),
            Field::Time => Some(Value::Num(event.time.unix_secs() as f64)),
            Field::Ext(key) => event.ext_get(key).map(Value::Text),
            Field::Sd(id, param) => event.sd.get(id, param).map(Value::Text),
        }
    }

    /// Writes `value` into `event` as this field (for the events that
    /// incidents feed back to nested rules). Fields without a place in the
    /// event model go to `ext`.
    pub fn set(&self, event: &mut Event, value: &str) {
        let text = Some(Str::from(value));
        match self {
            Field::SrcIp => event.src_ip = value.parse().ok(),
            Field::DstIp => event.dst_ip = value.parse().ok(),
            Field::SrcPort => event.src_port = value.parse().ok(),
            Field::DstPort => event.dst_port = value.parse().ok(),
            Field::User => event.user = text,
            Field::Host => event.host = text,
            Field::App => event.app = text,
            Field::Action => event.action = text,
            Field::Outcome => event.outcome = text,
            Field::Collector => event.collector = text,
            Field::ReporterIp => event.reporter_ip = value.parse().ok(),
            // A fed-back incident keeps the time of its hit.
            Field::Time => {}
            other => event.ext.push(&other.to_string(), value),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Field::Org => "org",
            Field::Collector => "collector",
            Field::ReporterIp => "reporter_ip",
            Field::Format => "format",
            Field::Facility => "facility",
            Field::Severity => "severity",
            Field::Host => "host",
            Field::App => "app",
            Field::Procid => "procid",
            Field::Msgid => "msgid",
            Field::Message => "message",
            Field::Vendor => "vendor",
            Field::Product => "product",
            Field::ProductVersion => "product_version",
            Field::SignatureId => "signature_id",
            Field::Name => "name",
            Field::CefSeverity => "cef_severity",
            Field::EventType => "event_type",
            Field::SrcIp => "src_ip",
            Field::SrcPort => "src_port",
            Field::DstIp => "dst_ip",
            Field::DstPort => "dst_port",
            Field::User => "user",
            Field::Action => "action",
            Field::Outcome => "outcome",
            Field::ParseError => "parse_error",
            Field::Time => "time",
            Field::Ext(k) => return write!(f, "ext.{k}"),
            Field::Sd(id, p) => return write!(f, "sd.{id}.{p}"),
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["src_ip", "event_type", "ext.policyid", "sd.origin.ip", "sd.exampleSDID@32473.iut"] {
            assert_eq!(Field::parse(name).unwrap().to_string(), name);
        }
        assert_eq!(Field::parse("sd.meta"), None);
        assert_eq!(Field::parse("ext."), None);
        assert_eq!(Field::parse("srcip"), None);
    }
}
