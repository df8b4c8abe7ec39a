//! Query parameters, in one place: [`params_for`] says which parameters
//! each endpoint takes, of what type and range; a middleware ([`check`])
//! holds every request to that table before any handler runs, and the
//! OpenAPI document describes the parameters from the same table, so what
//! is documented and what is accepted cannot drift apart.
//!
//! Anything the table does not allow is a 400 naming the parameter: an
//! unknown parameter (on every endpoint, including those that take none),
//! one given twice, a missing required one, or a value of the wrong type,
//! out of range, not in the allowed set, or holding a control character.

use axum::extract::{FromRequestParts, MatchedPath, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::ApiError;
use crate::store::{MAX_LIMIT, SINGLE_LINE_PATTERN, rfc3339_ms};

/// What a parameter's value must be.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    /// A decimal integer in `min..=max`.
    Int { min: i64, max: i64 },
    /// `true` (the only value: a confirmation).
    True,
    /// `true` or `false`.
    Bool,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of at least one of these words.
    ListOf(&'static [&'static str]),
    /// Text of `min..=max` characters without control characters.
    Text { min: usize, max: usize },
    /// An RFC 3339 date and time with an offset.
    Time,
    /// A page cursor: `N:N` (two integers) or `N`, as lists hand them out.
    Cursor { pair: bool },
    /// An event page cursor: 16 hex digits, `.`, 16 hex digits.
    EventCursor,
    /// A duration: seconds, or a number with `s`, `m`, `h` or `d`.
    Interval,
    /// An IPv4 or IPv6 address, or a network (`10.0.0.0/8`).
    Cidr,
}

/// The pattern of [`Kind::EventCursor`].
pub(crate) const EVENT_CURSOR_PATTERN: &str = "^[0-9a-f]{16}\\.[0-9a-f]{16}$";
/// The pattern of [`Kind::Interval`].
pub(crate) const INTERVAL_PATTERN: &str = "^[1-9][0-9]{0,6}[smhd]?$";

/// Seconds in an interval as [`Kind::Interval`] writes it (`90`, `90s`,
/// `5m`, `1h`, `1d`); `None` if it is not one.
pub(crate) fn interval_secs(text: &str) -> Option<u64> {
    let (digits, unit) = match text.as_bytes().last()? {
        b's' => (&text[..text.len() - 1], 1),
        b'm' => (&text[..text.len() - 1], 60),
        b'h' => (&text[..text.len() - 1], 3_600),
        b'd' => (&text[..text.len() - 1], 86_400),
        _ => (text, 1),
    };
    if digits.is_empty() || digits.len() > 7 || digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(|n| n * unit)
}

/// One query parameter of an endpoint.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub description: &'static str,
}

const fn opt(name: &'static str, kind: Kind, description: &'static str) -> Param {
    Param { name, kind, required: false, description }
}

const ID: Kind = Kind::Int { min: 1, max: i64::MAX };
const STATUSES: &[&str] = &["open", "investigating", "resolved", "closed"];
const SEVERITIES: &[&str] = &["info", "low", "medium", "high", "critical"];
const SORTS: &[&str] = &[
    "last_seen",
    "-last_seen",
    "first_seen",
    "-first_seen",
    "created_at",
    "-created_at",
    "severity",
    "-severity",
    "count",
    "-count",
    "id",
    "-id",
];
const OBJECT_TYPES: &[&str] =
    &["org", "user", "team", "role", "token", "incident", "alert", "node", "device", "connector", "policy"];
const LIMIT: Kind = Kind::Int { min: 1, max: MAX_LIMIT };

/// The filters incident and alert lists and their counts share.
const RECORD_FILTERS: [Param; 8] = [
    opt("status", Kind::ListOf(STATUSES), "comma-separated statuses; any of them matches"),
    opt("severity", Kind::ListOf(SEVERITIES), "comma-separated severities; any of them matches"),
    opt("rule", Kind::Text { min: 1, max: 256 }, "a rule id"),
    opt("org", Kind::Text { min: 1, max: 128 }, "an org's id or name"),
    opt("since", Kind::Time, "last seen at or after this time"),
    opt("until", Kind::Time, "first seen before this time"),
    opt("q", Kind::Text { min: 0, max: 256 }, "text in the title (case-insensitive)"),
    opt("assignee", ID, "the assignee's user id"),
];

const RECORD_COUNTS: &[Param] = &RECORD_FILTERS;

const RECORD_LIST: &[Param] = &[
    RECORD_FILTERS[0],
    RECORD_FILTERS[1],
    RECORD_FILTERS[2],
    RECORD_FILTERS[3],
    RECORD_FILTERS[4],
    RECORD_FILTERS[5],
    RECORD_FILTERS[6],
    RECORD_FILTERS[7],
    opt("sort", Kind::OneOf(SORTS), "sort key; a leading - sorts descending (default -last_seen)"),
    opt("limit", LIMIT, "page size (default 50)"),
    opt("cursor", Kind::Cursor { pair: true }, "the previous page's next_cursor"),
];

const AUDIT: &[Param] = &[
    opt("object_type", Kind::OneOf(OBJECT_TYPES), "only entries about this kind of object"),
    opt("object_id", ID, "only entries about the object with this id"),
    opt("limit", LIMIT, "page size (default 100)"),
    opt("cursor", Kind::Cursor { pair: false }, "the previous page's next_cursor"),
];

/// The filters of the event list and its histogram.
const EVENT_FILTERS: [Param; 9] = [
    opt("from", Kind::Time, "events at or after this time (default: 24 hours before `to`)"),
    opt("to", Kind::Time, "events before this time (default: now)"),
    opt("org", Kind::Text { min: 1, max: 128 }, "an org's id or name (default: every org the caller sees)"),
    opt("event_type", Kind::Text { min: 1, max: 256 }, "the normalized event type, exactly"),
    opt("src_ip", Kind::Cidr, "a source address, or a network like 10.0.0.0/8"),
    opt("dst_ip", Kind::Cidr, "a destination address, or a network"),
    opt("user", Kind::Text { min: 1, max: 256 }, "the user name, exactly"),
    opt("host", Kind::Text { min: 1, max: 256 }, "the host name, exactly"),
    opt("text", Kind::Text { min: 1, max: 256 }, "text in the message (case-insensitive)"),
];

const EVENTS: &[Param] = &[
    EVENT_FILTERS[0],
    EVENT_FILTERS[1],
    EVENT_FILTERS[2],
    EVENT_FILTERS[3],
    EVENT_FILTERS[4],
    EVENT_FILTERS[5],
    EVENT_FILTERS[6],
    EVENT_FILTERS[7],
    EVENT_FILTERS[8],
    opt("limit", LIMIT, "page size (default 100)"),
    opt("cursor", Kind::EventCursor, "the previous page's next_cursor"),
];

const HISTOGRAM: &[Param] = &[
    EVENT_FILTERS[0],
    EVENT_FILTERS[1],
    EVENT_FILTERS[2],
    EVENT_FILTERS[3],
    EVENT_FILTERS[4],
    EVENT_FILTERS[5],
    EVENT_FILTERS[6],
    EVENT_FILTERS[7],
    EVENT_FILTERS[8],
    opt("interval", Kind::Interval, "bucket width: seconds, or with s, m, h or d (default: 1h)"),
];

const DEVICES: &[Param] = &[
    opt("org", Kind::Text { min: 1, max: 128 }, "an org's id or name"),
    opt("family", Kind::Text { min: 1, max: 128 }, "a device family (openssh, fortigate, ...), exactly"),
    opt("silent", Kind::Bool, "true: only silent devices; false: only those reporting"),
    opt("retired", Kind::Bool, "true: only retired devices; false: only watched ones"),
    opt("within_limit", Kind::Bool, "true: only devices within the licence's device limit; false: only those beyond"),
    opt("q", Kind::Text { min: 1, max: 256 }, "text in the identity, name or host names (case-insensitive)"),
    opt("limit", LIMIT, "page size (default 50)"),
    opt("cursor", Kind::Cursor { pair: false }, "the previous page's next_cursor"),
];

const PAGE: &[Param] = &[
    opt("limit", LIMIT, "page size (default 100)"),
    opt("cursor", Kind::Cursor { pair: false }, "the previous page's next_cursor"),
];

const DELIVERIES: &[Param] = &[
    opt("org", Kind::Text { min: 1, max: 128 }, "an org's id or name"),
    opt("state", Kind::OneOf(&["pending", "delivered", "failed", "dead"]), "only deliveries in this state"),
    opt("incident", Kind::Int { min: 1, max: i64::MAX }, "only deliveries of this incident"),
    opt("policy", Kind::Int { min: 1, max: i64::MAX }, "only deliveries this policy queued"),
    opt("limit", LIMIT, "page size (default 50)"),
    opt("cursor", Kind::Cursor { pair: false }, "the previous page's next_cursor"),
];

const DEVICE_SUMMARY: &[Param] = &[
    opt("org", Kind::Text { min: 1, max: 128 }, "an org's id or name"),
    opt("days", Kind::Int { min: 1, max: 400 }, "days counted back from today, UTC (default 7)"),
];

const DEBOARD: &[Param] = &[Param {
    name: "confirm",
    kind: Kind::True,
    required: true,
    description: "deboarding deletes the org and all its records irreversibly; true confirms it",
}];

/// The query parameters `method` on `path` (as in [`super::ROUTES`]) takes;
/// every other endpoint takes none.
pub(crate) fn params_for(method: &str, path: &str) -> &'static [Param] {
    match (method, path) {
        ("get" | "head", "/incidents" | "/alerts") => RECORD_LIST,
        ("get" | "head", "/incidents/counts" | "/alerts/counts") => RECORD_COUNTS,
        ("get" | "head", "/audit") => AUDIT,
        ("get" | "head", "/events") => EVENTS,
        ("get" | "head", "/events/histogram") => HISTOGRAM,
        ("delete", "/orgs/{id}") => DEBOARD,
        ("get" | "head", "/devices") => DEVICES,
        ("get" | "head", "/devices/summary") => DEVICE_SUMMARY,
        ("get" | "head", "/deliveries") => DELIVERIES,
        ("get" | "head", "/connectors" | "/policies") => PAGE,
        _ => &[],
    }
}

fn bad(name: &str, message: String) -> ApiError {
    ApiError { field: Some(name.to_owned()), ..ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message) }
}

/// Whether `s` is a decimal integer as the cursor pattern allows: an
/// optional `-` (when `signed`) and 1–18 digits, so it always fits an i64.
fn cursor_number(s: &str, signed: bool) -> bool {
    let digits = if signed { s.strip_prefix('-').unwrap_or(s) } else { s };
    (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The value of `param` as the handler will see it, or why it is refused.
fn check_value(param: &Param, value: &str) -> Result<Value, ApiError> {
    let name = param.name;
    if value.chars().any(char::is_control) {
        return Err(bad(name, format!("query parameter `{name}` must not contain control characters")));
    }
    match param.kind {
        Kind::Int { min, max } => match value.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) && !value.starts_with('+') => Ok(json!(n)),
            _ => Err(bad(name, format!("query parameter `{name}` must be an integer from {min} to {max}"))),
        },
        Kind::Bool => match value {
            "true" => Ok(json!(true)),
            "false" => Ok(json!(false)),
            _ => Err(bad(name, format!("query parameter `{name}` must be true or false"))),
        },
        Kind::True => match value {
            "true" => Ok(json!(true)),
            _ => Err(bad(name, format!("query parameter `{name}` must be true: send {name}=true"))),
        },
        Kind::OneOf(words) => match words.contains(&value) {
            true => Ok(json!(value)),
            false => Err(bad(name, format!("query parameter `{name}`: {value:?} is not one of {}", words.join(", ")))),
        },
        Kind::ListOf(words) => match value.split(',').find(|w| !words.contains(w)) {
            None => Ok(json!(value)),
            Some(w) => Err(bad(
                name,
                format!("query parameter `{name}`: {w:?} is not one of {} (a comma-separated list)", words.join(", ")),
            )),
        },
        Kind::Text { min, max } => {
            let n = value.chars().count();
            if (min..=max).contains(&n) {
                Ok(json!(value))
            } else {
                Err(bad(name, format!("query parameter `{name}` must be {min} to {max} characters; it is {n}")))
            }
        }
        Kind::Time => match rfc3339_ms(value) {
            Some(_) => Ok(json!(value)),
            None => Err(bad(
                name,
                format!("query parameter `{name}`: {value:?} is not an RFC 3339 time (e.g. 2026-11-22T10:15:42Z)"),
            )),
        },
        Kind::Cursor { pair } => {
            let ok = match (pair, value.split_once(':')) {
                (true, Some((v, id))) => cursor_number(v, true) && cursor_number(id, false),
                (false, None) => cursor_number(value, false),
                _ => false,
            };
            match ok {
                true => Ok(json!(value)),
                false => Err(bad(name, format!("query parameter `{name}` is not a cursor from this list"))),
            }
        }
        Kind::EventCursor => {
            let hex = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let ok = value.split_once('.').is_some_and(|(t, id)| hex(t) && hex(id));
            match ok {
                true => Ok(json!(value)),
                false => Err(bad(name, format!("query parameter `{name}` is not a cursor from this list"))),
            }
        }
        Kind::Cidr => match crate::store::text_is_cidr(value) {
            true => Ok(json!(value)),
            false => Err(bad(
                name,
                format!("query parameter `{name}`: {value:?} is not an address or a network like 10.0.0.0/8"),
            )),
        },
        Kind::Interval => match interval_secs(value) {
            Some(_) => Ok(json!(value)),
            None => Err(bad(
                name,
                format!("query parameter `{name}`: {value:?} is not an interval like 90, 30s, 5m, 1h or 1d"),
            )),
        },
    }
}

/// Checks a query string against `params`: the named, typed values.
pub(crate) fn validate(params: &[Param], query: Option<&str>) -> Result<Map<String, Value>, ApiError> {
    let pairs = match query {
        Some(q) => {
            Query::<Vec<(String, String)>>::try_from_uri(&format!("/?{q}").parse().map_err(|_| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "the query string cannot be decoded")
            })?)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "the query string cannot be decoded"))?
            .0
        }
        None => Vec::new(),
    };
    let mut out = Map::new();
    for (name, value) in pairs {
        let Some(param) = params.iter().find(|p| p.name == name) else {
            let accepted = match params.len() {
                0 => "this endpoint takes no query parameters".to_owned(),
                _ => format!("this endpoint takes {}", params.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")),
            };
            let shown: String = name.chars().take(64).flat_map(char::escape_debug).collect();
            return Err(bad(&shown, format!("unknown query parameter `{shown}`; {accepted}")));
        };
        if out.contains_key(&name) {
            return Err(bad(param.name, format!("query parameter `{name}` is given more than once")));
        }
        out.insert(name, check_value(param, &value)?);
    }
    if let Some(missing) = params.iter().find(|p| p.required && !out.contains_key(p.name)) {
        let name = missing.name;
        let hint = match missing.kind {
            Kind::True => format!("send {name}=true; "),
            _ => String::new(),
        };
        return Err(bad(name, format!("query parameter `{name}` is required: {hint}{}", missing.description)));
    }
    Ok(out)
}

/// A request's query, checked by [`check`].
#[derive(Clone, Debug)]
struct Checked(Map<String, Value>);

/// The middleware: refuses a request whose query string its endpoint does
/// not take, before authentication and before the handler.
pub(crate) async fn check(mut req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_ascii_lowercase();
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let path = path.strip_prefix("/api/v1").unwrap_or(&path);
    match validate(params_for(&method, path), req.uri().query()) {
        Ok(values) => {
            req.extensions_mut().insert(Checked(values));
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Query parameters, as [`check`] let them through, deserialized.
pub(crate) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(Checked(values)) = parts.extensions.get::<Checked>() else {
            // A route outside the checked router: a wiring mistake, never
            // the caller's.
            eprintln!("vigil api: query parameters read on a route the query check does not cover");
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error"));
        };
        serde_json::from_value(Value::Object(values.clone()))
            .map(Params)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("query: {e}")))
    }
}

/// The OpenAPI parameter objects of `method` on `path`.
pub(crate) fn openapi(method: &str, path: &str) -> Vec<Value> {
    params_for(method, path)
        .iter()
        .map(|p| {
            let mut out =
                json!({ "name": p.name, "in": "query", "required": p.required, "description": p.description });
            out["schema"] = match p.kind {
                Kind::Int { min, max } => {
                    json!({ "type": "integer", "format": "int64", "minimum": min, "maximum": max })
                }
                Kind::True => json!({ "type": "boolean", "enum": [true] }),
                Kind::Bool => json!({ "type": "boolean" }),
                Kind::OneOf(words) => json!({ "type": "string", "enum": words }),
                Kind::ListOf(words) => {
                    out["style"] = json!("form");
                    out["explode"] = json!(false);
                    json!({ "type": "array", "minItems": 1, "items": { "type": "string", "enum": words } })
                }
                Kind::Text { min, max } => json!({ "type": "string", "minLength": min, "maxLength": max,
                    "pattern": SINGLE_LINE_PATTERN }),
                Kind::Time => json!({ "type": "string", "format": "date-time" }),
                Kind::Cursor { pair: true } => json!({ "type": "string", "pattern": "^-?[0-9]{1,18}:[0-9]{1,18}$" }),
                Kind::Cursor { pair: false } => json!({ "type": "string", "pattern": "^[0-9]{1,18}$" }),
                Kind::EventCursor => json!({ "type": "string", "pattern": EVENT_CURSOR_PATTERN }),
                Kind::Interval => json!({ "type": "string", "pattern": INTERVAL_PATTERN }),
                Kind::Cidr => json!({ "type": "string", "pattern": crate::store::CIDR_PATTERN }),
            };
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<Map<String, Value>, ApiError>) -> Option<String> {
        r.err().and_then(|e| e.field)
    }

    #[test]
    fn values_are_typed_and_checked() {
        let q = validate(RECORD_LIST, Some("limit=5&status=open,closed&since=2026-11-22T10:15:42.5%2B01:00"));
        let q = q.unwrap_or_default();
        assert_eq!(q["limit"], json!(5));
        assert_eq!(q["status"], json!("open,closed"));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-5",
            "limit=%2B5",
            "limit=5x",
            "status=",
            "status=open,",
            "status=open,%20closed",
            "sort=title",
            "since=yesterday",
            "since=2026-02-30T00:00:00Z",
            "cursor=1",
            "cursor=1:-2",
            "cursor=1234567890123456789:1",
            "q=a%00b",
            "rule=",
            "assignee=0",
        ] {
            let name = bad.split('=').next().unwrap_or_default().to_owned();
            assert_eq!(field(validate(RECORD_LIST, Some(bad))), Some(name), "{bad}");
        }
        assert_eq!(field(validate(RECORD_LIST, Some("limit=1&limit=2"))).as_deref(), Some("limit"));
        assert_eq!(field(validate(&[], Some("bogus=1"))).as_deref(), Some("bogus"));
        assert_eq!(field(validate(DEBOARD, None)).as_deref(), Some("confirm"));
        assert_eq!(field(validate(DEBOARD, Some("confirm=false"))).as_deref(), Some("confirm"));
        assert!(validate(DEBOARD, Some("confirm=true")).is_ok());
        assert!(validate(AUDIT, Some("cursor=17&object_type=incident")).is_ok());
        assert!(validate(EVENTS, Some("cursor=18ed6a5e3c2f0000.ffffffffffffffff&src_ip=10.0.0.0/8")).is_ok());
        for bad in [
            "cursor=1.2",
            "cursor=18ed6a5e3c2f0000.FFFFFFFFFFFFFFFF",
            "cursor=18ed6a5e3c2f0000.fffffffffffffff",
            "limit=1001",
        ] {
            let name = bad.split('=').next().unwrap_or_default().to_owned();
            assert_eq!(field(validate(EVENTS, Some(bad))), Some(name), "{bad}");
        }
        for (text, secs) in
            [("90", Some(90)), ("30s", Some(30)), ("5m", Some(300)), ("1h", Some(3600)), ("2d", Some(172_800))]
        {
            assert_eq!(interval_secs(text), secs, "{text}");
        }
        for bad in ["", "0", "05m", "m", "1w", "1.5h", "-1", "12345678"] {
            assert_eq!(interval_secs(bad), None, "{bad}");
            assert!(validate(HISTOGRAM, Some(&format!("interval={bad}"))).is_err(), "{bad}");
        }
    }
}
