//! `vigil search`: SQL or simple filters over the stored events, through
//! the API with a token (`--api URL`), or on a data directory as the local
//! administrator (who can read the files anyway, so sees every org).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use supervisor::store::{OrgRef, Principal};

use super::admin::StoreArgs;

/// How results are printed.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Aligned columns, long values cut.
    Table,
    /// The API's JSON answer.
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// One SELECT over the table `events` (else the filters below).
    #[arg(long, conflicts_with_all = ["event_type", "src_ip", "dst_ip", "user", "host", "text", "org"])]
    sql: Option<String>,
    /// Start of the range (RFC 3339; default: 24 hours before --to).
    #[arg(long)]
    from: Option<String>,
    /// End of the range, exclusive (RFC 3339; default: now).
    #[arg(long)]
    to: Option<String>,
    /// Only this org (id or name).
    #[arg(long)]
    org: Option<String>,
    /// Only this normalized event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Only this source address or network (10.0.0.0/8).
    #[arg(long)]
    src_ip: Option<String>,
    /// Only this destination address or network.
    #[arg(long)]
    dst_ip: Option<String>,
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    /// Only this host.
    #[arg(long)]
    host: Option<String>,
    /// Only messages containing this text (any case).
    #[arg(long)]
    text: Option<String>,
    /// Most rows (SQL: up to 10,000; filters: up to 1,000).
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The API to ask (http://HOST:PORT); else the data directory is read
    /// directly.
    #[arg(long, env = "VIGIL_API")]
    api: Option<String>,
    /// API token (with --api).
    #[arg(long, env = "VIGIL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Columns shown for filter results in a table.
const EVENT_COLUMNS: &[&str] = &["time", "org", "host", "event_type", "src_ip", "user", "action", "message"];

pub fn run(args: SearchArgs) -> Result<ExitCode> {
    let answer = match &args.api {
        Some(api) => through_api(&args, api)?,
        None => {
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("runtime")?;
            rt.block_on(local(&args))?
        }
    };
    print(&args, &answer)?;
    Ok(ExitCode::SUCCESS)
}

/// The filters as query parameters.
fn filters(args: &SearchArgs) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    for (name, value) in [
        ("from", &args.from),
        ("to", &args.to),
        ("org", &args.org),
        ("event_type", &args.event_type),
        ("src_ip", &args.src_ip),
        ("dst_ip", &args.dst_ip),
        ("user", &args.user),
        ("host", &args.host),
        ("text", &args.text),
    ] {
        if let Some(v) = value {
            q.push((name, v.clone()));
        }
    }
    q
}

fn through_api(args: &SearchArgs, api: &str) -> Result<Value> {
    let token = args.token.as_deref().context("--api needs a token: --token or VIGIL_TOKEN")?;
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into();
    let base = format!("{}/api/v1", api.trim_end_matches('/'));
    let auth = format!("Bearer {token}");
    let mut resp = match &args.sql {
        Some(sql) => {
            let mut body = json!({ "sql": sql, "limit": args.limit });
            if let Some(f) = &args.from {
                body["from"] = json!(f);
            }
            if let Some(t) = &args.to {
                body["to"] = json!(t);
            }
            http.post(format!("{base}/search")).header("Authorization", &auth).send_json(&body)
        }
        None => {
            let mut req = http.get(format!("{base}/events")).header("Authorization", &auth);
            for (name, value) in filters(args) {
                req = req.query(name, value);
            }
            req.query("limit", args.limit.to_string()).call()
        }
    }
    .with_context(|| format!("cannot reach {api}"))?;
    let status = resp.status();
    let body: Value = resp.body_mut().read_json().with_context(|| format!("{api} answered {status} without JSON"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no message");
        bail!("{api} answered {}: {message}", status.as_u16());
    }
    Ok(body)
}

/// As the local administrator: every org's events under the data directory.
async fn local(args: &SearchArgs) -> Result<Value> {
    let store = args.store.open().await?;
    let org = args.org.as_deref().map(OrgRef::parse);
    let orgs = store.event_orgs(&Principal::cli(), org.as_ref()).await?;
    store.close().await;
    let config = search::SearchSettings::default().to_config(&args.store.data_dir)?;
    let searcher = search::Searcher::new(config)?;
    let now = jiff::Timestamp::now().as_nanosecond() as i64;
    let time = |name: &str, text: &Option<String>, default: i64| -> Result<i64> {
        match text {
            None => Ok(default),
            Some(t) => {
                let ts: jiff::Timestamp =
                    t.parse().with_context(|| format!("--{name}: {t:?} is not an RFC 3339 time"))?;
                Ok(ts.as_nanosecond() as i64)
            }
        }
    };
    let to = time("to", &args.to, now)?;
    let from = time("from", &args.from, to - 86_400 * 1_000_000_000)?;
    let range = search::TimeRange::new(from, to);
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    Ok(match &args.sql {
        Some(sql) => {
            serde_json::to_value(searcher.sql(&orgs, &search::SqlQuery { sql: sql.clone(), range, limit }).await?)?
        }
        None => {
            let filter = search::EventFilter {
                event_type: args.event_type.clone(),
                src_ip: args.src_ip.clone(),
                dst_ip: args.dst_ip.clone(),
                user: args.user.clone(),
                host: args.host.clone(),
                text: args.text.clone(),
            };
            serde_json::to_value(searcher.events(&orgs, range, &filter, limit, None).await?)?
        }
    })
}

/// Column names and rows of an answer: SQL answers as they are, event
/// pages in [`EVENT_COLUMNS`].
fn table(answer: &Value) -> (Vec<String>, Vec<Vec<Value>>) {
    if let Some(columns) = answer["columns"].as_array() {
        let names = columns.iter().map(|c| c["name"].as_str().unwrap_or_default().to_owned()).collect();
        let rows = answer["rows"]
            .as_array()
            .map(|r| r.iter().map(|row| row.as_array().cloned().unwrap_or_default()).collect());
        return (names, rows.unwrap_or_default());
    }
    let names = EVENT_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    let rows = answer["items"]
        .as_array()
        .map(|items| items.iter().map(|e| EVENT_COLUMNS.iter().map(|c| e[*c].clone()).collect()).collect())
        .unwrap_or_default();
    (names, rows)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print(args: &SearchArgs, answer: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(answer)?)?,
        Format::Csv => {
            let (names, rows) = table(answer);
            let field = |s: &str| {
                if s.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", s.replace('"', "\"\""))
                } else {
                    s.to_owned()
                }
            };
            writeln!(out, "{}", names.iter().map(|n| field(n)).collect::<Vec<_>>().join(","))?;
            for row in rows {
                writeln!(out, "{}", row.iter().map(|v| field(&text(v))).collect::<Vec<_>>().join(","))?;
            }
        }
        Format::Table => {
            const WIDEST: usize = 60;
            let (names, rows) = table(answer);
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| {
                            let t: String = text(v).chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                            if t.chars().count() > WIDEST {
                                t.chars().take(WIDEST - 1).chain(['…']).collect()
                            } else {
                                t
                            }
                        })
                        .collect()
                })
                .collect();
            let widths: Vec<usize> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    cells.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0).max(n.len())
                })
                .collect();
            let line = |out: &mut std::io::StdoutLock<'_>, values: &[String]| -> std::io::Result<()> {
                let padded: Vec<String> = values.iter().zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
                writeln!(out, "{}", padded.join("  ").trim_end())
            };
            line(&mut out, &names)?;
            for row in &cells {
                line(&mut out, row)?;
            }
            let stats = &answer["stats"];
            let more = if answer["truncated"] == json!(true) || !answer["next_cursor"].is_null() {
                " (more: raise --limit)"
            } else {
                ""
            };
            writeln!(
                out,
                "{} rows{more}; {} files, {} rows read, {} ms",
                cells.len(),
                stats["files"],
                stats["rows_scanned"],
                stats["elapsed_ms"]
            )?;
        }
    }
    Ok(())
}
