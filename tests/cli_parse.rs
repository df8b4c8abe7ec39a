//! End to end: the real `vigil` binary, `parse` subcommand.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Output;

use serde_json::Value;

mod common;

use common::{temp_dir, vigil_with_input as vigil};

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("parsers/tests/fixtures/logs").join(name)
}

const NOW: &str = "--now=2026-11-22T12:00:00Z";

#[test]
fn help_lists_subcommands() {
    let out = vigil(&["--help"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("parse"), "{text}");
}

#[test]
fn parses_a_file_one_json_object_per_line() {
    let file = fixture("beats-system-auth_test.log");
    let out = vigil(&["parse", NOW, file.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events = json_lines(&out);
    assert_eq!(events.len(), 10);
    let first = &events[0];
    assert_eq!(first["format"], "rfc3164");
    assert_eq!(first["time"], "2026-02-21T21:54:44Z");
    assert_eq!(first["received_at"], "2026-11-22T12:00:00Z");
    assert_eq!(first["host"], "localhost");
    assert_eq!(first["app"], "sshd");
    assert_eq!(first["procid"], "3402");
    assert_eq!(first["event_type"], "ssh.auth.success");
    assert_eq!(first["src_ip"], "10.0.2.2");
    assert_eq!(first["src_port"], 63673);
    assert!(first["raw"].as_str().unwrap().starts_with("Feb 21 21:54:44 localhost sshd[3402]"));
    // Absent fields are omitted, not null.
    assert!(first.get("msgid").is_none() && first.get("sd").is_none() && first.get("parse_error").is_none());
}

#[test]
fn every_line_is_an_event_raw_included_and_exit_is_zero() {
    let input = b"<34>1 2003-10-11T22:14:15.003Z host su - ID47 [a b=\"c\"] hello\nnot a syslog line\nCEF:0|V|P|1|42|Name|5|src=10.0.0.1 msg=a\\=b\n\xff\xfe binary\n";
    let out = vigil(&["parse", NOW, "-"], Some(input));
    assert!(out.status.success());
    let events = json_lines(&out);
    assert_eq!(events.len(), 4);
    assert_eq!(events[0]["format"], "rfc5424");
    assert_eq!(events[0]["sd"]["a"]["b"], "c");
    assert_eq!(events[0]["time"], "2003-10-11T22:14:15.003Z");
    assert_eq!(events[1]["format"], "raw");
    assert!(events[1]["parse_error"].as_str().unwrap().contains("syslog header"));
    assert_eq!(events[1]["message"], "not a syslog line");
    assert_eq!(events[2]["format"], "cef");
    assert_eq!(events[2]["ext"]["msg"], "a=b");
    assert_eq!(events[2]["src_ip"], "10.0.0.1");
    assert_eq!(events[3]["format"], "raw");
    assert_eq!(events[3]["raw"], "\u{fffd}\u{fffd} binary");
}

#[test]
fn missing_file_is_a_clear_error_with_exit_2() {
    let out = vigil(&["parse", "/nonexistent/vigil.log"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open /nonexistent/vigil.log") && err.contains("No such file"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn bad_options_exit_2_with_the_reason() {
    let out = vigil(&["parse", "--tz", "Mars/Olympus", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown time zone \"Mars/Olympus\""));
    let out = vigil(&["parse", "--format", "xml", "-"], Some(b""));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown format \"xml\""));
}

#[test]
fn forced_format_zone_and_year() {
    let line = b"<13>Jan 30 02:08:03 host app: Test\n";
    let out = vigil(&["parse", NOW, "--format", "rfc5424", "-"], Some(line));
    assert_eq!(json_lines(&out)[0]["format"], "raw");
    let out = vigil(&["parse", NOW, "--tz", "America/New_York", "--year", "2019", "-"], Some(line));
    assert_eq!(json_lines(&out)[0]["time"], "2019-01-30T02:08:03-05:00");
    let out = vigil(&["parse", NOW, "--tz", "+05:30", "-"], Some(line));
    assert_eq!(json_lines(&out)[0]["time"], "2026-01-30T02:08:03+05:30");
}

#[test]
fn long_lines_are_truncated_and_flagged_not_dropped() {
    let mut input = b"<13>Jan 30 02:08:03 host app: ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 500));
    input.extend_from_slice(b"\n<13>Jan 30 02:08:04 host app: short\n");
    let out = vigil(&["parse", NOW, "--max-line", "100", "--stats", "-"], Some(&input));
    let events = json_lines(&out);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["truncated"], true);
    assert_eq!(events[0]["raw"].as_str().unwrap().len(), 100);
    assert_eq!(events[1]["message"], "short");
    assert!(events[1].get("truncated").is_none());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 lines"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn many_lines_keep_their_order_across_threads() {
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend_from_slice(format!("<13>Nov 22 10:00:00 h app: line {i}\n").as_bytes());
    }
    let out = vigil(&["parse", NOW, "--threads", "3", "--no-devices", "-"], Some(&input));
    let events = json_lines(&out);
    assert_eq!(events.len(), 20_000);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["message"], format!("line {i}"));
    }
}

#[test]
fn extra_pattern_directory_classifies_new_devices() {
    let dir = temp_dir("patterns");
    std::fs::write(
        dir.join("acme.toml"),
        "name = \"acme\"\n[[match]]\napps = [\"acme-vpn\"]\n[[pattern]]\ntemplate = \"login failed for {user:word} from {src_ip:ip}\"\nevent_type = \"vpn.auth.failure\"\n",
    )
    .unwrap();
    let line = b"<13>Nov 22 10:00:00 gw acme-vpn: login failed for eve from 192.0.2.66\n";
    let out = vigil(&["parse", NOW, "--patterns", dir.to_str().unwrap(), "-"], Some(line));
    let e = &json_lines(&out)[0];
    assert_eq!(e["event_type"], "vpn.auth.failure");
    assert_eq!(e["user"], "eve");
    assert_eq!(e["src_ip"], "192.0.2.66");

    std::fs::write(
        dir.join("broken.toml"),
        "name = \"b\"\n[[match]]\napps = [\"x\"]\n[[pattern]]\ntemplate = \"{user:float}\"\n",
    )
    .unwrap();
    let out = vigil(&["parse", "--patterns", dir.to_str().unwrap(), "-"], Some(line));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("broken.toml:5: unknown hole kind \"float\""), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}
