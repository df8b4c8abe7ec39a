//! End to end: `vigil run` raises an incident from real sshd lines and a
//! policy forwards it as CEF over syslog to a second `vigil run`, which
//! stores it as a CEF event; configured and inspected with the real
//! `vigil connector` and `vigil policy` commands.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::run::{CONFIG, launch, ssh_attack, start, start_with, write_lines};
use serde_json::{Value, json};

/// The requests a receiver got: head and body of each.
type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A webhook receiver on `listener` (a thread): answers 200 to every
/// request and keeps each request's head and body.
fn receiver(listener: TcpListener) -> Requests {
    let got: Requests = Arc::default();
    let kept = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The head, then as much body as Content-Length says (bounded).
            let (head, body_start) = loop {
                let Ok(n) = stream.read(&mut chunk) else { break (String::new(), 0) };
                if n == 0 || buf.len() > 1 << 20 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..i]).into_owned(), i + 4);
                }
            };
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
                .min(1 << 20);
            while buf.len() < body_start + length {
                match stream.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = buf.get(body_start..).unwrap_or_default().to_vec();
            kept.lock().unwrap().push((head, body));
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    got
}

#[test]
fn a_receiver_down_through_a_restart_still_gets_the_incident_once() {
    let config = format!(
        "{CONFIG}[connectors]\nallow_private_targets = true\nretry_base_secs = 0.2\nretry_max_secs = 0.5\nmax_attempts = 100\n"
    );
    let v = start_with("conn-restart", &config, None);
    // A port nobody listens on yet.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    v.cli(&["org", "create", "Acme", "--ip-range", "10.1.0.0/16"]);
    let url = format!("http://127.0.0.1:{port}/hook");
    v.cli(&["connector", "add", "acme-hook", "--org", "Acme", "--type", "webhook", "--url", &url]);
    v.cli(&["policy", "add", "all", "--org", "Acme", "--connector", "acme-hook", "--on", "created"]);
    v.wait_orgs(3);
    let file = v.dir.join("attack.log");
    write_lines(&file, ssh_attack("10.1.0.5", "203.0.113.46", 8).into_iter());
    v.send(&file, &[]);
    v.wait("attempts at the receiver that is down", |v| {
        v.get("/deliveries", &v.token).1["items"][0]["attempts"].as_i64().unwrap_or(0) >= 2
    });
    let (dir, token) = (v.dir.clone(), v.token.clone());
    assert!(v.stop().0);

    // The receiver comes up while vigil is down; vigil starts again.
    let got = receiver(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let v = launch(dir, None, Some(token));
    v.wait("the delivery after the restart", |v| v.get("/deliveries", &v.token).1["items"][0]["state"] == "delivered");
    let (_, list) = v.get("/deliveries", &v.token);
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let id = list["items"][0]["id"].as_i64().unwrap();
    let (_, one) = v.get(&format!("/deliveries/{id}"), &v.token);
    let outcomes: Vec<&str> =
        one["attempt_log"].as_array().unwrap().iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes.last(), Some(&"delivered"), "{one}");
    assert!(outcomes[..outcomes.len() - 1].iter().all(|o| *o == "retry"), "{one}");
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once");
    let head = got[0].0.to_ascii_lowercase();
    let delivery_id = one["delivery_id"].as_str().unwrap();
    assert!(head.contains(&format!("x-vigil-delivery: {delivery_id}")), "{head}");
    let payload: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(payload["org"], "Acme");
    assert!(v.stop().0);
}

#[test]
fn an_incident_is_forwarded_as_cef_to_another_siem() {
    let siem = start("conn-siem");
    let config = format!("{CONFIG}[connectors]\nallow_private_targets = true\nretry_base_secs = 0.2\n");
    let v = start_with("conn-source", &config, None);
    v.cli(&["org", "create", "Acme", "--ip-range", "10.1.0.0/16"]);
    let added = v.cli(&["connector", "add", "acme-siem", "--org", "Acme", "--type", "syslog", "--target", &siem.tcp]);
    assert!(added.starts_with("added connector acme-siem"), "{added}");
    let added = v.cli(&[
        "policy",
        "add",
        "forward-high",
        "--org",
        "Acme",
        "--connector",
        "acme-siem",
        "--on",
        "created,status",
        "--min-severity",
        "medium",
        "--throttle",
        "10m",
    ]);
    assert!(added.contains("created,status via acme-siem"), "{added}");
    let listed = v.cli(&["connector", "list"]);
    assert!(listed.contains("acme-siem") && listed.contains(&siem.tcp), "{listed}");
    assert!(v.cli(&["policy", "list"]).contains("forward-high"));
    // The health check reaches the other SIEM's listener.
    let tested = v.cli(&["connector", "test", "acme-siem", "--config", v.dir.join("vigil.toml").to_str().unwrap()]);
    assert!(tested.starts_with("acme-siem: ok"), "{tested}");
    v.wait_orgs(3);

    let file = v.dir.join("attack.log");
    write_lines(&file, ssh_attack("10.1.0.5", "203.0.113.45", 8).into_iter());
    v.send(&file, &[]);
    v.wait("the forwarded incident", |v| {
        v.get("/deliveries?state=delivered", &v.token).1["items"].as_array().is_some_and(|i| !i.is_empty())
    });
    let (_, deliveries) = v.get("/deliveries", &v.token);
    let delivery = deliveries["items"][0].clone();
    assert_eq!((delivery["event"].as_str(), delivery["connector"].as_str()), (Some("created"), Some("acme-siem")));
    let delivery_id = delivery["delivery_id"].as_str().unwrap().to_owned();

    // The other SIEM stored it as a CEF event carrying the delivery id.
    let query = json!({ "sql": "SELECT format, vendor, product, message, ext FROM events WHERE format = 'cef'" });
    siem.wait("the CEF event stored", |s| {
        s.post("/search", &s.token, &query).1["rows"].as_array().is_some_and(|r| !r.is_empty())
    });
    let (_, found) = siem.post("/search", &siem.token, &query);
    let row = &found["rows"][0];
    assert_eq!((row[0].as_str(), row[1].as_str()), (Some("cef"), Some("vigil")), "{found}");
    let ext: Value = match &row[4] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    assert_eq!(ext["externalId"], delivery_id.as_str(), "{found}");
    assert_eq!(ext["cs1"], "Acme", "the org travels as cs1: {ext}");

    // A policy cannot be added with a template that does not compile.
    let bad = v.dir.join("bad.tmpl");
    std::fs::write(&bad, "{{ title\nbody").unwrap();
    let out = common::vigil_with_input(
        &[
            "policy",
            "add",
            "broken",
            "--org",
            "Acme",
            "--connector",
            "acme-siem",
            "--on",
            "created",
            "--template",
            bad.to_str().unwrap(),
            "--data-dir",
            v.dir.join("data").to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(common::stderr(&out).contains("title_template"), "{}", common::stderr(&out));
    // Removing the configuration is refused while the policy uses it.
    let out = common::vigil_with_input(
        &["connector", "remove", "acme-siem", "--data-dir", v.dir.join("data").to_str().unwrap()],
        None,
    );
    assert!(!out.status.success() && common::stderr(&out).contains("forward-high"), "{}", common::stderr(&out));
    v.cli(&["policy", "remove", "forward-high"]);
    v.cli(&["connector", "remove", "acme-siem"]);
    assert!(!v.cli(&["connector", "list"]).contains("acme-siem"));
    assert!(v.stop().0);
    assert!(siem.stop().0);
}

#[test]
fn the_egress_guard_refuses_loopback_unless_allowed() {
    let v = start("conn-egress");
    v.cli(&["org", "create", "Acme", "--ip-range", "10.1.0.0/16"]);
    v.cli(&["connector", "add", "inside", "--org", "Acme", "--type", "syslog", "--target", &v.tcp]);
    let out = common::vigil_with_input(
        &["connector", "test", "inside", "--data-dir", v.dir.join("data").to_str().unwrap()],
        None,
    );
    assert!(!out.status.success(), "loopback refused without allow_private_targets");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("allow_private_targets"), "{text}");
    assert!(v.stop().0);
}
