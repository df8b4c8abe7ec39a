//! Device parsers on real lines: every built-in family is checked against
//! logs written by the devices themselves (`../shared/testdata/logs`, and
//! the Apache-licensed copies under `tests/fixtures/logs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use parsers::{DeviceParsers, DeviceRegistry, Event, EventTime, Parser};
use support::*;

const NOW: &str = "2026-11-22T12:00:00Z";

fn classify_lines(text: &str) -> Vec<Event> {
    let devices = DeviceParsers::builtin().unwrap();
    let parser = Parser::new();
    let now: EventTime = NOW.parse().unwrap();
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut e = parser.parse(Bytes::copy_from_slice(l.as_bytes()), now);
            devices.classify(&mut e);
            e
        })
        .collect()
}

fn classify_one(line: &str) -> Event {
    classify_lines(line).remove(0)
}

fn fixture_log(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("logs").join(name)).unwrap()
}

fn event_type(e: &Event) -> &str {
    e.event_type.as_deref().unwrap_or("-")
}

#[test]
fn openssh_loghub_every_line_by_template() {
    let (Some(log), Some(csv)) =
        (read_shared("logs/loghub/OpenSSH_2k.log"), read_shared("logs/loghub/OpenSSH_2k.log_structured.csv"))
    else {
        return;
    };
    // loghub's template ids (OpenSSH_2k.log_templates.csv) → our event types.
    let expected: HashMap<&str, &str> = [
        ("E1", "ssh.auth.success"),
        ("E2", "ssh.disconnect"),
        ("E3", "ssh.no_identification"),
        ("E4", "ssh.auth.too_many_failures"),
        ("E5", "ssh.auth.too_many_failures"),
        ("E6", "ssh.disconnect"),
        ("E7", "ssh.disconnect"),
        ("E8", "ssh.auth.none"),
        ("E9", "ssh.auth.failure"),
        ("E10", "ssh.auth.failure"),
        ("E11", "ssh.connection.error"),
        ("E12", "ssh.preauth.invalid_user"),
        ("E13", "ssh.invalid_user"),
        ("E14", "ssh.auth.failure"),
        ("E15", "ssh.pam.more_failures"),
        ("E16", "ssh.pam.more_failures"),
        ("E17", "ssh.pam.more_failures"),
        ("E18", "ssh.pam.max_retries"),
        ("E19", "pam.auth.failure"),
        ("E20", "pam.auth.failure"),
        ("E21", "pam.auth.unknown_user"),
        ("E22", "pam.session.closed"),
        ("E23", "pam.session.opened"),
        ("E24", "ssh.disconnect"),
        ("E25", "ssh.disconnect"),
        ("E26", "ssh.disconnect"),
        ("E27", "ssh.reverse_mapping_failed"),
    ]
    .into_iter()
    .collect();
    let events = classify_lines(&log);
    // The structured CSV has a header row, then LineId,...,EventId,EventTemplate;
    // EventId is the second-to-last column (templates contain no commas).
    let ids: Vec<String> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.trim_end_matches('\r').rsplitn(3, ',').collect();
            cols[1].to_owned()
        })
        .collect();
    assert_eq!(events.len(), 2000);
    assert_eq!(ids.len(), 2000);
    let mut wrong = Vec::new();
    for (e, id) in events.iter().zip(&ids) {
        let want = expected.get(id.as_str()).copied().unwrap_or("?");
        if event_type(e) != want {
            wrong.push(format!("{id}: want {want}, got {} for {:?}", event_type(e), e.message));
        }
    }
    assert!(wrong.is_empty(), "{} lines misclassified:\n{}", wrong.len(), wrong[..wrong.len().min(20)].join("\n"));

    // Failed password attempts: 518 single lines + 2 "message repeated"
    // lines (loghub's SOURCES counts 520 lines, 286 of them from one address).
    let failed: Vec<&Event> = events
        .iter()
        .filter(|e| event_type(e) == "ssh.auth.failure" && e.ext_get("auth_method").is_some_and(|m| m == "password"))
        .collect();
    assert_eq!(failed.len(), 520);
    let from_top = failed.iter().filter(|e| e.src_ip == Some("183.62.140.253".parse().unwrap())).count();
    assert!(from_top >= 286, "{from_top}");
    for e in &failed {
        assert!(e.src_ip.is_some() && e.src_port.is_some() && e.user.is_some(), "{:?}", e.message);
    }
}

#[test]
fn pam_linux_loghub_service_module_tags() {
    let Some(log) = read_shared("logs/loghub/Linux_2k.log") else { return };
    let events = classify_lines(&log);
    let pam: Vec<&Event> =
        events.iter().filter(|e| e.app.as_deref().is_some_and(|a| a.ends_with("(pam_unix)"))).collect();
    assert!(pam.len() > 600, "{}", pam.len());
    let mut unclassified = Vec::new();
    for e in &pam {
        let msg = e.message.as_deref().unwrap_or("");
        let want = if msg.starts_with("authentication failure") {
            "pam.auth.failure"
        } else if msg.starts_with("check pass; user unknown") {
            "pam.auth.unknown_user"
        } else if msg.starts_with("session opened") {
            "pam.session.opened"
        } else if msg.starts_with("session closed") {
            "pam.session.closed"
        } else if msg.contains("more authentication failure") {
            "pam.more_failures"
        } else {
            unclassified.push(msg.to_owned());
            continue;
        };
        assert_eq!(event_type(e), want, "{msg}");
        if want == "pam.auth.failure" {
            assert!(e.src_ip.is_some() || e.ext_get("src_ip").is_some(), "rhost lost: {msg}");
        }
    }
    assert!(unclassified.len() < 5, "{unclassified:?}");
}

#[test]
fn auth_log_sshd_sudo_accounts() {
    let events = classify_lines(&fixture_log("beats-system-auth_test.log"));
    let got: Vec<(&str, Option<&str>, Option<String>)> =
        events.iter().map(|e| (event_type(e), e.user.as_deref(), e.src_ip.map(|ip| ip.to_string()))).collect();
    let ip = |s: &str| Some(s.to_owned());
    assert_eq!(
        got,
        vec![
            ("ssh.auth.success", Some("vagrant"), ip("10.0.2.2")),
            ("ssh.auth.success", Some("vagrant"), ip("192.168.33.1")),
            ("ssh.invalid_user", Some("test"), ip("10.0.2.2")),
            ("ssh.auth.failure", Some("root"), ip("216.160.83.57")),
            ("sudo.command", Some("vagrant"), None),
            ("ssh.no_identification", None, ip("2.125.160.217")),
            ("sudo.command", Some("vagrant"), None),
            ("sudo.denied", Some("tsg"), None),
            ("account.group.created", None, None),
            ("account.user.created", Some("apache"), None),
        ]
    );
    assert_eq!(events[4].ext_get("command"), Some("/bin/ls"));
    assert_eq!(events[4].ext_get("target_user"), Some("root"));
    assert_eq!(events[6].ext_get("command"), Some("/bin/cat /var/log/secure"));
    assert_eq!(events[8].ext_get("group"), Some("apache"));
}

#[test]
fn wazuh_labelled_sshd_and_sudo_lines() {
    let Some(text) = read_shared("logs/wazuh-ruleset_rule_tests.jsonl") else { return };
    // (substring of the line, expected event type)
    let table: &[(&str, &str)] = &[
        ("Failed password for user from 172.18.1.100", "ssh.auth.failure"),
        ("Failed keyboard-interactive/pam for invalid user user", "ssh.auth.failure"),
        ("Failed keyboard-interactive/pam for invalid user warez", "ssh.auth.failure"),
        ("Accepted publickey for user", "ssh.auth.success"),
        ("Accepted password for user", "ssh.auth.success"),
        ("Accepted keyboard-interactive/pam for user", "ssh.auth.success"),
        ("maximum authentication attempts exceeded for invalid user badguy", "ssh.auth.too_many_failures"),
        ("maximum authentication attempts exceeded for user from", "ssh.auth.too_many_failures"),
        ("maximum authentication attempts exceeded for root from 183.106.179.x", "ssh.auth.too_many_failures"),
        ("Connection closed by 10.0.2.2 port 55462", "ssh.disconnect"),
        ("Disconnected from user user 172.18.1.100", "ssh.disconnect"),
        ("Connection reset by authenticating user", "ssh.disconnect"),
        ("Did not receive identification string from 172.18.1.1", "ssh.no_identification"),
        ("not allowed because not listed in AllowUsers", "ssh.denied_user"),
        ("not allowed because listed in DenyUsers", "ssh.denied_user"),
        ("reverse mapping checking getaddrinfo for hostname", "ssh.reverse_mapping_failed"),
        ("maps to hostname, but this does not map back", "ssh.reverse_mapping_failed"),
        ("maps to nmap.18.168.192.in-addr.arpa", "ssh.reverse_mapping_failed"),
        ("Bad protocol version identification", "ssh.bad_protocol"),
        ("Unable to negotiate with 202.191.177.33 port 3579", "ssh.negotiation_failed"),
        ("Unable to negotiate with 108.229.36.174:", "ssh.negotiation_failed"),
        ("Invalid user opcione from", "ssh.invalid_user"),
        ("error: PAM: authentication error for illegal user badguy", "ssh.pam.error"),
        ("2 more authentication failures; logname=", "pam.more_failures"),
        ("dcid : TTY=pts/4", "sudo.command"),
        ("cplummer : TTY=pts/2", "sudo.command"),
        ("mike : 1 incorrect password attempt", "sudo.auth.failure"),
        ("mike : 3 incorrect password attempts", "sudo.auth.failure"),
        ("ddp2 : user NOT in sudoers", "sudo.denied"),
        ("failed adding user 'ansible'", "account.user.create_failed"),
    ];
    let rows = rows(&text);
    let mut checked = 0;
    for (needle, want) in table {
        let row =
            rows.iter().find(|r| r.v["input"].as_str().unwrap().contains(needle)).unwrap_or_else(|| panic!("{needle}"));
        let e = classify_one(row.v["input"].as_str().unwrap());
        assert_eq!(event_type(&e), *want, "{needle}: {:?}", e.message);
        checked += 1;
    }
    // Every Cisco ASA line Wazuh labels is recognised as ASA (specific or generic).
    for row in rows.iter().filter(|r| r.v["section"].as_str().unwrap().starts_with("cisco asa")) {
        let e = classify_one(row.v["input"].as_str().unwrap());
        if e.app.as_deref().is_some_and(|a| a.starts_with("%ASA-")) {
            assert!(e.event_type.is_some(), "{:?}", row.v["input"]);
            checked += 1;
        }
    }
    say(&format!("devices: {checked} Wazuh-labelled lines checked"));
}

#[test]
fn fortigate_every_line() {
    let Some(log) = read_shared("logs/firewall/beats-fortinet-firewall.log") else { return };
    let events = classify_lines(&log);
    assert_eq!(events.len(), 40);
    for e in &events {
        let get = |k: &str| e.ext_get(k).map(str::to_owned);
        let want = format!("fortigate.{}.{}", get("type").unwrap(), get("subtype").unwrap());
        assert_eq!(event_type(e), want);
        assert_eq!(e.host.as_deref(), get("devname").as_deref());
        if let Some(srcip) = get("srcip") {
            assert_eq!(e.src_ip.map(|ip| ip.to_string()), Some(srcip));
        }
        if let Some(port) = get("dstport") {
            assert_eq!(e.dst_port.map(|p| p.to_string()), Some(port));
        }
        if let Some(action) = get("action") {
            assert_eq!(e.action.as_deref(), Some(action.as_str()));
        }
    }
    let blocked = events.iter().find(|e| e.ext_get("eventtype").is_some_and(|t| t == "ftgd_blk")).unwrap();
    assert_eq!(blocked.outcome.as_deref(), Some("failure"));
    assert_eq!(blocked.time.to_rfc3339(), "2020-04-23T12:17:48-05:00");
    assert_eq!(blocked.ext_get("msg"), Some("URL belongs to a denied category in policy"));
}

#[test]
fn cisco_asa_every_line() {
    let Some(log) = read_shared("logs/firewall/beats-cisco-asa_sample.log") else { return };
    let events = classify_lines(&log);
    assert_eq!(events.len(), 73);
    for e in &events {
        assert!(e.app.as_deref().is_some_and(|a| a.starts_with("%ASA-")), "{:?}", e.raw);
        assert_ne!(event_type(e), "cisco.asa", "no specific pattern for {:?}", e.message);
    }
    let denied = events.iter().find(|e| e.app.as_deref() == Some("%ASA-4-106023")).unwrap();
    assert_eq!(event_type(denied), "network.connection.denied");
    assert_eq!(denied.src_ip, Some("10.1.2.30".parse().unwrap()));
    assert_eq!((denied.src_port, denied.dst_port), (Some(63016), Some(53)));
    let built =
        events.iter().find(|e| e.message.as_deref().is_some_and(|m| m.starts_with("Built outbound TCP"))).unwrap();
    // Outbound: the inside host (the "to" side) initiated.
    assert_eq!(built.src_ip, Some("10.123.3.42".parse().unwrap()));
    assert_eq!(built.dst_ip, Some("192.0.2.43".parse().unwrap()));
    let acl = events.iter().find(|e| e.message.as_deref().is_some_and(|m| m.contains(" denied udp "))).unwrap();
    assert_eq!((event_type(acl), acl.outcome.as_deref()), ("network.acl", Some("failure")));
    let edt = events.iter().find(|e| e.raw.starts_with(b"Apr 15 2014 09:34:34 EDT")).unwrap();
    assert_eq!(edt.time.to_rfc3339(), "2014-04-15T09:34:34-04:00");
}

#[test]
fn netfilter_prefixes_decide_the_action() {
    let events = classify_lines(&fixture_log("netfilter.log"));
    let got: Vec<(&str, Option<&str>, Option<u16>)> =
        events.iter().map(|e| (event_type(e), e.action.as_deref(), e.dst_port)).collect();
    assert_eq!(
        got,
        vec![
            ("netfilter.packet", Some("deny"), Some(4433)),
            ("netfilter.packet", Some("deny"), Some(3389)),
            ("netfilter.packet", Some("allow"), Some(443)),
            ("netfilter.packet", Some("deny"), Some(5353)),
            ("netfilter.packet", Some("allow"), Some(80)),
        ]
    );
    assert_eq!(events[1].src_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(events[3].src_ip, Some("2001:db8::1".parse().unwrap()));
    // "DST=xxx.xxx.xxx.xxx" is not an address: kept, not dropped.
    assert_eq!(events[0].ext_get("dst_ip"), Some("xxx.xxx.xxx.xxx"));
}

#[test]
fn cef_and_leef_fields_are_normalized() {
    let events = classify_lines(&fixture_log("cef-leef.log"));
    assert_eq!(events[0].src_ip, Some("198.51.100.4".parse().unwrap()));
    assert_eq!((events[0].src_port, events[0].dst_port), (Some(51515), Some(22)));
    assert_eq!((events[0].user.as_deref(), events[0].outcome.as_deref()), (Some("admin"), Some("failure")));
    assert_eq!(events[1].host.as_deref(), Some("fw1"));
    assert_eq!(events[1].action.as_deref(), Some("allow"));
    assert_eq!(events[2].user.as_deref(), Some("bob"));
    assert_eq!((events[2].src_port, events[2].dst_port), (Some(40000), Some(8080)));
}

#[test]
fn check_point_cef_samples_get_addresses() {
    let Some(log) = read_shared("cef/beats-module-cef_checkpoint.log") else { return };
    for e in classify_lines(&log) {
        assert_eq!(e.vendor.as_deref(), Some("Check Point"));
        assert!(e.action.is_some(), "{:?}", e.raw);
    }
}

#[test]
fn registry_reloads_without_restart_and_keeps_the_old_set_on_error() {
    let dir = std::env::temp_dir().join(format!("vigil-patterns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let family = |event_type: &str| {
        format!(
            "name = \"acme\"\npriority = 1\n[[match]]\napps = [\"acme\"]\n[[pattern]]\ntemplate = \"login {{user:word}} from {{src_ip:ip}}\"\nevent_type = \"{event_type}\"\n"
        )
    };
    std::fs::write(dir.join("acme.toml"), family("acme.login.v1")).unwrap();
    let registry = DeviceRegistry::new(Some(dir.clone())).unwrap();
    let line = "<13>Nov 22 10:00:00 h acme: login bob from 192.0.2.7";
    let now: EventTime = NOW.parse().unwrap();
    let run = |registry: &DeviceRegistry| {
        let mut e = Parser::new().parse(Bytes::copy_from_slice(line.as_bytes()), now);
        registry.current().classify(&mut e);
        e
    };
    let before = registry.current();
    assert_eq!(run(&registry).event_type.as_deref(), Some("acme.login.v1"));
    assert_eq!(run(&registry).user.as_deref(), Some("bob"));

    std::fs::write(dir.join("acme.toml"), family("acme.login.v2")).unwrap();
    registry.reload().unwrap();
    assert_eq!(run(&registry).event_type.as_deref(), Some("acme.login.v2"));
    // A snapshot taken before the reload keeps working unchanged.
    let mut old = Parser::new().parse(Bytes::copy_from_slice(line.as_bytes()), now);
    before.classify(&mut old);
    assert_eq!(old.event_type.as_deref(), Some("acme.login.v1"));

    std::fs::write(
        dir.join("broken.toml"),
        "name = \"broken\"\n[[match]]\napps = [\"x\"]\n[[pattern]]\ntemplate = \"{nope}\"\n",
    )
    .unwrap();
    let err = registry.reload().unwrap_err().to_string();
    assert!(err.contains("broken.toml:5:") && err.contains("unknown field"), "{err}");
    assert_eq!(run(&registry).event_type.as_deref(), Some("acme.login.v2"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Apache and Nginx access logs (the beats module test inputs, Apache-2.0,
/// read from `../shared`): every line, raw or in syslog, is a `web.access`
/// event with its client, request parts, status and agent, at its own time.
#[test]
fn web_access_logs_of_apache_and_nginx() {
    for name in ["beats-modules/apache-access/test.log", "beats-modules/nginx-access/test.log"] {
        let Some(text) = read_shared(&format!("logs/{name}")) else { return };
        let events = classify_lines(&text);
        assert!(!events.is_empty());
        for e in &events {
            assert_eq!(event_type(e), "web.access", "{name}: {:?}", e.message);
            assert!(e.ext.get("status").is_some() && e.outcome.is_some(), "{name}: {:?}", e.message);
            // Raw lines take the time they log.
            assert!(e.time.to_rfc3339().starts_with("201"), "{name}: {}", e.time.to_rfc3339());
        }
    }
    let e = classify_one(
        "<134>Dec  2 10:15:44 web-01 nginx: 203.0.113.9 - alice [02/Dec/2026:10:15:44 +0000] \"GET /a/b.jsp?cmd=id HTTP/1.1\" 500 17 \"https://ref/\" \"curl/8.0\"",
    );
    assert_eq!(event_type(&e), "web.access");
    assert_eq!((e.src_ip.map(|i| i.to_string()), e.user.as_deref()), (Some("203.0.113.9".into()), Some("alice")));
    let ext = |k: &str| e.ext.get(k).map(|v| v.to_string());
    assert_eq!(
        [ext("method"), ext("uri_stem"), ext("uri_query"), ext("status"), ext("referrer"), ext("user_agent")],
        [Some("GET"), Some("/a/b.jsp"), Some("cmd=id"), Some("500"), Some("https://ref/"), Some("curl/8.0")]
            .map(|v| v.map(str::to_owned))
    );
    assert_eq!(e.outcome.as_deref(), Some("failure"));
    // A line that only looks like one is left alone.
    assert_ne!(event_type(&classify_one("<13>Dec  2 10:15:44 app x: [not a time] \"quoted\" 200 1")), "web.access");
}

/// Linux audit records (the beats module test inputs, Apache-2.0, read
/// from `../shared`): every record is an `audit.<type>` event at its own
/// time, with its pairs in ext and hex-encoded text decoded.
#[test]
fn linux_audit_records() {
    let mut all = Vec::new();
    for name in ["test.log", "useradd.log", "execve-hex-arg.log"] {
        let Some(text) = read_shared(&format!("logs/beats-modules/auditd/{name}")) else { return };
        all.extend(classify_lines(&text));
    }
    assert_eq!(all.len(), 24);
    for e in &all {
        assert!(event_type(e).starts_with("audit."), "{:?}", e.message);
        assert!(e.ext.get("type").is_some() && e.ext.get("serial").is_some(), "{:?}", e.message);
        assert!(e.time.to_rfc3339().starts_with("20"), "{}", e.time.to_rfc3339());
    }
    let execve = all.iter().find(|e| e.ext.get("serial") == Some("5538")).unwrap();
    assert_eq!(event_type(execve), "audit.execve");
    assert_eq!(execve.ext.get("a2"), Some(r#"echo \"arg hex encoded\""#));
    assert_eq!(execve.time.unix_millis(), 1_669_615_313_901);
    let auth = all.iter().find(|e| event_type(e) == "audit.user_auth").unwrap();
    assert_eq!((auth.user.as_deref(), auth.outcome.as_deref()), (Some("root"), Some("success")));
    // Through syslog the same record is read from the message.
    let e = classify_one(
        "<14>Nov 14 22:13:22 host-1 audispd: type=PROCTITLE msg=audit(1700000000.100:9): proctitle=2F62696E2F7368002D63006964",
    );
    assert_eq!((event_type(&e), e.ext.get("proctitle")), ("audit.proctitle", Some("/bin/sh -c id")));
}
