//! End to end: the real `vigil` binary, `rules check` and `rules test`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

mod common;

use common::{stderr, temp_dir, vigil_with_input as vigil};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn incidents(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

const PACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/packs");
const NOW: &str = "--now=2026-11-22T12:00:00Z";

#[test]
fn check_accepts_the_pack_and_reports_every_error_with_its_line() {
    let out = vigil(&["rules", "check", PACK], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("7 rules, 0 errors, 0 warnings"), "{}", stderr(&out));

    let dir = temp_dir("check");
    let bad = write(
        &dir,
        "bad.yaml",
        "id: r\npatterns:\n  p:\n    filter: {srcip: 1.2.3.4, message|re: '(('}\n    having: count >= 5\n",
    );
    let good = write(&dir, "good.yml", "id: g\npatterns: {p: {filter: {event_type: a}}}\n");
    let out = vigil(&["rules", "check", &bad, &good], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(text.contains(&format!("{bad}:4: error: unknown field 'srcip' (did you mean 'src_ip'?)")), "{text}");
    assert!(text.contains(&format!("{bad}:4: error: bad regular expression '(('")), "{text}");
    assert!(text.contains(&format!("{bad}:5: error: window missing")), "{text}");
    assert!(text.contains("3 errors, 0 warnings"), "{text}");

    // A directory is searched for rule files; other files are ignored.
    write(&dir, "notes.txt", "not a rule");
    std::fs::remove_file(dir.join("bad.yaml")).unwrap();
    let out = vigil(&["rules", "check", &dir.display().to_string()], None);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = vigil(&["rules", "check", "/nonexistent/rules"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/rules:0: error: cannot read"), "{}", stderr(&out));
}

fn sshd(host: &str, second: u32, ip: &str) -> String {
    format!(
        "Nov 22 10:00:{second:02} {host} sshd[42]: Failed password for root from {ip} port {} ssh2\n",
        40000 + second
    )
}

#[test]
fn test_separates_tenants_with_an_org_map() {
    let dir = temp_dir("orgs");
    let map = write(&dir, "orgs.toml", "[hosts]\n\"web-01\" = \"acme\"\n[networks]\n\"10.1.0.0/16\" = \"globex\"\n");
    // Three failures on acme's web-01 and three on a globex host from the
    // same address: no tenant sees five. Five more on 10.1.2.3 (globex) do.
    let mut log = String::new();
    for s in 0..3 {
        log.push_str(&sshd("web-01", s, "203.0.113.9"));
        log.push_str(&sshd("10.1.0.5", s, "203.0.113.9"));
    }
    for s in 10..15 {
        log.push_str(&sshd("10.1.2.3", s, "198.51.100.1"));
    }
    for s in 20..25 {
        log.push_str(&sshd("unmapped", s, "198.51.100.2"));
    }
    let input = write(&dir, "auth.log", &log);
    let out = vigil(&["rules", "test", "--input", &input, "--org-map", &map, "--tz", "UTC", NOW], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let found = incidents(&out);
    let summary: Vec<(String, String, String)> = found
        .iter()
        .map(|i| {
            (
                i["rule"].as_str().unwrap().into(),
                i["org"].as_str().unwrap().into(),
                i["key"]["src_ip"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("ssh-brute-force".into(), "globex".into(), "198.51.100.1".into()),
            ("ssh-brute-force".into(), "Super/Local".into(), "198.51.100.2".into()),
        ]
    );
    let first = &found[0];
    for field in ["rule", "org", "severity", "key", "count", "first_seen", "last_seen", "title"] {
        assert!(first.get(field).is_some(), "{field} missing in {first}");
    }
    assert_eq!(first["severity"], "high");
    assert_eq!(first["count"], 1);
    assert_eq!(first["first_seen"], "2026-11-22T10:00:14Z");
    // event_ids are line numbers of the input.
    assert_eq!(first["event_ids"], serde_json::json!([7, 8, 9, 10, 11]));

    // --org sets the default org of unmapped lines.
    let out =
        vigil(&["rules", "test", "--input", &input, "--org-map", &map, "--org", "initech", "--tz", "UTC", NOW], None);
    assert!(incidents(&out).iter().any(|i| i["org"] == "initech"), "{}", String::from_utf8_lossy(&out.stdout));

    // Stdin, custom rules, and identical output on a second run.
    let rule = write(
        &dir,
        "three.yaml",
        "id: three\npatterns:\n  f:\n    filter: {event_type: ssh.auth.failure}\n    group_by: [src_ip]\n    window: 1m\n    having: count >= 3\n",
    );
    let args = ["rules", "test", "--rules", &rule, "--input", "-", "--tz", "UTC", NOW];
    let a = vigil(&args, Some(log.as_bytes()));
    let b = vigil(&args, Some(log.as_bytes()));
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(incidents(&a).len(), 3);
}

#[test]
fn test_reports_bad_options_clearly() {
    let dir = temp_dir("bad");
    let input = write(&dir, "in.log", &sshd("h", 0, "192.0.2.1"));
    let map = write(&dir, "orgs.toml", "[networks]\n\"10.1.0.0/99\" = \"acme\"\n");
    let out = vigil(&["rules", "test", "--input", &input, "--org-map", &map], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad prefix length"), "{}", stderr(&out));
    let map = write(&dir, "typo.toml", "[host]\n\"web\" = \"acme\"\n");
    let out = vigil(&["rules", "test", "--input", &input, "--org-map", &map], None);
    assert!(stderr(&out).contains("unknown field `host`"), "{}", stderr(&out));
    let rule = write(&dir, "broken.yaml", "id: x\npatterns: {p: {filter: {nope: 1}}}\n");
    let out = vigil(&["rules", "test", "--rules", &rule, "--input", &input], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("broken.yaml:2: error: unknown field 'nope'"), "{}", stderr(&out));
    assert!(stderr(&out).contains("the rules do not compile"), "{}", stderr(&out));
    let out = vigil(&["rules", "test", "--input", &input, "--lateness", "10"], None);
    assert!(stderr(&out).contains("needs a unit"), "{}", stderr(&out));
    let out = vigil(&["rules", "test", "--input", "/nonexistent.log"], None);
    assert!(stderr(&out).contains("cannot open /nonexistent.log"), "{}", stderr(&out));
}

#[test]
fn test_on_the_loghub_openssh_sample() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/logs/loghub/OpenSSH_2k.log");
    if !path.exists() {
        eprintln!("skipped: ../shared not present");
        return;
    }
    let out = vigil(
        &["rules", "test", "--input", &path.display().to_string(), "--year", "2024", "--tz", "UTC", "--stats"],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let found = incidents(&out);
    assert_eq!(found.iter().filter(|i| i["rule"] == "ssh-brute-force").count(), 12);
    assert_eq!(found.iter().filter(|i| i["rule"] == "ssh-password-spray").count(), 4);
    assert!(stderr(&out).contains("2000 lines, 16 incidents from 104 rule hits; 0 late"), "{}", stderr(&out));
}

/// `vigil rules import-sigma`: one rule compiled, one without a mapping,
/// one with an unsupported modifier, each in the table and the report; and
/// the compiled one runs in `vigil rules test` like any rule.
#[test]
fn import_sigma_reports_every_rule_and_the_compiled_ones_run() {
    let dir = temp_dir("import-sigma");
    let tree = dir.join("sigma");
    std::fs::create_dir_all(&tree).unwrap();
    let rule = |id: &str, logsource: &str, selection: &str| {
        format!(
            "title: Rule {id}\nid: {id}\nauthor: Tester\nlevel: high\nlogsource: {logsource}\ndetection:\n  selection:\n{selection}  condition: selection\n"
        )
    };
    write(
        &tree,
        "a.yml",
        &rule("sig-a", "{product: linux, service: sshd}", "    - 'Failed to generate curve25519 keys'\n"),
    );
    write(&tree, "b.yml", &rule("sig-b", "{product: windows, service: security}", "    EventID: 4625\n"));
    write(&tree, "c.yml", &rule("sig-c", "{product: linux}", "    message|expand: '%secrets%'\n"));
    let report = dir.join("report.jsonl");
    let out = vigil(&["rules", "import-sigma", tree.to_str().unwrap(), "--report", report.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.contains("linux/-/sshd"), "{table}");
    assert!(
        table.contains("3 Sigma rules: 1 compiled (50.0 % of the 2 whose log source has a mapping), 1 not applicable, 1 unsupported"),
        "{table}"
    );
    let lines: Vec<Value> =
        std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let status: Vec<(&str, &str)> =
        lines.iter().map(|l| (l["id"].as_str().unwrap(), l["status"].as_str().unwrap())).collect();
    assert_eq!(status, [("sig-a", "compiled"), ("sig-b", "not applicable"), ("sig-c", "unsupported")]);
    assert!(lines[2]["reason"].as_str().unwrap().contains("placeholder %secrets% cannot be resolved"), "{}", lines[2]);
    // The compiled rule fires on its line in `vigil rules test`.
    let log = write(
        &dir,
        "ssh.log",
        "<38>Nov 22 10:15:42 web-01 sshd[311]: error: Failed to generate curve25519 keys\n<38>Nov 22 10:15:43 web-01 sshd[311]: Accepted password for bob\n",
    );
    let out = vigil(&["rules", "test", "--rules", tree.join("a.yml").to_str().unwrap(), "--input", &log], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let found = incidents(&out);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0]["rule"].as_str(), found[0]["severity"].as_str()), (Some("sig-a"), Some("high")));
    // With mappings that give the placeholder values, `rules check`
    // compiles it; a broken mappings file is an error naming it.
    let mappings = write(
        &dir,
        "mappings.yaml",
        "mappings:\n  - logsource: {product: linux}\n    filter: {format: [rfc3164, rfc5424]}\nplaceholders:\n  secrets: [shadow, gshadow]\n",
    );
    let c = tree.join("c.yml");
    let out = vigil(&["rules", "check", "--mappings", &mappings, c.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 rules, 0 errors, 0 warnings"), "{}", stderr(&out));
    let out = vigil(&["rules", "check", c.to_str().unwrap()], None);
    assert!(stderr(&out).contains("0 rules, 0 errors, 1 warnings"), "{}", stderr(&out));
    let bad = write(&dir, "bad.yaml", "mappings: 3\n");
    let out = vigil(&["rules", "check", "--mappings", &bad, c.to_str().unwrap()], None);
    assert!(!out.status.success() && stderr(&out).contains("bad.yaml: mappings is a list"), "{}", stderr(&out));
    // A tree without Sigma rules is an error.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = vigil(&["rules", "import-sigma", empty.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no Sigma rules"), "{}", stderr(&out));
}

/// `vigil rules test` joins audit records as the collector does: a rule on
/// fields of two records of one audit event fires on the joined event, and
/// once (records of another serial do not join in).
#[test]
fn test_joins_audit_records_by_serial() {
    let dir = temp_dir("audit-join");
    let rule = write(
        &dir,
        "curl.yaml",
        "id: curl-ran\npatterns:\n  c:\n    filter: {event_type: audit.event, ext.syscall.success: \"yes\", ext.execve.a0: curl}\n    group_by: [ext.serial]\n    window: 1m\n    having: count >= 1\n",
    );
    let event = |serial: u32, exe: &str, success: &str| {
        format!(
            "type=SYSCALL msg=audit(1795000000.{serial}:{serial}): syscall=59 success={success} exe=\"{exe}\"\n\
             type=EXECVE msg=audit(1795000000.{serial}:{serial}): argc=2 a0=\"curl\" a1=\"https://example.org\"\n\
             type=EOE msg=audit(1795000000.{serial}:{serial}): \n"
        )
    };
    let log =
        [event(101, "/usr/bin/curl", "yes"), event(102, "/usr/bin/curl", "no"), event(103, "/usr/bin/curl", "yes")]
            .concat();
    // The last event's EOE is missing: it completes when the input ends.
    let log = log.trim_end().rsplit_once('\n').map(|(head, _)| format!("{head}\n")).unwrap();
    let out = vigil(&["rules", "test", "--rules", &rule, "--input", "-", "--tz", "UTC", NOW], Some(log.as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    let keys: Vec<String> = incidents(&out).iter().map(|i| i["key"]["ext.serial"].to_string()).collect();
    assert_eq!(keys, ["\"101\"", "\"103\""], "{}", String::from_utf8_lossy(&out.stdout));
}

/// The rules thread takes parsed batches in file order: two threads give
/// the same incidents, line numbers and all, as one, over a log of many
/// batches with attacks spread across them and tenants.
#[test]
fn test_gives_the_same_incidents_on_one_thread_and_two() {
    let dir = temp_dir("threads");
    let map = write(&dir, "orgs.toml", "[networks]\n\"10.1.0.0/16\" = \"globex\"\n\"10.2.0.0/16\" = \"acme\"\n");
    let mut log = String::new();
    for n in 0..20_000u32 {
        let (minute, second) = ((n / 60) % 60, n % 60);
        let host = if n % 3 == 0 { "10.1.0.5" } else { "10.2.0.7" };
        // A burst of six failures every 500 lines, from one of 40 attackers.
        let ip = if n % 500 < 18 && n % 3 == 0 {
            format!("198.51.100.{}", (n / 500) % 40)
        } else {
            format!("192.0.2.{}", n % 250)
        };
        log.push_str(&format!(
            "Nov 22 1{}:{minute:02}:{second:02} {host} sshd[42]: Failed password for root from {ip} port 4000 ssh2\n",
            n / 3600
        ));
    }
    let input = write(&dir, "auth.log", &log);
    let run = |threads: &str| {
        let out = vigil(
            &["rules", "test", "--input", &input, "--org-map", &map, "--tz", "UTC", NOW, "--threads", threads],
            None,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        out.stdout
    };
    let one = run("1");
    assert!(String::from_utf8_lossy(&one).lines().count() > 10, "{}", String::from_utf8_lossy(&one));
    assert_eq!(String::from_utf8_lossy(&one), String::from_utf8_lossy(&run("2")));

    let out = vigil(&["rules", "test", "--input", &input, "--threads", "3"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--threads"), "{}", stderr(&out));
}
