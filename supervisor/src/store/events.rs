//! Whose stored events a caller may search: the orgs it sees, decided here
//! like every other visibility rule, and handed to the search as the only
//! orgs whose files it lists.

use super::Store;
use super::auth::{Module, Op, Principal};
use super::error::{Result, StoreError};
use super::model::{OrgRef, SUPER_GLOBAL};
use super::sql::{RowExt, Sql};

impl Store {
    /// The orgs whose events `who` may search (requires `events: read`):
    /// with `org`, that org alone if `who` sees it (else not found, as for
    /// an org that does not exist); otherwise every org `who` sees.
    /// Super/Global itself holds no events.
    pub async fn event_orgs(&self, who: &Principal, org: Option<&OrgRef>) -> Result<Vec<u32>> {
        who.require(Module::Events, Op::Read)?;
        let mut conn = self.pool().acquire().await?;
        let ids: Vec<i64> = match org {
            Some(r) => {
                let id = self.resolve_org(&mut conn, who, r).await?;
                if !who.sees_org(id) {
                    return Err(StoreError::NotFound("organization"));
                }
                vec![id]
            }
            None => {
                let mut q = Sql::new("SELECT id FROM orgs WHERE 1 = 1");
                who.org_filter(&mut q, "id");
                q.push(" ORDER BY id");
                q.build().fetch_all(&mut *conn).await?.iter().map(|r| r.int("id")).collect::<Result<_>>()?
            }
        };
        Ok(ids.into_iter().filter(|id| *id != SUPER_GLOBAL).filter_map(|id| u32::try_from(id).ok()).collect())
    }
}
