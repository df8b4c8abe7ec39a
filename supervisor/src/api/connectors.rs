//! Connector configurations, notification policies, deliveries, manual
//! actions and health checks (issue #14): HTTP in, store calls out.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::query::Params;
use super::{ApiResult, Body, Caller, Id, created, ok};
use crate::store::{
    ActionRequest, ConnectorPatch, DeliveryQuery, NameRef, NewConnector, NewPolicy, PageQuery, PolicyPatch, Store,
};

pub(super) fn routes() -> Router<Arc<Store>> {
    Router::new()
        .route(
            "/connectors",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<PageQuery>| {
                ApiResult::Ok(ok(s.list_connectors(&c, q).await?))
            })
            .post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewConnector>| {
                ApiResult::Ok(created(s.create_connector(&c, b).await?))
            }),
        )
        .route(
            "/connectors/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_connector(&c, &NameRef::Id(id)).await?))
            })
            .patch(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<ConnectorPatch>| {
                ApiResult::Ok(ok(s.update_connector(&c, &NameRef::Id(id), b).await?))
            })
            .delete(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_connector(&c, &NameRef::Id(id)).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
        .route(
            "/connectors/{id}/test",
            post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| -> ApiResult<Response> {
                Ok(ok(crate::notify::test_connector(&s, &c, &NameRef::Id(id)).await?))
            }),
        )
        .route(
            "/policies",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<PageQuery>| {
                ApiResult::Ok(ok(s.list_policies(&c, q).await?))
            })
            .post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Body(b): Body<NewPolicy>| {
                ApiResult::Ok(created(s.create_policy(&c, b).await?))
            }),
        )
        .route(
            "/policies/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_policy(&c, &NameRef::Id(id)).await?))
            })
            .patch(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<PolicyPatch>| {
                ApiResult::Ok(ok(s.update_policy(&c, &NameRef::Id(id), b).await?))
            })
            .delete(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                s.delete_policy(&c, &NameRef::Id(id)).await?;
                ApiResult::Ok(StatusCode::NO_CONTENT.into_response())
            }),
        )
        .route(
            "/deliveries",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Params(q): Params<DeliveryQuery>| {
                ApiResult::Ok(ok(s.list_deliveries(&c, q).await?))
            }),
        )
        .route(
            "/deliveries/{id}",
            get(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id| {
                ApiResult::Ok(ok(s.get_delivery(&c, id).await?))
            }),
        )
        .route(
            "/incidents/{id}/actions",
            post(async |State(s): State<Arc<Store>>, Caller(c): Caller, Id(id): Id, Body(b): Body<ActionRequest>| {
                ApiResult::Ok((StatusCode::ACCEPTED, axum::Json(s.run_action(&c, id, b).await?)).into_response())
            }),
        )
}
