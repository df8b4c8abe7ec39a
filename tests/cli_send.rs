//! `vigil send` against listeners in this test: every line arrives once, in
//! order, framed as asked; loops stop at the limit; bad targets are one
//! clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

const FILE: &str = "parsers/tests/fixtures/logs/beats-system-auth_test.log";

fn file_lines() -> Vec<String> {
    #[allow(clippy::disallowed_methods)] // a 10-line fixture
    let text = std::fs::read_to_string(FILE).unwrap();
    text.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Runs `vigil send` against a TCP listener and returns what arrived.
fn over_tcp(extra: &[&str]) -> (Vec<u8>, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut all = Vec::new();
        #[allow(clippy::disallowed_methods)] // bounded by the sender's --limit
        conn.read_to_end(&mut all).unwrap();
        all
    });
    let to = format!("tcp://127.0.0.1:{port}");
    let mut args = vec!["send", "--to", &to, "--quiet"];
    args.extend_from_slice(extra);
    args.push(FILE);
    let out = common::vigil_with_input(&args, None);
    assert!(out.status.success(), "{}", common::stderr(&out));
    (reader.join().unwrap(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn tcp_lines_arrive_once_and_in_order() {
    let (got, report) = over_tcp(&[]);
    let got = String::from_utf8(got).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines, file_lines());
    assert!(report.starts_with("sent 10 lines"), "{report}");
    assert!(report.contains("lines/s"));
}

#[test]
fn octet_counting_loop_limit_and_rate() {
    let (got, report) = over_tcp(&["--octet-counting", "--loop", "--limit", "25", "--rate", "5000"]);
    // Parse "LEN SP MSG" frames back.
    let mut frames = Vec::new();
    let mut rest = &got[..];
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').unwrap();
        let len: usize = std::str::from_utf8(&rest[..sp]).unwrap().parse().unwrap();
        frames.push(String::from_utf8(rest[sp + 1..sp + 1 + len].to_vec()).unwrap());
        rest = &rest[sp + 1 + len..];
    }
    let lines = file_lines();
    let expected: Vec<String> = lines.iter().cycle().take(25).cloned().collect();
    assert_eq!(frames, expected);
    assert!(report.starts_with("sent 25 lines"), "{report}");
}

#[test]
fn udp_sends_one_datagram_per_line() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let to = format!("udp://{}", socket.local_addr().unwrap());
    let out = common::vigil_with_input(&["send", "--to", &to, "--quiet", "--rate", "2000", FILE], None);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let mut buf = [0u8; 65_536];
    let mut got = Vec::new();
    for _ in 0..10 {
        let n = socket.recv(&mut buf).unwrap();
        got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    assert_eq!(got, file_lines());
}

#[test]
fn bad_targets_are_clear_errors() {
    for (to, message) in [
        ("127.0.0.1:1", "expected tcp://HOST:PORT"),
        ("ftp://127.0.0.1:1", "unknown scheme"),
        ("tcp://127.0.0.1:1", "cannot connect"),
        ("tls://127.0.0.1:1", "tls:// needs --ca FILE"),
    ] {
        let out = common::vigil_with_input(&["send", "--to", to, FILE], None);
        assert!(!out.status.success());
        assert!(common::stderr(&out).contains(message), "{to}: {}", common::stderr(&out));
    }
    let out = common::vigil_with_input(&["send", "--to", "tcp://127.0.0.1:1", "no-such-file.log"], None);
    assert!(common::stderr(&out).contains("cannot open no-such-file.log"), "{}", common::stderr(&out));
}
