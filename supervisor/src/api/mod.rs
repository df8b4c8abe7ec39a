//! The incident API (`/api/v1`, JSON, bearer tokens) over the record
//! store. Handlers only translate HTTP to store calls and back: who may see
//! and do what is decided in [`crate::store`], the same code the admin CLI
//! uses.
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with the
//! status the code names: 400 `bad_request`, 401 `unauthorized`, 403
//! `forbidden`, 404 `not_found`, 409 `conflict`, 413 `payload_too_large`,
//! 415 `unsupported_media_type`, 422 `invalid`, 503 `unavailable`, 500
//! `internal`; `field` names the offending field or query parameter where
//! there is one.
//!
//! Requests are held to their documentation in two places, not per
//! handler: every JSON body goes through `Body` (a JSON object, nothing
//! else) and every query string through `query::check` (the parameters
//! the endpoint takes, typed and in range, nothing else).

mod connectors;
mod events;
mod openapi;
mod query;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use query::Params;

use crate::store::{
    AuditQuery, DevicePatch, DeviceQuery, Kind, ListQuery, NewComment, NewOrg, NewRecord, NewRole, NewTeam, NewToken,
    NewUser, OrgPatch, OrgRef, Principal, RecordPatch, RolePatch, Store, StoreError, SummaryQuery, TeamPatch,
    UserPatch,
};

pub use openapi::document as openapi_document;

/// Largest request body accepted (bytes). It must hold the largest valid
/// request in any JSON spelling: a record's 10,000-character description
/// and 512-character title written as `\u` escapes of surrogate pairs (12
/// bytes a character) are about 126,000 bytes.
pub const MAX_BODY: usize = 256 * 1024;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), field: None }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let message = e.to_string();
        match e {
            StoreError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            StoreError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            StoreError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::Refused { field, .. } => {
                ApiError { field: Some(field.to_owned()), ..ApiError::new(StatusCode::CONFLICT, "conflict", message) }
            }
            StoreError::Invalid { field, .. } => ApiError {
                field: Some(field.to_owned()),
                ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
            },
            StoreError::BadRequest(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message),
            StoreError::Unauthorized(_) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message),
            StoreError::QueueFull(_) | StoreError::Closed | StoreError::Cluster(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            _ => {
                eprintln!("vigil api: {message}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(f) = self.field {
            error["field"] = f.into();
        }
        let mut resp = (self.status, Json(serde_json::json!({ "error": error }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"vigil\""));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn status_code_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        _ => "bad_request",
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        let message = match status.as_u16() {
            413 => format!("request body is larger than {MAX_BODY} bytes"),
            415 => "send the body as JSON with Content-Type: application/json".to_owned(),
            _ => r.body_text(),
        };
        ApiError::new(status, status_code_name(status), message)
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", r.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Whether the request says its body is JSON (`application/json` or
/// `application/*+json`, with or without parameters).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(essence) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = essence.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence.strip_prefix("application/").is_some_and(|sub| sub.ends_with("+json"))
}

/// The JSON type of a value, for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Rewrites numbers written with a zero fraction or an exponent (`7.0`,
/// `1e3`) as the integers they are: JSON has one number type, and JSON
/// Schema's `integer` is any number without a fraction, so a client may
/// send either spelling; serde would refuse the first for an integer field.
fn integral_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            // 2^63 and 2^64: the i64 and u64 ranges, exactly representable.
            const I64_END: f64 = 9_223_372_036_854_775_808.0;
            const U64_END: f64 = 18_446_744_073_709_551_616.0;
            if f.fract() != 0.0 {
                return;
            }
            if (-I64_END..I64_END).contains(&f) {
                *value = Value::from(f as i64);
            } else if (0.0..U64_END).contains(&f) {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_numbers),
        Value::Object(fields) => fields.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// A JSON body whose rejections are API errors. Every request body is a
/// JSON object: serde would otherwise read a struct from an array of its
/// field values in order (`["closed", "critical"]` as a status and a
/// severity), past the unknown-field check and the documented schema.
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            let status = r.status();
            let message = match status {
                StatusCode::PAYLOAD_TOO_LARGE => format!("request body is larger than {MAX_BODY} bytes"),
                _ => r.body_text(),
            };
            ApiError::new(status, status_code_name(status), message)
        })?;
        let mut value: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            // Not JSON: axum's rejection says where it broke.
            Err(e) => {
                return Err(match Json::<T>::from_bytes(&bytes) {
                    Err(rejection) => rejection.into(),
                    Ok(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
                });
            }
        };
        if !value.is_object() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("the request body must be a JSON object, not {}", json_kind(&value)),
            ));
        }
        integral_numbers(&mut value);
        // Through bytes again (at most MAX_BODY of them) so the error for
        // a wrong field names its path, as axum's JSON rejections do.
        let bytes = serde_json::to_vec(&value)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
        Ok(Body(Json::<T>::from_bytes(&bytes)?.0))
    }
}

/// A numeric id in the path.
struct Id(i64);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Id(Path::<i64>::from_request_parts(parts, state).await?.0))
    }
}

/// The authenticated caller.
struct Caller(Principal);

impl FromRequestParts<Arc<Store>> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, store: &Arc<Store>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>")
        })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the Authorization header must be Bearer <token>",
                )
            })?;
        Ok(Caller(store.authenticate(token).await?))
    }
}

fn created<T: serde::Serialize>(value: T) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn ok<T: serde::Serialize>(value: T) -> Response {
    Json(value).into_response()
}

/// The `/api/v1` router over `store`, without event search (its endpoints
/// answer 503: no event store).
pub fn router(store: Arc<Store>) -> Router {
    router_with_search(store, None)
}

/// The `/api/v1` router over `store`, searching events with `search`.
pub fn router_with_search(store: Arc<Store>, search: Option<search::Searcher>) -> Router {
    let api = Router::new()
        .route("/openapi.json", get(|| async { Json(openapi::document()) }))
        .route("/health", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route(
            "/me",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller| -> ApiResult<Response> {
                Ok(ok(s.me(&c).await?))
            }),
        )
        .merge(records(Kind::Incident))
        .merge(records(Kind::Alert))
        .merge(orgs())
        .merge(people())
        .merge(events::routes())
        .merge(devices())
        .merge(connectors::routes())
        .route(
            "/audit",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<AuditQuery>| {
                ApiResult::Ok(ok(s.list_audit(&c, q).await?))
            }),
        )
        // Every matched route, and only those: unmatched paths answer 404
        // whatever their query.
        .route_layer(axum::middleware::from_fn(query::check))
        // After the query check, which it makes itself once it knows the
        // caller may learn the endpoint exists.
        .merge(nodes());
    Router::new()
        .nest("/api/v1", api)
        .fallback(async || unknown_endpoint())
        .method_not_allowed_fallback(async || {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::Extension(events::SearchHandle(search)))
        .with_state(store)
}

/// The answer for a path no route serves.
fn unknown_endpoint() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see /api/v1/openapi.json")
}

/// `POST /nodes` body: a node to enrol.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNodeBody {
    name: String,
    role: String,
    #[serde(default)]
    org: Option<crate::store::OrgRef>,
    #[serde(default)]
    guaranteed_eps: Option<u64>,
}

/// A 405 naming the methods `allow` of the endpoint.
fn method_not_allowed(allow: &'static str) -> Response {
    let mut resp =
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this endpoint")
            .into_response();
    resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    resp
}

/// `/nodes` and `/nodes/{name}`: the cluster's node registry, for those
/// who administer nodes ([`Principal::administers_nodes`]): list (GET),
/// enrol (POST: the answer holds the node's credentials, shown once), one
/// node (GET) and its removal (DELETE: its credentials are revoked).
/// Everyone else with a valid token gets exactly the answer of a path no
/// route serves, whatever the method, query or body, so an org's users
/// cannot tell nodes exist; only then are the query, method and body
/// checked.
fn nodes() -> Router<Arc<Store>> {
    Router::new()
        .route(
            "/nodes",
            axum::routing::any(
                async |State(s): State<Arc<Store>>, Caller(c): Caller, req: Request| -> ApiResult<Response> {
                    if !c.administers_nodes() {
                        return Err(unknown_endpoint());
                    }
                    match req.method().clone() {
                        Method::GET | Method::HEAD => {
                            query::validate(query::params_for("get", "/nodes"), req.uri().query())?;
                            Ok(ok(serde_json::json!({ "nodes": s.list_nodes().await? })))
                        }
                        Method::POST => {
                            query::validate(query::params_for("post", "/nodes"), req.uri().query())?;
                            let Body(b) = Body::<NewNodeBody>::from_request(req, &()).await?;
                            let role = parsers::NodeRole::parse(&b.role)
                                .filter(|r| *r != parsers::NodeRole::Supervisor)
                                .ok_or_else(|| StoreError::invalid("role", "collector or worker"))?;
                            let new = crate::store::NewNode { name: b.name, role, org: b.org };
                            let (node, creds) = s.add_node_as(&c, new, b.guaranteed_eps).await?;
                            Ok(created(serde_json::json!({ "node": node, "creds": creds.text() })))
                        }
                        _ => Ok(method_not_allowed("GET,HEAD,POST")),
                    }
                },
            ),
        )
        .route(
            "/nodes/{name}",
            axum::routing::any(
                async |State(s): State<Arc<Store>>,
                       Caller(c): Caller,
                       Path(name): Path<String>,
                       req: Request|
                       -> ApiResult<Response> {
                    if !c.administers_nodes() {
                        return Err(unknown_endpoint());
                    }
                    // A name no node can have names no node: 404, as for
                    // any other missing one.
                    let missing = |e: StoreError| match e {
                        StoreError::Invalid { .. } => StoreError::NotFound("node"),
                        e => e,
                    };
                    match req.method().clone() {
                        Method::GET | Method::HEAD => {
                            query::validate(query::params_for("get", "/nodes/{name}"), req.uri().query())?;
                            Ok(ok(s.get_node(&name).await.map_err(missing)?))
                        }
                        Method::DELETE => {
                            query::validate(query::params_for("delete", "/nodes/{name}"), req.uri().query())?;
                            let removed = s.remove_node_as(&c, &name).await.map_err(missing)?;
                            let revoked = removed.enrolled;
                            Ok(ok(serde_json::json!({ "removed": removed, "revoked": revoked })))
                        }
                        _ => Ok(method_not_allowed("GET,HEAD,DELETE")),
                    }
                },
            ),
        )
}

fn records(kind: Kind) -> Router<Arc<Store>> {
    let base = format!("/{}s", kind.as_str());
    Router::new()
        .route(
            &base,
            get(async move |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<ListQuery>| {
                ApiResult::Ok(ok(s.list_records(&c, kind, q).await?))
            })
            .post(
                async move |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewRecord>| {
                    ApiResult::Ok(created(s.create_record(&c, kind, b).await?))
                },
            ),
        )
        .route(
            &format!("{base}/counts"),
            get(async move |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<ListQuery>| {
                ApiResult::Ok(ok(s.count_records(&c, kind, q).await?))
            }),
        )
        .route(
            &format!("{base}/{{id}}"),
            get(async move |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_record(&c, kind, id).await?))
            })
            .patch(
                async move |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<RecordPatch>| {
                    ApiResult::Ok(ok(s.update_record(&c, kind, id, b).await?))
                },
            )
            .delete(async move |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_record(&c, kind, id).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
        .route(
            &format!("{base}/{{id}}/comments"),
            get(async move |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.list_comments(&c, kind, id).await?))
            })
            .post(
                async move |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<NewComment>| {
                    ApiResult::Ok(created(s.add_comment(&c, kind, id, b).await?))
                },
            ),
        )
}

fn devices() -> Router<Arc<Store>> {
    Router::new()
        .route(
            "/devices",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<DeviceQuery>| {
                ApiResult::Ok(ok(s.list_devices(&c, q).await?))
            }),
        )
        .route(
            "/devices/summary",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<SummaryQuery>| {
                ApiResult::Ok(ok(s.device_summary(&c, q).await?))
            }),
        )
        .route(
            "/devices/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_device(&c, id).await?))
            })
            .patch(
                async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<DevicePatch>| {
                    ApiResult::Ok(ok(s.update_device(&c, id, b).await?))
                },
            ),
        )
}

/// `DELETE /orgs/{id}?confirm=true` (the query check makes `confirm`
/// required and true; the store checks it again).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Deboard {
    confirm: bool,
}

fn orgs() -> Router<Arc<Store>> {
    Router::new()
        .route(
            "/orgs",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller| ApiResult::Ok(ok(s.list_orgs(&c).await?))).post(
                async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewOrg>| {
                    ApiResult::Ok(created(s.create_org(&c, b).await?))
                },
            ),
        )
        .route(
            "/orgs/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_org(&c, &OrgRef::Id(id)).await?))
            })
            .patch(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<OrgPatch>| {
                ApiResult::Ok(ok(s.update_org(&c, &OrgRef::Id(id), b).await?))
            })
            .delete(
                async |State(s): State<Arc<Store>>,
                       Caller(c): Caller,
                       Id(id): Id,
                       axum::Extension(h): axum::Extension<events::SearchHandle>,
                       Params(d): Params<Deboard>| {
                    // The org's stored events go with it.
                    let events = h.0.as_ref().map(|search| search.config().root.clone());
                    ApiResult::Ok(ok(s.deboard_org(&c, &OrgRef::Id(id), d.confirm, events.as_deref()).await?))
                },
            ),
        )
        .route(
            "/orgs/{id}/disable",
            post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.set_org_enabled(&c, &OrgRef::Id(id), false).await?))
            }),
        )
        .route(
            "/orgs/{id}/enable",
            post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.set_org_enabled(&c, &OrgRef::Id(id), true).await?))
            }),
        )
}

fn people() -> Router<Arc<Store>> {
    Router::new()
        .route(
            "/users",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller| ApiResult::Ok(ok(s.list_users(&c).await?)))
                .post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewUser>| {
                    ApiResult::Ok(created(s.create_user(&c, b).await?))
                }),
        )
        .route(
            "/users/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_user(&c, id).await?))
            })
            .patch(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<UserPatch>| {
                ApiResult::Ok(ok(s.update_user(&c, id, b).await?))
            })
            .delete(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_user(&c, id).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
        .route(
            "/teams",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller| ApiResult::Ok(ok(s.list_teams(&c).await?)))
                .post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewTeam>| {
                    ApiResult::Ok(created(s.create_team(&c, b).await?))
                }),
        )
        .route(
            "/teams/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_team(&c, id).await?))
            })
            .patch(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<TeamPatch>| {
                ApiResult::Ok(ok(s.update_team(&c, id, b).await?))
            })
            .delete(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_team(&c, id).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
        .route(
            "/roles",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller| ApiResult::Ok(ok(s.list_roles(&c).await?)))
                .post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewRole>| {
                    ApiResult::Ok(created(s.create_role(&c, b).await?))
                }),
        )
        .route(
            "/roles/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_role(&c, id).await?))
            })
            .patch(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<RolePatch>| {
                ApiResult::Ok(ok(s.update_role(&c, id, b).await?))
            })
            .delete(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_role(&c, id).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
        .route(
            "/tokens",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller| ApiResult::Ok(ok(s.list_tokens(&c).await?)))
                .post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewToken>| {
                    ApiResult::Ok(created(s.create_token(&c, b).await?))
                }),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_token(&c, id).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
}

/// Every `(method, path)` the router serves, for the OpenAPI document's
/// completeness test.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/openapi.json"),
    ("get", "/health"),
    ("get", "/me"),
    ("get", "/incidents"),
    ("post", "/incidents"),
    ("get", "/incidents/counts"),
    ("get", "/incidents/{id}"),
    ("patch", "/incidents/{id}"),
    ("delete", "/incidents/{id}"),
    ("get", "/incidents/{id}/comments"),
    ("get", "/incidents/{id}/events"),
    ("post", "/incidents/{id}/comments"),
    ("get", "/alerts"),
    ("post", "/alerts"),
    ("get", "/alerts/counts"),
    ("get", "/alerts/{id}"),
    ("patch", "/alerts/{id}"),
    ("delete", "/alerts/{id}"),
    ("get", "/alerts/{id}/comments"),
    ("post", "/alerts/{id}/comments"),
    ("get", "/orgs"),
    ("post", "/orgs"),
    ("get", "/orgs/{id}"),
    ("patch", "/orgs/{id}"),
    ("delete", "/orgs/{id}"),
    ("post", "/orgs/{id}/disable"),
    ("post", "/orgs/{id}/enable"),
    ("get", "/users"),
    ("post", "/users"),
    ("get", "/users/{id}"),
    ("patch", "/users/{id}"),
    ("delete", "/users/{id}"),
    ("get", "/teams"),
    ("post", "/teams"),
    ("get", "/teams/{id}"),
    ("patch", "/teams/{id}"),
    ("delete", "/teams/{id}"),
    ("get", "/roles"),
    ("post", "/roles"),
    ("get", "/roles/{id}"),
    ("patch", "/roles/{id}"),
    ("delete", "/roles/{id}"),
    ("get", "/tokens"),
    ("post", "/tokens"),
    ("delete", "/tokens/{id}"),
    ("get", "/audit"),
    ("get", "/nodes"),
    ("post", "/nodes"),
    ("get", "/nodes/{name}"),
    ("delete", "/nodes/{name}"),
    ("post", "/search"),
    ("get", "/events"),
    ("get", "/events/histogram"),
    ("get", "/devices"),
    ("get", "/devices/summary"),
    ("get", "/devices/{id}"),
    ("patch", "/devices/{id}"),
    ("get", "/connectors"),
    ("post", "/connectors"),
    ("get", "/connectors/{id}"),
    ("patch", "/connectors/{id}"),
    ("delete", "/connectors/{id}"),
    ("post", "/connectors/{id}/test"),
    ("get", "/policies"),
    ("post", "/policies"),
    ("get", "/policies/{id}"),
    ("patch", "/policies/{id}"),
    ("delete", "/policies/{id}"),
    ("get", "/deliveries"),
    ("get", "/deliveries/{id}"),
    ("post", "/incidents/{id}/actions"),
];
