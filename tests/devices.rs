//! End to end: the device inventory of the real `vigil run`, fed by the
//! real `vigil send` through a relay (every line comes from 127.0.0.1, a
//! relay by default, so each HOSTNAME is a device of its own), under a
//! licence signed with the repository's test key that allows 3 devices.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::run::{CONFIG, Vigil, start_with, write_lines};
use common::{signed_licence, temp_dir};

const BODY: &str = "customer = \"Acme Corp\"\nlicensed_eps = 5000\ndevice_limit = 3\nissued = \"2026-11-01\"\nexpires = \"2036-10-31\"\n";

/// `vigil run` under a 3-device licence with `policy`; `None` when this
/// build does not trust the test key.
fn licensed(tag: &str, policy: &str) -> Option<Vigil> {
    let dir = temp_dir(&format!("{tag}-licence"));
    let licence = signed_licence(&dir, BODY)?;
    let config = format!(
        "license = {:?}\n{CONFIG}[devices]\nreport_secs = 1.0\nlimit_policy = \"{policy}\"\n",
        licence.display().to_string()
    );
    let v = start_with(tag, &config, None);
    // The collector applies the limit once the supervisor's first pass
    // has sent it.
    v.wait("the device limit applied", |v| v.metric("vigil_device_limit_applied", &[]) == 3);
    Some(v)
}

/// One line from each of `hosts`, relayed.
fn send_from(v: &Vigil, name: &str, hosts: &[&str]) {
    let file = v.dir.join(name);
    write_lines(
        &file,
        hosts.iter().map(|h| {
            format!("<38>Dec  2 10:15:42 {h} sshd[1]: Accepted password for bob from 192.0.2.9 port 4000 ssh2")
        }),
    );
    assert!(v.send(&file, &[]).starts_with(&format!("sent {} lines", hosts.len())));
}

fn devices(v: &Vigil) -> Vec<serde_json::Value> {
    v.get("/devices?limit=1000", &v.token).1["items"].as_array().cloned().unwrap_or_default()
}

const HOSTS: [&str; 5] = ["fw-1", "FW-2.", "fw-3", "fw-4", "fw-5"];

#[test]
fn devices_beyond_the_licence_are_dropped_and_counted_under_policy_enforce() {
    let Some(v) = licensed("devices-enforce", "enforce") else { return };
    send_from(&v, "first.log", &HOSTS);
    v.wait("5 events decided", |v| {
        v.metric("vigil_events_accepted_total", &[])
            + v.metric("vigil_events_dropped_total", &["reason=\"device_limit\""])
            == 5
    });
    assert_eq!(v.metric("vigil_events_accepted_total", &[]), 3);
    assert_eq!(v.metric("vigil_events_dropped_total", &["reason=\"device_limit\""]), 2);
    v.wait("5 devices in the inventory", |v| {
        devices(v).len() == 5 && devices(v).iter().filter(|d| d["within_limit"] == false).count() == 2
    });
    let all = devices(&v);
    let beyond: Vec<&str> =
        all.iter().filter(|d| d["within_limit"] == false).map(|d| d["identity"].as_str().unwrap()).collect();
    assert_eq!(beyond, ["fw-4", "fw-5"], "first seen first: {all:?}");
    assert!(all.iter().any(|d| d["identity"] == "fw-2"), "names are normalized: {all:?}");
    assert!(all.iter().all(|d| d["family"] == "openssh" && d["org"] == "Super/Local"), "{all:?}");
    v.wait("the provider's alert", |v| {
        v.get("/incidents?rule=device-limit", &v.token).1["items"].as_array().map_or(0, Vec::len) == 1
    });
    let (_, alert) = v.get("/incidents?rule=device-limit", &v.token);
    let title = alert["items"][0]["title"].as_str().unwrap().to_owned();
    assert!(title.contains("5 active devices") && title.contains("allows 3"), "{title}");
    assert!(alert["items"][0]["description"].as_str().unwrap().contains("policy enforce"), "{alert}");
    // The same devices again: still the same three through.
    send_from(&v, "second.log", &HOSTS);
    v.wait("10 events decided", |v| v.metric("vigil_events_accepted_total", &[]) == 6);
    assert_eq!(v.metric("vigil_events_dropped_total", &["reason=\"device_limit\""]), 4);
    let listed = v.cli(&["device", "list"]);
    assert_eq!(listed.lines().filter(|l| l.ends_with("beyond")).count(), 2, "{listed}");
    assert!(listed.contains("5 devices"), "{listed}");
    let (ok, last) = v.stop();
    assert!(ok);
    assert_eq!(last, "vigil: stopped; 6 events accepted, 6 written to Parquet");
}

#[test]
fn devices_beyond_the_licence_are_accepted_counted_and_alerted_under_policy_alert() {
    let Some(v) = licensed("devices-alert", "alert") else { return };
    send_from(&v, "first.log", &HOSTS);
    v.wait("5 events accepted", |v| v.metric("vigil_events_accepted_total", &[]) == 5);
    assert_eq!(v.metric("vigil_device_limit_accepted_total", &[]), 2);
    assert_eq!(v.metric("vigil_events_dropped_total", &["reason=\"device_limit\""]), 0);
    v.wait("the provider's alert", |v| {
        v.get("/incidents?rule=device-limit", &v.token).1["items"].as_array().map_or(0, Vec::len) == 1
    });
    let (_, alert) = v.get("/incidents?rule=device-limit", &v.token);
    assert!(alert["items"][0]["description"].as_str().unwrap().contains("policy alert"), "{alert}");
    assert_eq!(v.metric("vigil_devices_beyond_limit", &[]), 2);
    // Retiring two devices makes room: the alert is resolved.
    for d in devices(&v).iter().filter(|d| d["identity"] == "fw-1" || d["identity"] == "fw-2") {
        let id = d["id"].as_i64().unwrap();
        let (status, body) = v.patch(&format!("/devices/{id}"), &v.token, &serde_json::json!({ "retired": true }));
        assert_eq!(status, 200, "{body}");
    }
    v.wait("the alert resolved", |v| {
        v.get("/incidents?rule=device-limit&status=resolved", &v.token).1["items"].as_array().map_or(0, Vec::len) == 1
    });
    let (ok, last) = v.stop();
    assert!(ok);
    assert_eq!(last, "vigil: stopped; 5 events accepted, 5 written to Parquet");
}
