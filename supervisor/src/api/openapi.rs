//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`, written
//! from one table of operations; a test checks it against the router's
//! route list so the two cannot drift apart.

use serde_json::{Map, Value, json};

/// `(method, path, summary, tag, request schema, response schema, status)`.
type Operation =
    (&'static str, &'static str, &'static str, &'static str, Option<&'static str>, Option<&'static str>, u16);

const OPERATIONS: &[Operation] = &[
    ("get", "/openapi.json", "This document", "meta", None, None, 200),
    ("get", "/health", "Liveness: {\"status\": \"ok\"}", "meta", None, None, 200),
    ("get", "/me", "The caller: user, permissions, whether a Super/Global user", "meta", None, Some("Me"), 200),
    ("get", "/incidents", "List incidents the caller sees", "incidents", None, Some("RecordPage"), 200),
    (
        "post",
        "/incidents",
        "Create an incident by hand (Super users without org: a Self record)",
        "incidents",
        Some("NewRecord"),
        Some("Record"),
        201,
    ),
    (
        "get",
        "/incidents/counts",
        "Counts by status, severity and org under the list's filters",
        "incidents",
        None,
        Some("Counts"),
        200,
    ),
    (
        "get",
        "/incidents/{id}",
        "One incident with its event ids, owners and history",
        "incidents",
        None,
        Some("Record"),
        200,
    ),
    (
        "patch",
        "/incidents/{id}",
        "Change status, severity, assignee, title, description; set a Self record's tenant once",
        "incidents",
        Some("RecordPatch"),
        Some("Record"),
        200,
    ),
    ("delete", "/incidents/{id}", "Delete an incident", "incidents", None, None, 204),
    ("get", "/incidents/{id}/comments", "An incident's comments", "incidents", None, Some("CommentPage"), 200),
    (
        "post",
        "/incidents/{id}/comments",
        "Comment on an incident",
        "incidents",
        Some("NewComment"),
        Some("Comment"),
        201,
    ),
    ("get", "/alerts", "List alerts the caller sees", "alerts", None, Some("RecordPage"), 200),
    ("post", "/alerts", "Create an alert by hand", "alerts", Some("NewRecord"), Some("Record"), 201),
    (
        "get",
        "/alerts/counts",
        "Counts by status, severity and org under the list's filters",
        "alerts",
        None,
        Some("Counts"),
        200,
    ),
    ("get", "/alerts/{id}", "One alert with its event ids, owners and history", "alerts", None, Some("Record"), 200),
    ("patch", "/alerts/{id}", "Change an alert", "alerts", Some("RecordPatch"), Some("Record"), 200),
    ("delete", "/alerts/{id}", "Delete an alert", "alerts", None, None, 204),
    ("get", "/alerts/{id}/comments", "An alert's comments", "alerts", None, Some("CommentPage"), 200),
    ("post", "/alerts/{id}/comments", "Comment on an alert", "alerts", Some("NewComment"), Some("Comment"), 201),
    ("get", "/orgs", "Orgs the caller sees", "orgs", None, Some("OrgPage"), 200),
    ("post", "/orgs", "Create an org (Super/Global users who see every org)", "orgs", Some("NewOrg"), Some("Org"), 201),
    ("get", "/orgs/{id}", "One org", "orgs", None, Some("Org"), 200),
    (
        "patch",
        "/orgs/{id}",
        "Change an org's name, description, EPS limit or IP ranges",
        "orgs",
        Some("OrgPatch"),
        Some("Org"),
        200,
    ),
    (
        "delete",
        "/orgs/{id}",
        "Deboard an org: delete it and all its records irreversibly; needs confirm=true",
        "orgs",
        None,
        Some("Deboarded"),
        200,
    ),
    (
        "post",
        "/orgs/{id}/disable",
        "Disable an org (its events are no longer accepted)",
        "orgs",
        None,
        Some("Org"),
        200,
    ),
    ("post", "/orgs/{id}/enable", "Enable an org", "orgs", None, Some("Org"), 200),
    ("get", "/users", "Users the caller sees", "users", None, Some("UserPage"), 200),
    ("post", "/users", "Create a user", "users", Some("NewUser"), Some("User"), 201),
    ("get", "/users/{id}", "One user", "users", None, Some("User"), 200),
    (
        "patch",
        "/users/{id}",
        "Change a user's role, enabled flag or scope",
        "users",
        Some("UserPatch"),
        Some("User"),
        200,
    ),
    ("delete", "/users/{id}", "Delete a user", "users", None, None, 204),
    ("get", "/teams", "Teams the caller sees", "users", None, Some("TeamPage"), 200),
    ("post", "/teams", "Create a team", "users", Some("NewTeam"), Some("Team"), 201),
    ("get", "/teams/{id}", "One team", "users", None, Some("Team"), 200),
    ("patch", "/teams/{id}", "Rename a team or replace its members", "users", Some("TeamPatch"), Some("Team"), 200),
    ("delete", "/teams/{id}", "Delete a team", "users", None, None, 204),
    ("get", "/roles", "Built-in roles and the roles of orgs the caller sees", "users", None, Some("RolePage"), 200),
    ("post", "/roles", "Create a custom role", "users", Some("NewRole"), Some("Role"), 201),
    ("get", "/roles/{id}", "One role", "users", None, Some("Role"), 200),
    (
        "patch",
        "/roles/{id}",
        "Rename a custom role or change its permissions",
        "users",
        Some("RolePatch"),
        Some("Role"),
        200,
    ),
    ("delete", "/roles/{id}", "Delete a custom role no user holds", "users", None, None, 204),
    ("get", "/tokens", "The caller's tokens and those of users it manages", "users", None, Some("TokenPage"), 200),
    (
        "post",
        "/tokens",
        "Create a token; the secret is shown in this answer only",
        "users",
        Some("NewToken"),
        Some("NewTokenSecret"),
        201,
    ),
    ("delete", "/tokens/{id}", "Revoke a token", "users", None, None, 204),
    ("get", "/audit", "The audit log of the orgs the caller sees, newest first", "audit", None, Some("AuditPage"), 200),
];

fn s(t: &str) -> Value {
    json!({ "type": t })
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

fn obj(required: &[&str], props: &[(&str, Value)]) -> Value {
    let p: Map<String, Value> = props.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    json!({ "type": "object", "required": required, "properties": p, "additionalProperties": false })
}

fn page(item: &str) -> Value {
    obj(&["items", "next_cursor"], &[("items", array(r(item))), ("next_cursor", nullable("string"))])
}

fn org_ref() -> Value {
    json!({ "oneOf": [{ "type": "integer" }, { "type": "string" }], "description": "an org's id or name" })
}

fn schemas() -> Value {
    let sev = json!({ "type": "string", "enum": ["info", "low", "medium", "high", "critical"] });
    let status = json!({ "type": "string", "enum": ["open", "investigating", "resolved", "closed"] });
    let user_ref = nullable("object");
    let perms = json!({ "type": "object", "description": "module (incidents, alerts, comments, orgs, users, rules, licence) -> operations (create, read, update, delete)",
        "additionalProperties": array(json!({ "type": "string", "enum": ["create", "read", "update", "delete"] })) });
    let name = json!({ "type": "string", "minLength": 1, "maxLength": 128 });
    json!({
        "Error": obj(&["error"], &[("error", obj(&["code", "message"], &[("code", s("string")), ("message", s("string")), ("field", s("string"))]))]),
        "Org": obj(&["id", "name"], &[("id", s("integer")), ("name", name.clone()), ("description", s("string")), ("eps_limit", nullable("integer")),
            ("enabled", s("boolean")), ("builtin", s("boolean")), ("ip_ranges", array(s("string"))), ("created_at", s("string")), ("updated_at", s("string"))]),
        "NewOrg": obj(&["name"], &[("name", name.clone()), ("description", json!({ "type": "string", "maxLength": 256 })),
            ("eps_limit", nullable("integer")), ("ip_ranges", array(s("string")))]),
        "OrgPatch": obj(&[], &[("name", name.clone()), ("description", json!({ "type": "string", "maxLength": 256 })),
            ("eps_limit", nullable("integer")), ("ip_ranges", array(s("string")))]),
        "Deboarded": obj(&["org", "id", "deleted"], &[("org", s("string")), ("id", s("integer")), ("deleted", s("object"))]),
        "User": obj(&["id", "name", "org_id"], &[("id", s("integer")), ("name", s("string")), ("org_id", s("integer")), ("org", s("string")),
            ("role_id", s("integer")), ("role", s("string")), ("enabled", s("boolean")), ("scope", json!({ "type": ["array", "null"], "items": { "type": "integer" } })),
            ("teams", array(s("integer"))), ("created_at", s("string"))]),
        "NewUser": obj(&["name", "org", "role"], &[("name", name.clone()), ("org", org_ref()),
            ("role", json!({ "oneOf": [{ "type": "integer" }, { "type": "string" }] })), ("scope", array(org_ref()))]),
        "UserPatch": obj(&[], &[("role", json!({ "oneOf": [{ "type": "integer" }, { "type": "string" }] })), ("enabled", s("boolean")),
            ("scope", json!({ "type": ["array", "null"], "items": org_ref() }))]),
        "Team": obj(&["id", "org_id", "name"], &[("id", s("integer")), ("org_id", s("integer")), ("name", s("string")), ("members", array(s("integer"))), ("created_at", s("string"))]),
        "NewTeam": obj(&["name"], &[("name", name.clone()), ("org", org_ref()), ("members", array(s("integer")))]),
        "TeamPatch": obj(&[], &[("name", name.clone()), ("members", array(s("integer")))]),
        "Role": obj(&["id", "name", "permissions"], &[("id", s("integer")), ("org_id", s("integer")), ("name", s("string")), ("builtin", s("boolean")), ("permissions", perms.clone())]),
        "NewRole": obj(&["name", "permissions"], &[("name", name.clone()), ("org", org_ref()), ("permissions", perms.clone())]),
        "RolePatch": obj(&[], &[("name", name), ("permissions", perms)]),
        "Token": obj(&["id", "user_id", "name"], &[("id", s("integer")), ("user_id", s("integer")), ("name", s("string")), ("hint", s("string")),
            ("created_at", s("string")), ("expires_at", nullable("string"))]),
        "NewToken": obj(&[], &[("name", s("string")), ("user_id", s("integer")), ("expires_in_days", json!({ "type": "integer", "minimum": 1, "maximum": 3650 }))]),
        "NewTokenSecret": obj(&["id", "token_secret"], &[("id", s("integer")), ("user_id", s("integer")), ("name", s("string")), ("hint", s("string")),
            ("created_at", s("string")), ("expires_at", nullable("string")), ("token_secret", s("string"))]),
        "Record": obj(&["id", "org", "title", "severity", "status"], &[("id", s("integer")), ("kind", s("string")), ("org", nullable("string")), ("org_id", nullable("integer")),
            ("self", s("boolean")), ("title", s("string")), ("description", s("string")), ("severity", sev.clone()), ("status", status.clone()),
            ("assignee", user_ref.clone()), ("rule", nullable("string")), ("source_ref", nullable("string")), ("count", s("integer")),
            ("first_seen", s("string")), ("last_seen", s("string")), ("created_by", user_ref), ("created_at", s("string")), ("updated_at", s("string")),
            ("event_ids", array(s("integer"))), ("owners", array(s("integer"))), ("history", array(r("AuditEntry")))]),
        "NewRecord": obj(&["title", "severity"], &[("title", json!({ "type": "string", "minLength": 1, "maxLength": 512 })), ("severity", sev.clone()),
            ("org", org_ref()), ("description", s("string")), ("assignee", s("integer")), ("event_ids", array(s("integer")))]),
        "RecordPatch": obj(&[], &[("status", status), ("severity", sev), ("assignee", nullable("integer")), ("title", s("string")),
            ("description", s("string")), ("org", org_ref())]),
        "Comment": obj(&["id", "record_id", "body"], &[("id", s("integer")), ("record_id", s("integer")), ("author", nullable("object")), ("body", s("string")), ("created_at", s("string"))]),
        "NewComment": obj(&["body"], &[("body", json!({ "type": "string", "minLength": 1, "maxLength": 10000 }))]),
        "Counts": obj(&["total"], &[("total", s("integer")), ("by_status", s("object")), ("by_severity", s("object")), ("by_org", s("object"))]),
        "AuditEntry": obj(&["id", "at", "actor", "action", "object_type"], &[("id", s("integer")), ("at", s("string")), ("actor", s("string")),
            ("actor_id", nullable("integer")), ("org_id", nullable("integer")), ("action", s("string")), ("object_type", s("string")),
            ("object_id", nullable("integer")), ("before", json!({})), ("after", json!({}))]),
        "Me": obj(&["user", "permissions", "super_user"], &[("user", r("User")), ("permissions", s("object")), ("super_user", s("boolean"))]),
        "RecordPage": page("Record"), "CommentPage": page("Comment"), "OrgPage": page("Org"), "UserPage": page("User"),
        "TeamPage": page("Team"), "RolePage": page("Role"), "TokenPage": page("Token"), "AuditPage": page("AuditEntry"),
    })
}

fn query_params(path: &str, method: &str) -> Vec<Value> {
    let q = |name: &str, t: &str, d: &str| json!({ "name": name, "in": "query", "required": false, "schema": { "type": t }, "description": d });
    let mut out = Vec::new();
    if path.contains("{id}") {
        out.push(json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }));
    }
    if method != "get" {
        if path == "/orgs/{id}" && method == "delete" {
            out.push(q("confirm", "boolean", "must be true: deboarding is irreversible"));
        }
        return out;
    }
    if path.ends_with("s") && (path.starts_with("/incidents") || path.starts_with("/alerts"))
        || path.ends_with("/counts")
    {
        out.extend([
            q("status", "string", "comma-separated statuses"),
            q("severity", "string", "comma-separated severities"),
            q("rule", "string", "a rule id"),
            q("org", "string", "an org id or name"),
            q("since", "string", "RFC 3339: last seen at or after"),
            q("until", "string", "RFC 3339: first seen before"),
            q("q", "string", "text in the title"),
            q("assignee", "integer", "assignee user id"),
        ]);
        if !path.ends_with("/counts") {
            out.extend([
                q(
                    "sort",
                    "string",
                    "last_seen, first_seen, created_at, severity, count or id; - for descending (default -last_seen)",
                ),
                q("limit", "integer", "1-1000, default 50"),
                q("cursor", "string", "next_cursor of the previous page"),
            ]);
        }
    }
    if path == "/audit" {
        out.extend([
            q("object_type", "string", "org, user, team, role, token, incident, alert"),
            q("object_id", "integer", "the object's id"),
            q("limit", "integer", "1-1000, default 100"),
            q("cursor", "string", "next_cursor of the previous page"),
        ]);
    }
    out
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, summary, tag, request, response, status) in OPERATIONS {
        let mut op = json!({ "summary": summary, "tags": [tag], "parameters": query_params(path, method) });
        if let Some(req) = request {
            op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": r(req) } } });
        }
        let mut responses = Map::new();
        let ok = match response {
            Some(schema) => {
                json!({ "description": "success", "content": { "application/json": { "schema": r(schema) } } })
            }
            None => json!({ "description": "success" }),
        };
        responses.insert(status.to_string(), ok);
        if !matches!(*path, "/openapi.json" | "/health") {
            let err = json!({ "description": "error", "content": { "application/json": { "schema": r("Error") } } });
            for code in ["400", "401", "403", "404", "409", "413", "422"] {
                responses.insert(code.to_owned(), err.clone());
            }
            op["security"] = json!([{ "bearer": [] }]);
        }
        op["responses"] = Value::Object(responses);
        let entry = paths.entry(format!("/api/v1{path}")).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "vigil incident API", "version": env!("CARGO_PKG_VERSION"),
            "description": "Incidents, alerts, orgs, users, teams, roles, tokens and the audit log of a vigil record store. \
                Every answer is limited to the orgs the caller's token sees." },
        "servers": [{ "url": "/" }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas(),
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        let mut documented = Vec::new();
        for (path, ops) in &paths {
            for method in ops.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                documented.push((method, path.trim_start_matches("/api/v1").to_owned()));
            }
        }
        let mut routes: Vec<(String, String)> =
            crate::api::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
        routes.sort();
        documented.sort();
        assert_eq!(routes, documented);
        // Every schema referenced exists.
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(doc["components"]["schemas"].get(&name).is_some(), "missing schema {name}");
        }
    }
}
