//! What the search endpoint runs: one read-only query. Anything else is
//! refused before planning, with a message that says what is allowed;
//! DataFusion's own checks (no DDL, DML or `SET`) stand behind this one.

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{SetExpr, Statement};

use crate::SearchError;

/// Longest SQL text accepted, bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;

const ALLOWED: &str = "search runs one read-only query: SELECT (or WITH … SELECT) over the table `events`";

/// Checks that `sql` is exactly one SELECT query.
pub(crate) fn check(sql: &str) -> Result<(), SearchError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(SearchError::Refused(format!("the query is longer than {MAX_SQL_BYTES} bytes")));
    }
    if sql.trim().is_empty() {
        return Err(SearchError::Refused(format!("the query is empty; {ALLOWED}")));
    }
    let statements = DFParser::parse_sql(sql).map_err(|e| SearchError::Query(format!("SQL syntax: {e}")))?;
    let mut statements = statements.into_iter();
    let (Some(first), None) = (statements.next(), statements.next()) else {
        return Err(SearchError::Refused(format!("several statements were given; {ALLOWED}")));
    };
    let what = match &first {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(q) => match q.body.as_ref() {
                SetExpr::Select(s) if s.into.is_some() => "SELECT … INTO",
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => "a change",
                _ => return Ok(()),
            },
            Statement::Explain { .. } | Statement::ExplainTable { .. } => "EXPLAIN",
            Statement::Set(_) => "SET",
            Statement::Copy { .. } => "COPY",
            Statement::CreateTable(_) | Statement::CreateView { .. } | Statement::Drop { .. } => "DDL",
            Statement::Insert(_) | Statement::Update { .. } | Statement::Delete(_) => "a change",
            _ => "this statement",
        },
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
        DfStatement::CopyTo(_) => "COPY",
        DfStatement::Explain(_) => "EXPLAIN",
        DfStatement::Reset(_) => "RESET",
    };
    Err(SearchError::Refused(format!("{what} is not allowed; {ALLOWED}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_select_is_allowed_and_nothing_else() {
        for ok in [
            "SELECT * FROM events",
            "select count(*) from events where src_ip = '1.2.3.4'",
            "WITH f AS (SELECT * FROM events) SELECT host, count(*) FROM f GROUP BY host",
            "SELECT 1 UNION ALL SELECT 2",
            "SELECT * FROM events;",
        ] {
            assert!(check(ok).is_ok(), "{ok}: {:?}", check(ok));
        }
        for (bad, says) in [
            ("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'", "CREATE EXTERNAL TABLE"),
            ("COPY (SELECT 1) TO '/tmp/x.parquet'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("SELECT 1; SELECT 2", "several statements"),
            ("DROP TABLE events", "DDL"),
            ("INSERT INTO events VALUES (1)", "a change"),
            ("CREATE TABLE t AS SELECT * FROM events", "DDL"),
            ("EXPLAIN SELECT * FROM events", "EXPLAIN"),
            ("SELECT * INTO t FROM events", "SELECT … INTO"),
            ("", "empty"),
        ] {
            let err = check(bad).expect_err(bad).to_string();
            assert!(err.contains(says) && err.contains("read-only") || says == "empty", "{bad}: {err}");
        }
        assert!(matches!(check("SELEC * FROM events"), Err(SearchError::Query(_))));
        assert!(check(&"x".repeat(MAX_SQL_BYTES + 1)).is_err());
    }
}
