//! Event search over the stored Parquet: `POST /search` (one read-only
//! SQL query), `GET /events` (filters, newest first, keyset pages),
//! `GET /events/histogram`, and `GET /incidents/{id}/events` (an
//! incident's contributing events). The store decides which orgs' events a
//! caller sees ([`Store::event_orgs`]); the searcher lists only their
//! files.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use search::{Cursor, EventFilter, SearchError, Searcher, SqlQuery, TimeRange};
use serde::Deserialize;

use super::query::{Params, interval_secs};
use super::{ApiError, ApiResult, Body, Caller, Id, ok};
use crate::store::{Kind, OrgRef, Store};

/// The searcher the API uses (`None`: this server keeps no events).
#[derive(Clone)]
pub(crate) struct SearchHandle(pub Option<Searcher>);

impl SearchHandle {
    fn get(&self) -> ApiResult<&Searcher> {
        self.0.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "this server has no event store to search (start it with a data directory)",
            )
        })
    }
}

/// Rows a SQL answer holds unless the request says otherwise.
const DEFAULT_SQL_ROWS: usize = 1_000;
/// Events a page holds unless the request says otherwise.
const DEFAULT_PAGE: usize = 100;
/// The time range when none is given: the last day.
const DEFAULT_RANGE_NS: i64 = 86_400 * 1_000_000_000;
/// How far around an incident's first and last hit its events are looked
/// for: event times may trail or lead the correlation times by the
/// allowed lateness and the clamp on future stamps.
const INCIDENT_MARGIN_NS: i64 = 86_400 * 1_000_000_000;

/// `POST /search`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchBody {
    sql: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
}

/// `GET /events` and `GET /events/histogram`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    from: Option<String>,
    to: Option<String>,
    org: Option<String>,
    event_type: Option<String>,
    src_ip: Option<String>,
    dst_ip: Option<String>,
    user: Option<String>,
    host: Option<String>,
    text: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    interval: Option<String>,
}

impl EventsQuery {
    fn filter(&self) -> EventFilter {
        EventFilter {
            event_type: self.event_type.clone(),
            src_ip: self.src_ip.clone(),
            dst_ip: self.dst_ip.clone(),
            user: self.user.clone(),
            host: self.host.clone(),
            text: self.text.clone(),
        }
    }

    fn org(&self) -> Option<OrgRef> {
        self.org.as_deref().map(|o| match o.parse::<i64>() {
            Ok(id) => OrgRef::Id(id),
            Err(_) => OrgRef::Name(o.to_owned()),
        })
    }
}

pub(crate) fn routes() -> Router<Arc<Store>> {
    Router::new()
        .route("/search", post(sql))
        .route("/events", get(events))
        .route("/events/histogram", get(histogram))
        .route("/incidents/{id}/events", get(incident_events))
}

async fn sql(
    State(s): State<Arc<Store>>,
    Caller(c): Caller,
    Extension(h): Extension<SearchHandle>,
    Body(b): Body<SearchBody>,
) -> ApiResult<Response> {
    let searcher = h.get()?;
    let max = searcher.config().max_rows;
    let limit = match b.limit {
        None => DEFAULT_SQL_ROWS.min(max),
        Some(n) if n >= 1 && n <= max as u64 => n as usize,
        Some(_) => return Err(field("limit", format!("`limit` must be 1 to {max}"))),
    };
    if b.sql.len() > search::MAX_SQL_BYTES {
        return Err(field("sql", format!("`sql` is longer than {} bytes", search::MAX_SQL_BYTES)));
    }
    let range = range(&s, b.from.as_deref(), b.to.as_deref())?;
    let orgs = s.event_orgs(&c, None).await?;
    let answer = searcher.sql(&orgs, &SqlQuery { sql: b.sql, range, limit }).await.map_err(refused("sql"))?;
    Ok(ok(answer))
}

async fn events(
    State(s): State<Arc<Store>>,
    Caller(c): Caller,
    Extension(h): Extension<SearchHandle>,
    Params(q): Params<EventsQuery>,
) -> ApiResult<Response> {
    let cursor = q.cursor.as_deref().map(Cursor::decode).transpose().map_err(refused("cursor"))?;
    let (searcher, range, orgs) = filtered(&s, &c, &h, &q).await?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    let page = searcher.events(&orgs, range, &q.filter(), limit, cursor).await.map_err(refused("filter"))?;
    Ok(ok(page))
}

async fn histogram(
    State(s): State<Arc<Store>>,
    Caller(c): Caller,
    Extension(h): Extension<SearchHandle>,
    Params(q): Params<EventsQuery>,
) -> ApiResult<Response> {
    let interval = match q.interval.as_deref() {
        None => 3_600,
        Some(text) => interval_secs(text).ok_or_else(|| field("interval", "not an interval like 5m".into()))?,
    };
    let (searcher, range, orgs) = filtered(&s, &c, &h, &q).await?;
    let histogram = searcher.histogram(&orgs, range, &q.filter(), interval).await.map_err(refused("interval"))?;
    Ok(ok(histogram))
}

/// What the filter endpoints share: the searcher, the range, and the orgs
/// the caller may search (`org` narrowing them).
async fn filtered<'h>(
    s: &Store,
    c: &crate::store::Principal,
    h: &'h SearchHandle,
    q: &EventsQuery,
) -> ApiResult<(&'h Searcher, TimeRange, Vec<u32>)> {
    let searcher = h.get()?;
    let range = range(s, q.from.as_deref(), q.to.as_deref())?;
    let orgs = s.event_orgs(c, q.org().as_ref()).await?;
    Ok((searcher, range, orgs))
}

/// The incident's events: visible exactly when the incident is (the
/// record lookup answers 404 otherwise), read from its org's files only.
async fn incident_events(
    State(s): State<Arc<Store>>,
    Caller(c): Caller,
    Extension(h): Extension<SearchHandle>,
    Id(id): Id,
) -> ApiResult<Response> {
    let searcher = h.get()?;
    let record = s.get_record(&c, Kind::Incident, id).await?;
    let ids = record.event_ids.clone().unwrap_or_default();
    let org = record.org_id.and_then(|o| u32::try_from(o).ok());
    let (Some(org), false) = (org, ids.is_empty()) else {
        return Ok(ok(serde_json::json!({ "items": [], "next_cursor": null, "stats": search::Stats::default() })));
    };
    // The incident is visible, so its events are: no `events` permission
    // is asked of whoever may read the incident.
    let first = crate::store::rfc3339_ms(&record.first_seen).unwrap_or(0).saturating_mul(1_000_000);
    let last = crate::store::rfc3339_ms(&record.last_seen).unwrap_or(first).saturating_mul(1_000_000);
    let range = TimeRange::new(
        first.saturating_sub(INCIDENT_MARGIN_NS),
        last.saturating_add(INCIDENT_MARGIN_NS).max(first.saturating_sub(INCIDENT_MARGIN_NS) + 1),
    );
    let page = searcher.by_ids(&[org], range, &ids).await.map_err(refused("id"))?;
    Ok(ok(page))
}

/// `[from, to)` from the request, defaulting to the last day by the
/// store's clock.
fn range(s: &Store, from: Option<&str>, to: Option<&str>) -> ApiResult<TimeRange> {
    let time = |name: &str, text: &str| -> ApiResult<i64> {
        let t: jiff::Timestamp = text.parse().map_err(|_| {
            field(name, format!("`{name}`: {text:?} is not an RFC 3339 time (e.g. 2026-11-22T10:15:42Z)"))
        })?;
        // Nanoseconds since 1970 in an i64 reach 1677 and 2262: times
        // beyond are as far as that (nothing is stored there).
        let nanos = t.as_nanosecond().clamp(i128::from(i64::MIN), i128::from(i64::MAX));
        Ok(i64::try_from(nanos).unwrap_or_default())
    };
    let to = match to {
        Some(t) => time("to", t)?,
        None => s.now_ms().saturating_mul(1_000_000),
    };
    let from = match from {
        Some(t) => time("from", t)?,
        None => to.saturating_sub(DEFAULT_RANGE_NS),
    };
    Ok(TimeRange::new(from, to))
}

fn field(name: &str, message: String) -> ApiError {
    ApiError { field: Some(name.to_owned()), ..ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message) }
}

/// A search error as the API answers it; `name` is the field a refusal
/// is about.
fn refused(name: &'static str) -> impl Fn(SearchError) -> ApiError {
    move |e| {
        let message = e.to_string();
        match e {
            SearchError::Refused(_) | SearchError::Query(_) => field(name, message),
            SearchError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message),
            SearchError::Memory { .. } | SearchError::TimedOut { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded", message)
            }
            SearchError::Busy { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message),
            _ => {
                eprintln!("vigil api: search: {message}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            }
        }
    }
}
