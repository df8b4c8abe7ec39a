//! Configuration checks (no network), secrets hygiene and sealing through the public API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use connectors::{Config, ConnectorError, Kind, SecretBox, Secrets, Settings, build, validate};

fn field(r: Result<(), ConnectorError>) -> &'static str {
    match r {
        Err(ConnectorError::Invalid { field, .. }) => field,
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn url(u: &str) -> Secrets {
    Secrets { url: Some(u.to_owned()), secret: None }
}

#[test]
fn webhook_slack_teams() {
    let ok = url("https://hooks.example.com/x");
    for kind in [Kind::Webhook, Kind::Slack, Kind::Teams] {
        validate(kind, &Config::default(), &ok).unwrap();
        assert_eq!(field(validate(kind, &Config::default(), &Secrets::default())), "url");
        assert_eq!(field(validate(kind, &Config::default(), &url("ftp://x/y"))), "url");
        assert_eq!(field(validate(kind, &Config::default(), &url("https://"))), "url");
        assert_eq!(field(validate(kind, &Config { to: vec!["a@b.c".into()], ..Config::default() }, &ok)), "to");
        assert_eq!(field(validate(kind, &Config { from: Some("a@b.c".into()), ..Config::default() }, &ok)), "from");
        assert_eq!(
            field(validate(kind, &Config { target: Some("tcp://x:1".into()), ..Config::default() }, &ok)),
            "target"
        );
        assert_eq!(field(validate(kind, &Config { timeout_ms: Some(99), ..Config::default() }, &ok)), "timeout_ms");
        assert_eq!(
            field(validate(kind, &Config { timeout_ms: Some(120_001), ..Config::default() }, &ok)),
            "timeout_ms"
        );
        validate(kind, &Config { timeout_ms: Some(100), ..Config::default() }, &ok).unwrap();
        assert_eq!(
            field(validate(kind, &Config { ca_file: Some("/nonexistent/ca.pem".into()), ..Config::default() }, &ok)),
            "ca_file"
        );
    }
    let headers =
        |k: &str, v: &str| Config { headers: BTreeMap::from([(k.to_owned(), v.to_owned())]), ..Config::default() };
    validate(Kind::Webhook, &headers("X-Api-Key", "abc"), &ok).unwrap();
    assert_eq!(field(validate(Kind::Webhook, &headers("X-Api-Key", "a\r\nb"), &ok)), "headers");
    assert_eq!(field(validate(Kind::Webhook, &headers("X-Vigil-Delivery", "x"), &ok)), "headers");
    assert_eq!(field(validate(Kind::Slack, &headers("X-Api-Key", "abc"), &ok)), "headers");
    let signed = Secrets { url: ok.url.clone(), secret: Some("k".into()) };
    validate(Kind::Webhook, &Config::default(), &signed).unwrap();
    assert_eq!(field(validate(Kind::Teams, &Config::default(), &signed)), "secret");
}

#[test]
fn email_and_syslog() {
    let to = Config { to: vec!["soc@example.com".into()], ..Config::default() };
    validate(Kind::Email, &to, &url("smtps://mail.example.com")).unwrap();
    assert_eq!(field(validate(Kind::Email, &to, &Secrets::default())), "url");
    assert_eq!(field(validate(Kind::Email, &Config::default(), &url("smtps://mail.example.com"))), "to");
    assert_eq!(
        field(validate(Kind::Email, &Config { from: Some("@".into()), ..to.clone() }, &url("smtps://m.example.com"))),
        "from"
    );
    assert_eq!(
        field(validate(
            Kind::Email,
            &Config { target: Some("tcp://x:1".into()), ..to.clone() },
            &url("smtps://m.example.com")
        )),
        "target"
    );

    let t = |s: &str| Config { target: Some(s.to_owned()), ..Config::default() };
    validate(Kind::Syslog, &t("udp://siem.example.com:514"), &Secrets::default()).unwrap();
    assert_eq!(field(validate(Kind::Syslog, &Config::default(), &Secrets::default())), "target");
    assert_eq!(field(validate(Kind::Syslog, &t("siem:514"), &Secrets::default())), "target");
    assert_eq!(field(validate(Kind::Syslog, &t("tcp://siem.example.com:514"), &url("https://x"))), "url");
    assert_eq!(
        field(validate(
            Kind::Syslog,
            &t("tcp://siem.example.com:514"),
            &Secrets { url: None, secret: Some("x".into()) }
        )),
        "secret"
    );
    assert_eq!(
        field(validate(
            Kind::Syslog,
            &Config { to: vec!["a@b.c".into()], ..t("tcp://s.example.com:1") },
            &Secrets::default()
        )),
        "to"
    );
}

#[test]
fn ca_file_must_be_pem() {
    let dir = common::tempdir("ca-file");
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let cfg = Config { ca_file: Some(junk.display().to_string()), ..Config::default() };
    let err = validate(Kind::Webhook, &cfg, &url("https://x.example.com/")).unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Invalid { field: "ca_file", message } if message.contains("no PEM certificates")),
        "{err}"
    );
    let p = common::pki("ca-file-ok");
    let cfg = Config { ca_file: Some(p.ca_file.display().to_string()), ..Config::default() };
    validate(Kind::Webhook, &cfg, &url("https://x.example.com/")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_and_debug_never_show_secrets() {
    let s = Secrets {
        url: Some("https://user:pa55@hooks.example.com/T000/B000/t0ken".into()),
        secret: Some("hm4c-key".into()),
    };
    let dbg = format!("{s:?}");
    assert_eq!(dbg, "Secrets { url: <set>, secret: <set> }");
    assert_eq!(s.masked_url().unwrap(), "https://hooks.example.com/…");
    let err = validate(Kind::Webhook, &Config::default(), &s).unwrap_err().to_string();
    for secret in ["pa55", "t0ken", "hm4c-key", "T000"] {
        assert!(!err.contains(secret), "{err}");
    }
    let c = build(
        Kind::Webhook,
        &Config::default(),
        &Secrets { url: Some("https://hooks.example.com/t0ken".into()), secret: Some("hm4c-key".into()) },
        Settings::default(),
    );
    assert!(c.is_ok());
    assert_eq!(format!("{:?}", SecretBox::from_key(&[3; 32])), "SecretBox(<redacted>)");
}

#[test]
fn secret_box_public_round_trip() {
    let dir = common::tempdir("secretbox");
    if std::env::var_os(SecretBox::ENV).is_some() {
        eprintln!("{} is set in the environment: the file-based part is covered by the unit tests", SecretBox::ENV);
    } else {
        let b = SecretBox::load_or_create(&dir).unwrap();
        assert!(dir.join(SecretBox::FILE).exists());
        let sealed = b.seal(&Secrets { url: Some("https://x/y".into()), secret: None }).unwrap();
        let again = SecretBox::load_or_create(&dir).unwrap();
        assert_eq!(again.open(&sealed).unwrap().url.as_deref(), Some("https://x/y"));
        assert!(matches!(SecretBox::from_key(&[0; 32]).open(&sealed), Err(ConnectorError::Key(_))));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kinds() {
    for k in Kind::ALL {
        assert_eq!(Kind::parse(k.as_str()).unwrap(), k);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), k);
    }
    assert!(matches!(Kind::parse("sms"), Err(ConnectorError::Invalid { field: "kind", .. })));
    let cfg: Result<Config, _> = serde_json::from_str(r#"{"unknown": 1}"#);
    assert!(cfg.is_err(), "deny_unknown_fields");
    let cfg: Config = serde_json::from_str(r#"{"timeout_ms": 500}"#).unwrap();
    assert_eq!(cfg.timeout_ms, Some(500));
    assert!(!cfg.skip_tls_verify);
}
