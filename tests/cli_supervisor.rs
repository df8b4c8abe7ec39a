//! End to end: `vigil supervisor` on an ephemeral loopback port, the admin
//! CLI writing to the same store while it runs, and the API seen by a
//! bootstrap admin and by an org user made with the CLI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

struct Server {
    child: Child,
    api: String,
    token: Option<String>,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    start_with(&["--data-dir", dir.to_str().unwrap()])
}

fn start_with(store: &[&str]) -> Server {
    let (child, lines) = common::spawn_with_lines(
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["supervisor", "--api-addr", "127.0.0.1:0"])
            .args(store)
            .env_remove("VIGIL_ADMIN_TOKEN")
            .env_remove("VIGIL_DATABASE"),
    );
    let (mut api, mut token) = (None, None);
    while api.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(60)).expect("supervisor did not start within 60 s");
        if let Some(t) = line.strip_prefix("admin token (shown once; keep it): ") {
            token = Some(t.to_owned());
        }
        if let Some(rest) = line.strip_prefix("api: ") {
            api = rest.split_whitespace().next().map(str::to_owned);
        }
    }
    Server { child, api: api.unwrap(), token, lines }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn get(api: &str, path: &str, token: &str) -> (u16, Value) {
    let mut resp =
        agent().get(format!("{api}{path}")).header("Authorization", format!("Bearer {token}")).call().unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn post(api: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
    let mut resp = agent()
        .post(format!("{api}{path}"))
        .header("Authorization", format!("Bearer {token}"))
        .send_json(body)
        .unwrap();
    (resp.status().as_u16(), resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn cli(dir: &std::path::Path, args: &[&str]) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let d = dir.to_str().unwrap();
    all.extend(["--data-dir", d]);
    let out = common::vigil_with_input(&all, None);
    assert!(out.status.success(), "vigil {args:?}: {}", common::stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn supervisor_serves_the_api_and_the_cli_administers_the_same_store() {
    let dir = common::temp_dir("supervisor");
    let server = start(&dir);
    let api = server.api.clone();
    let admin = server.token.clone().expect("a new store prints its admin token");
    let (status, me) = get(&api, "/me", &admin);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["org"], "Super/Global");

    // The CLI works on the store while the server runs.
    assert!(cli(&dir, &["org", "create", "Acme", "--ip-range", "10.1.0.0/16"]).contains("created org Acme"));
    cli(&dir, &["org", "create", "Globex", "--description", "Globex Corp", "--eps-limit", "100"]);
    cli(&dir, &["user", "create", "alice", "--org", "Acme", "--role", "analyst"]);
    let out = cli(&dir, &["token", "create", "--user", "alice"]);
    assert_eq!(out.lines().count(), 1, "the token alone on one line: {out:?}");
    let alice = out.trim().to_owned();
    assert!(alice.starts_with("vgl_"));

    let (status, me) = get(&api, "/me", &alice);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["org"], "Acme");
    for org in ["Acme", "Globex"] {
        let (status, v) = post(
            &api,
            "/incidents",
            &admin,
            json!({ "title": format!("{org} incident"), "severity": "high", "org": org }),
        );
        assert_eq!(status, 201, "{v}");
        assert_eq!(v["org"], org);
        assert_eq!(v["status"], "open");
    }
    let (_, list) = get(&api, "/incidents", &alice);
    let titles: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Acme incident"]);
    let (status, _) = get(&api, "/incidents", "vgl_not-a-token");
    assert_eq!(status, 401);

    cli(&dir, &["org", "disable", "Globex"]);
    let list = cli(&dir, &["org", "list"]);
    let globex = list.lines().find(|l| l.contains("Globex")).unwrap();
    assert!(globex.contains(" no ") && globex.contains("100"), "{globex}");
    assert!(list.lines().any(|l| l.contains("Acme") && l.contains("10.1.0.0/16")));
    // Errors are one clear line and a failing status.
    let out = common::vigil_with_input(&["org", "create", "Acme", "--data-dir", dir.to_str().unwrap()], None);
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("already exists"), "{}", common::stderr(&out));
    let out = common::vigil_with_input(
        &["user", "create", "bob", "--org", "Nowhere", "--role", "viewer", "--data-dir", dir.to_str().unwrap()],
        None,
    );
    assert!(common::stderr(&out).contains("organization not found"), "{}", common::stderr(&out));

    // SIGTERM stops it cleanly; a restart keeps everything and prints no new token.
    let mut server = server;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "supervisor did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let stopped: Vec<String> = server.lines.try_iter().collect();
    assert!(stopped.iter().any(|l| l.contains("stopped")), "{stopped:?}");
    drop(server);

    let again = start(&dir);
    assert!(again.token.is_none(), "the admin token is shown once");
    let (status, me) = get(&again.api, "/me", &alice);
    assert_eq!((status, me["user"]["name"].as_str()), (200, Some("alice")), "everything survives a restart");
    drop(again);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same administration on PostgreSQL, when `VIGIL_TEST_PG` names a
/// server: a fresh database, the CLI with `--database`, the API on it.
#[test]
fn supervisor_and_cli_on_postgresql() {
    let Some(admin_url) = std::env::var("VIGIL_TEST_PG").ok().filter(|u| !u.is_empty()) else {
        eprintln!("skipped: PostgreSQL (VIGIL_TEST_PG not set)");
        return;
    };
    let db = format!("vigil_e2e_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let admin_sql = |sql: String| {
        rt.block_on(async {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let mut c = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.unwrap();
        })
    };
    admin_sql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    admin_sql(format!("CREATE DATABASE {db}"));
    let base = admin_url.split('?').next().unwrap();
    let url = format!("{}/{db}", &base[..base.rfind('/').unwrap()]);

    let server = start_with(&["--database", &url]);
    let root = server.token.clone().expect("a new store prints its admin token");
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--database", &url]);
        let out = common::vigil_with_input(&all, None);
        assert!(out.status.success(), "vigil {args:?}: {}", common::stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["org", "create", "Acme", "--ip-range", "10.1.0.0/16"]);
    run(&["user", "create", "alice", "--org", "Acme", "--role", "viewer"]);
    let alice = run(&["token", "create", "--user", "alice"]).trim().to_owned();
    let (status, me) = get(&server.api, "/me", &alice);
    assert_eq!((status, me["user"]["org"].as_str()), (200, Some("Acme")), "{me}");
    let (status, v) = post(&server.api, "/incidents", &root, json!({ "title": "t", "severity": "low", "org": "Acme" }));
    assert_eq!(status, 201, "{v}");
    let (_, list) = get(&server.api, "/incidents", &alice);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(run(&["org", "list"]).contains("Acme"));
    drop(server);
    admin_sql(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
}
