//! End to end: `vigil node set|maintenance|list` on a fresh data
//! directory, and a running `vigil supervisor` serving what the CLI wrote
//! at `GET /api/v1/nodes` to its administrator, and the unknown-path 404
//! to an org's user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

fn node(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["node"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", dir.to_str().unwrap()]);
    common::vigil_with_input(&all, None)
}

fn ok(dir: &std::path::Path, args: &[&str]) -> String {
    let out = node(dir, args);
    assert!(out.status.success(), "vigil node {args:?}: {}", common::stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn refused(dir: &std::path::Path, args: &[&str]) -> String {
    let out = node(dir, args);
    assert!(!out.status.success(), "vigil node {args:?} should fail");
    assert!(out.stdout.is_empty());
    common::stderr(&out)
}

/// The `vigil node list` row of `name`, split on whitespace.
fn row(list: &str, name: &str) -> Vec<String> {
    let line = list.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {list}"));
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_node_cli_registers_sets_guarantees_and_maintenance() {
    let dir = common::temp_dir("node-cli");
    let list = ok(&dir, &["list"]);
    assert_eq!(list.lines().count(), 1, "a header and no nodes: {list:?}");
    assert!(list.starts_with("NAME") && list.contains("GUARANTEED EPS") && list.contains("REASON"));

    // Without a licence the unlicensed allowance (500 EPS) bounds the sum.
    assert_eq!(
        ok(&dir, &["set", "edge-1", "--guaranteed-eps", "300"]).trim(),
        "node edge-1 (unregistered) is guaranteed 300 EPS"
    );
    ok(&dir, &["set", "edge-2", "--guaranteed-eps", "200"]);
    let e = refused(&dir, &["set", "edge-3", "--guaranteed-eps", "1"]);
    assert!(e.contains("guaranteed EPS would add up to 501, more than the 500 licensed"), "{e}");
    assert_eq!(e.lines().count(), 1, "one clear line: {e}");
    assert_eq!(
        ok(&dir, &["set", "edge-2", "--guaranteed-eps", "none"]).trim(),
        "node edge-2 (unregistered) has no guaranteed EPS"
    );
    assert!(refused(&dir, &["set", "edge-2", "--guaranteed-eps", "lots"]).contains("not a number of EPS or `none`"));

    assert_eq!(ok(&dir, &["maintenance", "edge-1", "on"]).trim(), "node edge-1 is in maintenance");
    assert!(refused(&dir, &["maintenance", "ghost", "on"]).contains("node not found"));
    assert!(refused(&dir, &["maintenance", "edge-1", "maybe"]).contains("invalid value 'maybe'"));

    let list = ok(&dir, &["list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    let edge1 = row(&list, "edge-1");
    assert_eq!(edge1[1..3], ["collector", "maintenance"], "{list}");
    assert_eq!((edge1[4].as_str(), edge1[5].as_str()), ("never", "300"), "{list}");
    assert_eq!(edge1[6..].join(" "), "maintenance started by cli");
    let edge2 = row(&list, "edge-2");
    assert_eq!((edge2[2].as_str(), edge2[5].as_str()), ("unregistered", "-"), "{list}");

    // Never heard from: out of maintenance it is unregistered again.
    assert_eq!(ok(&dir, &["maintenance", "edge-1", "off"]).trim(), "node edge-1 is out of maintenance: unregistered");
    let edge1 = row(&ok(&dir, &["list"]), "edge-1");
    assert_eq!(edge1[2], "unregistered");
    let _ = std::fs::remove_dir_all(&dir);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(api: &str, path: &str, token: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent.get(format!("{api}{path}")).header("Authorization", format!("Bearer {token}")).call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn the_supervisor_serves_the_nodes_the_cli_registered() {
    let dir = common::temp_dir("node-api");
    let d = dir.to_str().unwrap();
    let (child, lines) = common::spawn_with_lines(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["supervisor", "--api-addr", "127.0.0.1:0", "--data-dir", d])
            .env_remove("VIGIL_ADMIN_TOKEN")
            .env_remove("VIGIL_DATABASE"),
    );
    let server = Server(child);
    let (mut api, mut admin) = (None, None);
    while api.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(60)).expect("supervisor did not start within 60 s");
        if let Some(t) = line.strip_prefix("admin token (shown once; keep it): ") {
            admin = Some(t.to_owned());
        }
        if let Some(rest) = line.strip_prefix("api: ") {
            api = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    let (api, admin) = (api.unwrap(), admin.expect("a new store prints its admin token"));

    ok(&dir, &["set", "edge-1", "--guaranteed-eps", "100"]);
    let (status, v) = get(&api, "/nodes", &admin);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["nodes"][0]["name"], "edge-1");
    assert_eq!(v["nodes"][0]["guaranteed_eps"], 100);
    assert_eq!(v["nodes"][0]["state"], "unregistered");

    for args in [&["org", "create", "Acme"][..], &["user", "create", "alice", "--org", "Acme", "--role", "admin"]] {
        let mut all = args.to_vec();
        all.extend(["--data-dir", d]);
        assert!(common::vigil_with_input(&all, None).status.success(), "{args:?}");
    }
    let out = common::vigil_with_input(&["token", "create", "--user", "alice", "--data-dir", d], None);
    let alice = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let nodes = get(&api, "/nodes", &alice);
    assert_eq!(nodes.0, 404);
    assert_eq!(nodes, get(&api, "/no-such-endpoint", &alice));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
