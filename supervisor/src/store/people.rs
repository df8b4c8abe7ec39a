//! Users, roles, teams and API tokens. Users and teams belong to one org;
//! roles are built in (usable by every org) or an org's own; nobody can
//! grant, through a role or a token, more than their own role allows.

use std::collections::HashMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool};

use super::auth::{self, Module, Op, Perms, Principal};
use super::error::{Result, StoreError};
use super::model::{
    Me, NewRole, NewTeam, NewToken, NewTokenSecret, NewUser, OrgRef, Page, Role, RolePatch, RoleRef, SUPER_GLOBAL,
    Team, TeamPatch, Token, User, UserPatch, fmt_ms,
};
use super::sql::{RowExt, Sql};
use super::{AuditRow, Store, check_lookup, check_name, insert_id};

/// The orgs a scoped Super/Global user sees.
pub(crate) async fn scope_of(pool: &AnyPool, user: i64) -> Result<Vec<i64>> {
    let mut q = Sql::new("SELECT org_id FROM user_scopes WHERE user_id = ");
    q.bind(user).push(" ORDER BY org_id");
    q.build().fetch_all(pool).await?.iter().map(|r| r.int("org_id")).collect()
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn is_fk_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

fn role(row: &AnyRow) -> Result<Role> {
    Ok(Role {
        id: row.int("id")?,
        org_id: row.int("org_id")?,
        name: row.text("name")?,
        builtin: row.int("builtin")? != 0,
        permissions: Perms::from_bits(row.int("perms")?),
    })
}

fn token(row: &AnyRow) -> Result<Token> {
    Ok(Token {
        id: row.int("id")?,
        user_id: row.int("user_id")?,
        name: row.text("name")?,
        hint: row.text("hint")?,
        created_at: fmt_ms(row.int("created_at")?),
        expires_at: row.opt_int("expires_at")?.map(fmt_ms),
    })
}

const USER_SELECT: &str = "SELECT u.id, u.name, u.org_id, o.name AS org_name, u.role_id, r.name AS role_name, \
     u.enabled, u.scoped, u.created_at FROM users u JOIN orgs o ON o.id = u.org_id JOIN roles r ON r.id = u.role_id \
     WHERE 1 = 1";
const ROLE_COLUMNS: &str = "id, org_id, name, perms, builtin";
const TOKEN_COLUMNS: &str = "t.id, t.user_id, t.name, t.hint, t.created_at, t.expires_at";

impl Store {
    /// Users matching `q`'s conditions, with their scopes and teams.
    async fn users(&self, conn: &mut AnyConnection, mut q: Sql) -> Result<Vec<User>> {
        q.push(" ORDER BY u.id");
        let rows = q.build().fetch_all(&mut *conn).await?;
        let ids = rows.iter().map(|r| r.int("id")).collect::<Result<Vec<_>>>()?;
        let mut scopes: HashMap<i64, Vec<i64>> = HashMap::new();
        let mut teams: HashMap<i64, Vec<i64>> = HashMap::new();
        for chunk in ids.chunks(500) {
            let mut q = Sql::new("SELECT user_id, org_id FROM user_scopes WHERE user_id IN ");
            q.bind_list(chunk).push(" ORDER BY org_id");
            for r in q.build().fetch_all(&mut *conn).await? {
                scopes.entry(r.int("user_id")?).or_default().push(r.int("org_id")?);
            }
            let mut q = Sql::new("SELECT user_id, team_id FROM team_members WHERE user_id IN ");
            q.bind_list(chunk).push(" ORDER BY team_id");
            for r in q.build().fetch_all(&mut *conn).await? {
                teams.entry(r.int("user_id")?).or_default().push(r.int("team_id")?);
            }
        }
        rows.iter()
            .map(|r| {
                let id = r.int("id")?;
                Ok(User {
                    id,
                    name: r.text("name")?,
                    org_id: r.int("org_id")?,
                    org: r.text("org_name")?,
                    role_id: r.int("role_id")?,
                    role: r.text("role_name")?,
                    enabled: r.int("enabled")? != 0,
                    scope: if r.int("scoped")? != 0 { Some(scopes.remove(&id).unwrap_or_default()) } else { None },
                    teams: teams.remove(&id).unwrap_or_default(),
                    created_at: fmt_ms(r.int("created_at")?),
                })
            })
            .collect()
    }

    /// One user `who` sees.
    async fn visible_user(&self, conn: &mut AnyConnection, who: &Principal, id: i64) -> Result<User> {
        let mut q = Sql::new(USER_SELECT);
        who.org_filter(&mut q, "u.org_id");
        q.push(" AND u.id = ").bind(id);
        self.users(conn, q).await?.pop().ok_or(StoreError::NotFound("user"))
    }

    /// Users of Super/Global can be managed only by Super/Global users who
    /// see every org; anyone else would be widening their own reach.
    fn check_manage(who: &Principal, org: i64) -> Result<()> {
        if org == SUPER_GLOBAL {
            who.require_unscoped_super("manage Super/Global users, teams and roles")?;
        }
        Ok(())
    }

    /// The role `r` names that users of `org` may hold; its grants must be
    /// within `who`'s own.
    async fn resolve_role(&self, conn: &mut AnyConnection, who: &Principal, org: i64, r: &RoleRef) -> Result<Role> {
        let mut q = Sql::new(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE (builtin = 1 OR org_id = "));
        q.bind(org).push(") AND ");
        match r {
            RoleRef::Id(id) => q.push("id = ").bind(*id),
            RoleRef::Name(name) => {
                check_lookup("role", name)?;
                q.push("name_key = ").bind(name.to_lowercase())
            }
        };
        q.push(" ORDER BY builtin LIMIT 1");
        let found = q.build().fetch_optional(&mut *conn).await?.map(|r| role(&r)).transpose()?;
        let found = found.ok_or(StoreError::NotFound("role"))?;
        if !found.permissions.is_subset_of(who.perms) {
            return Err(StoreError::forbidden(format!("role {} grants more than your own role", found.name)));
        }
        Ok(found)
    }

    async fn resolve_scope(&self, conn: &mut AnyConnection, who: &Principal, scope: &[OrgRef]) -> Result<Vec<i64>> {
        let mut ids = Vec::with_capacity(scope.len());
        for r in scope {
            if let OrgRef::Name(name) = r {
                check_lookup("scope", name)?;
            }
            let id = self.resolve_org(conn, who, r).await?;
            if id == SUPER_GLOBAL {
                return Err(StoreError::refused("scope", "lists tenant orgs; Super/Global is not one"));
            }
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    async fn set_scope(&self, conn: &mut AnyConnection, user: i64, scope: Option<&[i64]>) -> Result<()> {
        let mut q = Sql::new("DELETE FROM user_scopes WHERE user_id = ");
        q.bind(user);
        q.build().execute(&mut *conn).await?;
        for org in scope.unwrap_or_default() {
            let mut q = Sql::new("INSERT INTO user_scopes (user_id, org_id) VALUES (");
            q.bind(user).push(", ").bind(*org).push(")");
            q.build().execute(&mut *conn).await?;
        }
        let mut q = Sql::new("UPDATE users SET scoped = ");
        q.bind(i64::from(scope.is_some())).push(" WHERE id = ").bind(user);
        q.build().execute(&mut *conn).await?;
        Ok(())
    }

    /// The caller, with its permissions.
    pub async fn me(&self, who: &Principal) -> Result<Me> {
        let Some(id) = who.user_id else {
            return Err(StoreError::BadRequest("the CLI is not a user".into()));
        };
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(USER_SELECT);
        q.push(" AND u.id = ").bind(id);
        let user = self.users(&mut conn, q).await?.pop().ok_or(StoreError::NotFound("user"))?;
        Ok(Me { user, permissions: who.perms, super_user: who.is_super() })
    }

    /// Users `who` sees.
    pub async fn list_users(&self, who: &Principal) -> Result<Page<User>> {
        who.require(Module::Users, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new(USER_SELECT);
        who.org_filter(&mut q, "u.org_id");
        Ok(Page { items: self.users(&mut conn, q).await?, next_cursor: None })
    }

    /// One user.
    pub async fn get_user(&self, who: &Principal, id: i64) -> Result<User> {
        who.require(Module::Users, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        self.visible_user(&mut conn, who, id).await
    }

    /// The id of the user named `name` (case-insensitive), for the CLI.
    pub async fn user_id_by_name(&self, who: &Principal, name: &str) -> Result<i64> {
        check_lookup("user", name)?;
        let mut q = Sql::new("SELECT id, org_id FROM users WHERE name_key = ");
        q.bind(name.to_lowercase());
        let row = q.build().fetch_optional(self.pool()).await?.ok_or(StoreError::NotFound("user"))?;
        if !who.sees_org(row.int("org_id")?) {
            return Err(StoreError::NotFound("user"));
        }
        row.int("id")
    }

    /// Creates a user in an org `who` sees.
    pub async fn create_user(&self, who: &Principal, new: NewUser) -> Result<User> {
        who.require(Module::Users, Op::Create)?;
        let key = check_name("name", &new.name, 128)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org = self.resolve_org(w.conn(), who, &new.org).await?;
        Store::check_manage(who, org)?;
        let role = self.resolve_role(w.conn(), who, org, &new.role).await?;
        let scope = match &new.scope {
            Some(_) if org != SUPER_GLOBAL => {
                return Err(StoreError::refused("scope", "only Super/Global users have a scope"));
            }
            Some(s) => Some(self.resolve_scope(w.conn(), who, s).await?),
            None => None,
        };
        let mut q = Sql::new(
            "INSERT INTO users (org_id, name, name_key, role_id, enabled, scoped, created_at, updated_at) VALUES (",
        );
        q.bind(org).push(", ").bind(new.name.clone()).push(", ").bind(key).push(", ").bind(role.id);
        q.push(", 1, 0, ").bind(now).push(", ").bind(now).push(") RETURNING id");
        let id = insert_id(w.conn(), q, || format!("a user named {:?} already exists", new.name)).await?;
        if scope.is_some() {
            self.set_scope(w.conn(), id, scope.as_deref()).await?;
        }
        let user = self.visible_user(w.conn(), &Principal::cli(), id).await?;
        w.finish(now, who, AuditRow::new(Some(org), "create", "user", Some(id), None, Some(json(&user)))).await?;
        Ok(user)
    }

    /// Changes a user's role, enabled flag or scope.
    pub async fn update_user(&self, who: &Principal, id: i64, patch: UserPatch) -> Result<User> {
        who.require(Module::Users, Op::Update)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.visible_user(w.conn(), who, id).await?;
        Store::check_manage(who, before.org_id)?;
        if who.user_id == Some(id) && (patch.enabled == Some(false) || patch.role.is_some() || patch.scope.is_some()) {
            return Err(StoreError::Conflict("you cannot disable yourself or change your own role or scope".into()));
        }
        let mut q = Sql::new("UPDATE users SET updated_at = ");
        q.bind(now);
        if let Some(r) = &patch.role {
            let role = self.resolve_role(w.conn(), who, before.org_id, r).await?;
            q.push(", role_id = ").bind(role.id);
        }
        if let Some(enabled) = patch.enabled {
            q.push(", enabled = ").bind(i64::from(enabled));
        }
        q.push(" WHERE id = ").bind(id);
        q.build().execute(w.conn()).await?;
        if let Some(scope) = &patch.scope {
            if before.org_id != SUPER_GLOBAL {
                return Err(StoreError::refused("scope", "only Super/Global users have a scope"));
            }
            let ids = match scope {
                Some(s) => Some(self.resolve_scope(w.conn(), who, s).await?),
                None => None,
            };
            self.set_scope(w.conn(), id, ids.as_deref()).await?;
        }
        let after = self.visible_user(w.conn(), &Principal::cli(), id).await?;
        w.finish(
            now,
            who,
            AuditRow::new(Some(after.org_id), "update", "user", Some(id), Some(json(&before)), Some(json(&after))),
        )
        .await?;
        Ok(after)
    }

    /// Deletes a user (and its tokens).
    pub async fn delete_user(&self, who: &Principal, id: i64) -> Result<()> {
        who.require(Module::Users, Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.visible_user(w.conn(), who, id).await?;
        Store::check_manage(who, before.org_id)?;
        if who.user_id == Some(id) {
            return Err(StoreError::Conflict("you cannot delete yourself".into()));
        }
        let mut q = Sql::new("DELETE FROM users WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        w.finish(now, who, AuditRow::new(Some(before.org_id), "delete", "user", Some(id), Some(json(&before)), None))
            .await
    }

    // ---- roles ----

    async fn visible_role(&self, conn: &mut AnyConnection, who: &Principal, id: i64) -> Result<Role> {
        let mut q = Sql::new(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE id = "));
        q.bind(id).push(" AND (builtin = 1 OR (1 = 1");
        who.org_filter(&mut q, "org_id");
        q.push("))");
        q.build().fetch_optional(&mut *conn).await?.map(|r| role(&r)).transpose()?.ok_or(StoreError::NotFound("role"))
    }

    /// Built-in roles and the roles of orgs `who` sees.
    pub async fn list_roles(&self, who: &Principal) -> Result<Page<Role>> {
        who.require(Module::Users, Op::Read)?;
        let mut q = Sql::new(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE (builtin = 1 OR (1 = 1"));
        who.org_filter(&mut q, "org_id");
        q.push(")) ORDER BY id");
        let items = q.build().fetch_all(self.pool()).await?.iter().map(role).collect::<Result<_>>()?;
        Ok(Page { items, next_cursor: None })
    }

    /// One role.
    pub async fn get_role(&self, who: &Principal, id: i64) -> Result<Role> {
        who.require(Module::Users, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        self.visible_role(&mut conn, who, id).await
    }

    /// Creates a custom role for an org.
    pub async fn create_role(&self, who: &Principal, new: NewRole) -> Result<Role> {
        who.require(Module::Users, Op::Create)?;
        let key = check_name("name", &new.name, 128)?;
        if !new.permissions.is_subset_of(who.perms) {
            return Err(StoreError::forbidden("a role cannot grant more than your own role"));
        }
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org = self.resolve_org(w.conn(), who, &new.org.clone().unwrap_or(OrgRef::Id(who.org_id))).await?;
        Store::check_manage(who, org)?;
        let mut builtin = Sql::new("SELECT id FROM roles WHERE builtin = 1 AND name_key = ");
        builtin.bind(key.clone());
        if builtin.build().fetch_optional(w.conn()).await?.is_some() {
            return Err(StoreError::Conflict(format!("{:?} is the name of a built-in role", new.name)));
        }
        let mut q =
            Sql::new("INSERT INTO roles (org_id, name, name_key, perms, builtin, created_at, updated_at) VALUES (");
        q.bind(org).push(", ").bind(new.name.clone()).push(", ").bind(key).push(", ");
        q.bind(new.permissions.bits()).push(", 0, ").bind(now).push(", ").bind(now).push(") RETURNING id");
        let id = insert_id(w.conn(), q, || format!("this org already has a role named {:?}", new.name)).await?;
        let created = self.visible_role(w.conn(), &Principal::cli(), id).await?;
        w.finish(now, who, AuditRow::new(Some(org), "create", "role", Some(id), None, Some(json(&created)))).await?;
        Ok(created)
    }

    /// Renames a custom role or changes its permissions.
    pub async fn update_role(&self, who: &Principal, id: i64, patch: RolePatch) -> Result<Role> {
        who.require(Module::Users, Op::Update)?;
        let key = patch.name.as_deref().map(|n| check_name("name", n, 128)).transpose()?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.visible_role(w.conn(), who, id).await?;
        if before.builtin {
            return Err(StoreError::Conflict(format!("{} is a built-in role and cannot change", before.name)));
        }
        Store::check_manage(who, before.org_id)?;
        if !before.permissions.is_subset_of(who.perms) || patch.permissions.is_some_and(|p| !p.is_subset_of(who.perms))
        {
            return Err(StoreError::forbidden("a role cannot grant more than your own role"));
        }
        let mut q = Sql::new("UPDATE roles SET updated_at = ");
        q.bind(now);
        if let (Some(name), Some(key)) = (&patch.name, key) {
            q.push(", name = ").bind(name.clone()).push(", name_key = ").bind(key);
        }
        if let Some(p) = patch.permissions {
            q.push(", perms = ").bind(p.bits());
        }
        q.push(" WHERE id = ").bind(id);
        match q.build().execute(w.conn()).await {
            Err(e) if StoreError::is_unique_violation(&e) => {
                return Err(StoreError::Conflict("this org already has a role with that name".into()));
            }
            r => r?,
        };
        let after = self.visible_role(w.conn(), &Principal::cli(), id).await?;
        w.finish(
            now,
            who,
            AuditRow::new(Some(after.org_id), "update", "role", Some(id), Some(json(&before)), Some(json(&after))),
        )
        .await?;
        Ok(after)
    }

    /// Deletes a custom role no user holds.
    pub async fn delete_role(&self, who: &Principal, id: i64) -> Result<()> {
        who.require(Module::Users, Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.visible_role(w.conn(), who, id).await?;
        if before.builtin {
            return Err(StoreError::Conflict(format!("{} is a built-in role and cannot be deleted", before.name)));
        }
        Store::check_manage(who, before.org_id)?;
        let mut q = Sql::new("DELETE FROM roles WHERE id = ");
        q.bind(id);
        match q.build().execute(w.conn()).await {
            Err(e) if is_fk_violation(&e) => {
                return Err(StoreError::Conflict(format!("role {} is still held by users", before.name)));
            }
            r => r?,
        };
        w.finish(now, who, AuditRow::new(Some(before.org_id), "delete", "role", Some(id), Some(json(&before)), None))
            .await
    }

    // ---- teams ----

    async fn teams(&self, conn: &mut AnyConnection, mut q: Sql) -> Result<Vec<Team>> {
        q.push(" ORDER BY id");
        let rows = q.build().fetch_all(&mut *conn).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id = r.int("id")?;
            let mut m = Sql::new("SELECT user_id FROM team_members WHERE team_id = ");
            m.bind(id).push(" ORDER BY user_id");
            let members =
                m.build().fetch_all(&mut *conn).await?.iter().map(|r| r.int("user_id")).collect::<Result<_>>()?;
            out.push(Team {
                id,
                org_id: r.int("org_id")?,
                name: r.text("name")?,
                members,
                created_at: fmt_ms(r.int("created_at")?),
            });
        }
        Ok(out)
    }

    async fn visible_team(&self, conn: &mut AnyConnection, who: &Principal, id: i64) -> Result<Team> {
        let mut q = Sql::new("SELECT id, org_id, name, created_at FROM teams WHERE id = ");
        q.bind(id);
        who.org_filter(&mut q, "org_id");
        self.teams(conn, q).await?.pop().ok_or(StoreError::NotFound("team"))
    }

    async fn set_members(&self, conn: &mut AnyConnection, team: i64, org: i64, members: &[i64]) -> Result<()> {
        let mut q = Sql::new("DELETE FROM team_members WHERE team_id = ");
        q.bind(team);
        q.build().execute(&mut *conn).await?;
        for user in members {
            let mut q = Sql::new("SELECT org_id FROM users WHERE id = ");
            q.bind(*user);
            let user_org = q.build().fetch_optional(&mut *conn).await?.map(|r| r.int("org_id")).transpose()?;
            if user_org != Some(org) {
                return Err(StoreError::refused("members", format!("user {user} is not a user of the team's org")));
            }
            let mut q = Sql::new("INSERT INTO team_members (team_id, user_id) VALUES (");
            q.bind(team).push(", ").bind(*user).push(") ON CONFLICT DO NOTHING");
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Teams of orgs `who` sees.
    pub async fn list_teams(&self, who: &Principal) -> Result<Page<Team>> {
        who.require(Module::Users, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let mut q = Sql::new("SELECT id, org_id, name, created_at FROM teams WHERE 1 = 1");
        who.org_filter(&mut q, "org_id");
        Ok(Page { items: self.teams(&mut conn, q).await?, next_cursor: None })
    }

    /// One team.
    pub async fn get_team(&self, who: &Principal, id: i64) -> Result<Team> {
        who.require(Module::Users, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        self.visible_team(&mut conn, who, id).await
    }

    /// Creates a team.
    pub async fn create_team(&self, who: &Principal, new: NewTeam) -> Result<Team> {
        who.require(Module::Users, Op::Create)?;
        let key = check_name("name", &new.name, 128)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let org = self.resolve_org(w.conn(), who, &new.org.clone().unwrap_or(OrgRef::Id(who.org_id))).await?;
        Store::check_manage(who, org)?;
        let mut q = Sql::new("INSERT INTO teams (org_id, name, name_key, created_at, updated_at) VALUES (");
        q.bind(org).push(", ").bind(new.name.clone()).push(", ").bind(key).push(", ").bind(now).push(", ");
        q.bind(now).push(") RETURNING id");
        let id = insert_id(w.conn(), q, || format!("this org already has a team named {:?}", new.name)).await?;
        self.set_members(w.conn(), id, org, &new.members).await?;
        let team = self.visible_team(w.conn(), &Principal::cli(), id).await?;
        w.finish(now, who, AuditRow::new(Some(org), "create", "team", Some(id), None, Some(json(&team)))).await?;
        Ok(team)
    }

    /// Renames a team or replaces its members.
    pub async fn update_team(&self, who: &Principal, id: i64, patch: TeamPatch) -> Result<Team> {
        who.require(Module::Users, Op::Update)?;
        let key = patch.name.as_deref().map(|n| check_name("name", n, 128)).transpose()?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.visible_team(w.conn(), who, id).await?;
        Store::check_manage(who, before.org_id)?;
        let mut q = Sql::new("UPDATE teams SET updated_at = ");
        q.bind(now);
        if let (Some(name), Some(key)) = (&patch.name, key) {
            q.push(", name = ").bind(name.clone()).push(", name_key = ").bind(key);
        }
        q.push(" WHERE id = ").bind(id);
        match q.build().execute(w.conn()).await {
            Err(e) if StoreError::is_unique_violation(&e) => {
                return Err(StoreError::Conflict("this org already has a team with that name".into()));
            }
            r => r?,
        };
        if let Some(members) = &patch.members {
            self.set_members(w.conn(), id, before.org_id, members).await?;
        }
        let after = self.visible_team(w.conn(), &Principal::cli(), id).await?;
        w.finish(
            now,
            who,
            AuditRow::new(Some(after.org_id), "update", "team", Some(id), Some(json(&before)), Some(json(&after))),
        )
        .await?;
        Ok(after)
    }

    /// Deletes a team.
    pub async fn delete_team(&self, who: &Principal, id: i64) -> Result<()> {
        who.require(Module::Users, Op::Delete)?;
        let now = self.now_ms();
        let mut w = self.write().await?;
        let before = self.visible_team(w.conn(), who, id).await?;
        Store::check_manage(who, before.org_id)?;
        let mut q = Sql::new("DELETE FROM teams WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        w.finish(now, who, AuditRow::new(Some(before.org_id), "delete", "team", Some(id), Some(json(&before)), None))
            .await
    }

    /// The teams a user belongs to.
    pub(crate) async fn teams_of(&self, conn: &mut AnyConnection, user: i64) -> Result<Vec<i64>> {
        let mut q = Sql::new("SELECT team_id FROM team_members WHERE user_id = ");
        q.bind(user).push(" ORDER BY team_id");
        q.build().fetch_all(&mut *conn).await?.iter().map(|r| r.int("team_id")).collect()
    }

    // ---- tokens ----

    /// May `who` manage `target`'s tokens? Their own, always; others' with
    /// users:update on a user they see whose role is within their own.
    async fn check_token_target(&self, conn: &mut AnyConnection, who: &Principal, target: i64) -> Result<User> {
        let user = self.visible_user(conn, who, target).await?;
        if who.user_id == Some(target) {
            return Ok(user);
        }
        who.require(Module::Users, Op::Update)?;
        Store::check_manage(who, user.org_id)?;
        let role = self.visible_role(conn, &Principal::cli(), user.role_id).await?;
        if !role.permissions.is_subset_of(who.perms) {
            return Err(StoreError::forbidden(format!("{} holds a role with more than your own", user.name)));
        }
        Ok(user)
    }

    /// Tokens of the caller, and of the users it manages.
    pub async fn list_tokens(&self, who: &Principal) -> Result<Page<Token>> {
        let mut q = Sql::new(&format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN users u ON u.id = t.user_id WHERE "));
        if who.perms.allows(Module::Users, Op::Read) {
            q.push("1 = 1");
            who.org_filter(&mut q, "u.org_id");
        } else {
            q.push("t.user_id = ").bind(who.user_id.unwrap_or(-1));
        }
        q.push(" ORDER BY t.id");
        let items = q.build().fetch_all(self.pool()).await?.iter().map(token).collect::<Result<_>>()?;
        Ok(Page { items, next_cursor: None })
    }

    /// Creates a token; its secret is in the answer and nowhere else.
    pub async fn create_token(&self, who: &Principal, new: NewToken) -> Result<NewTokenSecret> {
        self.create_token_with_secret(who, new, None).await
    }

    pub(crate) async fn create_token_with_secret(
        &self,
        who: &Principal,
        new: NewToken,
        secret: Option<String>,
    ) -> Result<NewTokenSecret> {
        let target = new.user_id.or(who.user_id).ok_or(StoreError::invalid("user_id", "is required at the CLI"))?;
        let name = new.name.unwrap_or_else(|| "api".into());
        check_name("name", &name, 128)?;
        let expires_at = match new.expires_in_days {
            Some(d) if !(1..=3650).contains(&d) => {
                return Err(StoreError::invalid("expires_in_days", "must be between 1 and 3650"));
            }
            Some(d) => Some(self.now_ms() + d * 86_400_000),
            None => None,
        };
        let secret = match secret {
            Some(s) => s,
            None => auth::new_secret()?,
        };
        let now = self.now_ms();
        let mut w = self.write().await?;
        let user = self.check_token_target(w.conn(), who, target).await?;
        let hint: String = secret.chars().take(8).collect();
        let mut q = Sql::new("INSERT INTO tokens (user_id, name, hash, hint, created_at, expires_at) VALUES (");
        q.bind(target).push(", ").bind(name).push(", ").bind(auth::hash_secret(&secret)).push(", ");
        q.bind(hint).push(", ").bind(now).push(", ").bind(expires_at).push(") RETURNING id");
        let id = insert_id(w.conn(), q, || "that token is already in use".into()).await?;
        let mut q = Sql::new(&format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.id = "));
        q.bind(id);
        let created = token(&q.build().fetch_one(w.conn()).await?)?;
        w.finish(now, who, AuditRow::new(Some(user.org_id), "create", "token", Some(id), None, Some(json(&created))))
            .await?;
        Ok(NewTokenSecret { token: created, token_secret: secret })
    }

    /// Revokes a token.
    pub async fn delete_token(&self, who: &Principal, id: i64) -> Result<()> {
        let now = self.now_ms();
        let mut w = self.write().await?;
        let mut q = Sql::new(&format!("SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.id = "));
        q.bind(id);
        let found = q.build().fetch_optional(w.conn()).await?.map(|r| token(&r)).transpose()?;
        let found = found.ok_or(StoreError::NotFound("token"))?;
        let user = match self.check_token_target(w.conn(), who, found.user_id).await {
            Err(StoreError::Forbidden(_) | StoreError::NotFound(_)) => return Err(StoreError::NotFound("token")),
            r => r?,
        };
        let mut q = Sql::new("DELETE FROM tokens WHERE id = ");
        q.bind(id);
        q.build().execute(w.conn()).await?;
        w.finish(now, who, AuditRow::new(Some(user.org_id), "delete", "token", Some(id), Some(json(&found)), None))
            .await
    }
}
