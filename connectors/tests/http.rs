//! Webhook, Slack and Teams against real receivers on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ALLOW, http_server, notification, pki, reply_by_path};
use connectors::{Config, Kind, Outcome, Secrets, Settings, build};

fn secrets(url: String, secret: Option<&str>) -> Secrets {
    Secrets { url: Some(url), secret: secret.map(Into::into) }
}

#[tokio::test]
async fn webhook_delivers_signed_json_with_headers() {
    let (addr, mut rx) = http_server(None, reply_by_path).await;
    let config = Config {
        headers: BTreeMap::from([("Authorization".to_owned(), "Bearer abc".to_owned())]),
        ..Config::default()
    };
    let c = build(Kind::Webhook, &config, &secrets(format!("http://{addr}/hook?x=1"), Some("k3y")), ALLOW).unwrap();
    let n = notification();
    assert_eq!(c.send(&n).await, Outcome::Delivered { status: Some(200) });
    let req = rx.recv().await.unwrap();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hook?x=1");
    let h = &req.headers;
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(h["user-agent"], format!("vigil/{}", env!("CARGO_PKG_VERSION")));
    assert_eq!(h["x-vigil-delivery"], "dlv-42-7");
    assert_eq!(h["x-vigil-event"], "created");
    assert_eq!(h["authorization"], "Bearer abc");
    assert_eq!(h["host"], addr.to_string());
    // The signature is HMAC-SHA256 over the exact body bytes.
    let sig = h["x-vigil-signature"].strip_prefix("sha256=").unwrap();
    assert!(sig.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    let sig: Vec<u8> = (0..sig.len()).step_by(2).map(|i| u8::from_str_radix(&sig[i..i + 2], 16).unwrap()).collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k3y");
    ring::hmac::verify(&key, &req.body, &sig).expect("signature verifies");
    let j = req.json();
    for (k, v) in [
        ("delivery_id", "dlv-42-7"),
        ("event", "created"),
        ("org", "Acme"),
        ("severity", "high"),
        ("rule", "ssh_bruteforce"),
    ] {
        assert_eq!(j[k], v, "{k}");
    }
    assert_eq!(j["title"], n.title);
    assert_eq!(j["body"], n.body);
    assert_eq!(j["incident"]["id"], 42);
    assert!(j["sent_at"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok());
}

#[tokio::test]
async fn webhook_status_handling() {
    let (addr, _rx) = http_server(None, reply_by_path).await;
    let send = |path: &str| {
        let c =
            build(Kind::Webhook, &Config::default(), &secrets(format!("http://{addr}{path}"), None), ALLOW).unwrap();
        async move { c.send(&notification()).await }
    };
    let o = send("/s/500").await;
    let Outcome::Retry { status: Some(500), error, after: None } = &o else { panic!("{o:?}") };
    assert!(error.contains("HTTP 500") && error.contains("nope: status 500 from the test receiver"), "{error}");
    assert!(!error.contains("/s/500"), "no path in errors: {error}");
    assert_eq!(
        send("/s/429").await,
        Outcome::Retry {
            status: Some(429),
            error: format!("HTTP 429 from http://{addr}/…: nope: status 429 from the test receiver"),
            after: Some(Duration::from_secs(7)),
        }
    );
    assert_eq!(send("/s/503").await.as_str(), "retry");
    assert_eq!(send("/s/408").await.as_str(), "retry");
    let o = send("/s/400").await;
    assert!(matches!(o, Outcome::Failed { status: Some(400), .. }), "{o:?}");
    let o = send("/s/302").await;
    let Outcome::Failed { status: Some(302), error } = &o else { panic!("{o:?}") };
    assert!(error.contains("redirects are not followed"), "{error}");
    assert_eq!(send("/s/204").await, Outcome::Delivered { status: Some(204) });
}

#[tokio::test]
async fn private_targets_refused_by_default() {
    let (addr, mut rx) = http_server(None, reply_by_path).await;
    // http:// needs allow_private_targets.
    let err = build(Kind::Webhook, &Config::default(), &secrets(format!("http://{addr}/"), None), Settings::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("url: http:// is only allowed when [connectors] allow_private_targets = true"), "{err}");
    let c = build(Kind::Webhook, &Config::default(), &secrets(format!("https://{addr}/"), None), Settings::default())
        .unwrap();
    let o = c.send(&notification()).await;
    let expected = "target 127.0.0.1 resolves to 127.0.0.1, a private/loopback/link-local address; \
                    set [connectors] allow_private_targets = true to allow it";
    assert_eq!(o, Outcome::Failed { status: None, error: expected.to_owned() });
    assert_eq!(c.health().await.as_str(), "failed");
    let c = build(
        Kind::Slack,
        &Config::default(),
        &secrets(format!("https://localhost:{}/T/B/x", addr.port()), None),
        Settings::default(),
    )
    .unwrap();
    let o = c.send(&notification()).await;
    assert!(o.error().unwrap().starts_with("target localhost resolves to "), "{o:?}");
    assert!(rx.try_recv().is_err(), "nothing reached the receiver");
}

#[tokio::test]
async fn timeout_against_a_silent_listener_retries() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let config = Config { timeout_ms: Some(300), ..Config::default() };
    let c = build(Kind::Webhook, &config, &secrets(format!("http://{addr}/x"), None), ALLOW).unwrap();
    let started = Instant::now();
    let o = c.send(&notification()).await;
    let took = started.elapsed();
    let Outcome::Retry { error, .. } = &o else { panic!("{o:?}") };
    assert!(error.contains("timed out after 300 ms"), "{error}");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_secs(3), "{took:?}");
    drop(silent);
}

#[tokio::test]
async fn connection_refused_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c =
        build(Kind::Webhook, &Config::default(), &secrets(format!("http://127.0.0.1:{port}/"), None), ALLOW).unwrap();
    assert_eq!(c.send(&notification()).await.as_str(), "retry");
    assert_eq!(c.health().await.as_str(), "retry");
}

#[tokio::test]
async fn https_with_ca_file_and_without() {
    let p = pki("https");
    let (addr, mut rx) = http_server(Some(p.acceptor.clone()), reply_by_path).await;
    let url = format!("https://127.0.0.1:{}/hook", addr.port());
    let with_ca = Config { ca_file: Some(p.ca_file.display().to_string()), ..Config::default() };
    let c = build(Kind::Webhook, &with_ca, &secrets(url.clone(), None), ALLOW).unwrap();
    assert_eq!(c.health().await, Outcome::Delivered { status: None });
    assert_eq!(c.send(&notification()).await, Outcome::Delivered { status: Some(200) });
    assert_eq!(rx.recv().await.unwrap().headers["x-vigil-delivery"], "dlv-42-7");
    // The same server is not trusted with the public roots.
    let c = build(Kind::Webhook, &Config::default(), &secrets(url.clone(), None), ALLOW).unwrap();
    let o = c.send(&notification()).await;
    let Outcome::Failed { error, .. } = &o else { panic!("{o:?}") };
    assert!(error.contains("TLS handshake") && error.contains("certificate"), "{error}");
    assert_eq!(c.health().await.as_str(), "failed");
    // skip_tls_verify accepts it (dangerous, but it is what the option says).
    let skip = Config { skip_tls_verify: true, ..Config::default() };
    let c = build(Kind::Webhook, &skip, &secrets(url, None), ALLOW).unwrap();
    assert_eq!(c.send(&notification()).await.as_str(), "delivered");
}

#[tokio::test]
async fn slack_payload_shape() {
    let (addr, mut rx) = http_server(None, reply_by_path).await;
    let c =
        build(Kind::Slack, &Config::default(), &secrets(format!("http://{addr}/services/T/B/x"), None), ALLOW).unwrap();
    assert_eq!(c.kind(), Kind::Slack);
    assert_eq!(c.send(&notification()).await.as_str(), "delivered");
    let req = rx.recv().await.unwrap();
    assert_eq!(req.headers["x-vigil-delivery"], "dlv-42-7");
    let j = req.json();
    assert_eq!(j["text"], notification().title);
    let blocks = j["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[0]["text"]["text"], notification().title);
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert_eq!(blocks[1]["text"]["text"], "Rule: ssh_bruteforce\nHits: 12\nback\\slash &amp; &lt;b&gt;bold&lt;/b&gt;");
    assert_eq!(blocks[2]["type"], "context");
    let ctx = blocks[2]["elements"][0]["text"].as_str().unwrap();
    assert_eq!(ctx, "Acme · high · ssh_bruteforce · delivery dlv-42-7");
}

#[tokio::test]
async fn teams_payload_shape() {
    let (addr, mut rx) = http_server(None, reply_by_path).await;
    let c =
        build(Kind::Teams, &Config::default(), &secrets(format!("http://{addr}/workflows/x"), None), ALLOW).unwrap();
    assert_eq!(c.send(&notification()).await.as_str(), "delivered");
    let req = rx.recv().await.unwrap();
    assert_eq!(req.headers["x-vigil-delivery"], "dlv-42-7");
    let j = req.json();
    assert_eq!(j["type"], "message");
    let att = &j["attachments"][0];
    assert_eq!(att["contentType"], "application/vnd.microsoft.card.adaptive");
    let card = &att["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert!(card["$schema"].as_str().unwrap().contains("adaptivecards.io"));
    let body = card["body"].as_array().unwrap();
    assert_eq!(body[0]["type"], "TextBlock");
    assert_eq!(body[0]["text"], notification().title);
    assert_eq!(body[0]["weight"], "bolder");
    assert_eq!(body[0]["size"], "medium");
    assert_eq!(body[0]["wrap"], true);
    assert_eq!(body[1]["text"], notification().body);
    assert_eq!(body[1]["wrap"], true);
    assert_eq!(body[2]["type"], "FactSet");
    let facts: Vec<(String, String)> = body[2]["facts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["title"].as_str().unwrap().to_owned(), f["value"].as_str().unwrap().to_owned()))
        .collect();
    let want = [
        ("Organisation", "Acme"),
        ("Severity", "high"),
        ("Rule", "ssh_bruteforce"),
        ("Status", "open"),
        ("Hits", "12"),
        ("Delivery", "dlv-42-7"),
    ];
    assert_eq!(facts, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
}
