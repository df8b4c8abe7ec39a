//! Web server access logs (Apache and Nginx common and combined formats)
//! for families with an `[access_log]` table:
//!
//! ```text
//! [PREFIX ]CLIENT IDENT USER [TIME] "REQUEST" STATUS BYTES[ "REFERRER" "USER-AGENT"[ ...]]
//! ```
//!
//! `PREFIX` is what some setups log first: a virtual host name, or an
//! `X-Forwarded-For` chain (`10.0.0.2, 10.0.0.1,` or quoted). `REQUEST`
//! is `METHOD URI PROTOCOL`, or `-` / empty for a connection that sent
//! none. Everything is a slice of the message: nothing is copied until a
//! field is written.

/// One access-log line, as slices of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AccessLine<'a> {
    /// A virtual host or a forwarded-for chain before the client.
    pub prefix: Option<&'a str>,
    pub client: &'a str,
    pub user: Option<&'a str>,
    pub time: &'a str,
    /// The request line as logged (`-` or empty when there was none).
    pub request: &'a str,
    pub method: Option<&'a str>,
    pub uri: Option<&'a str>,
    pub protocol: Option<&'a str>,
    pub status: &'a str,
    pub bytes: Option<&'a str>,
    pub referrer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The quoted field at the start of `s` (after its opening quote is
/// consumed by the caller): its content and the rest after the closing
/// quote. A quote escaped with `\` does not close it.
fn quoted(s: &str) -> Option<(&str, &str)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some((&s[..i], &s[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// The time of an access-log line, `dd/Mon/yyyy:hh:mm:ss ±hhmm`.
pub(crate) fn time(text: &str) -> Option<crate::EventTime> {
    let b = text.as_bytes();
    if b.len() != 26 || b[2] != b'/' || b[6] != b'/' || b[11] != b':' || b[20] != b' ' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r).and_then(|t| t.parse::<u32>().ok());
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| text.get(3..6) == Some(*m))? as u8 + 1;
    let (day, year) = (num(0..2)?, num(7..11)?);
    let (hour, minute, second) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let sign = match b[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let offset = sign * i32::try_from(num(22..24)? * 3_600 + num(24..26)? * 60).ok()?;
    let days = crate::time::days_from_civil(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?);
    let local = days * 86_400 + i64::from(hour * 3_600 + minute * 60 + second);
    Some(crate::EventTime::from_unix(local - i64::from(offset), 0, offset))
}

/// The host of an absolute URI (`http://user@host:8080/path`) or of a
/// CONNECT request's `host:port`; `None` for a path.
pub(crate) fn uri_host<'a>(method: &str, uri: &'a str) -> Option<&'a str> {
    let authority = if method.eq_ignore_ascii_case("CONNECT") {
        uri
    } else {
        let scheme = uri.find("://")?;
        if !uri[..scheme].bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        &uri[scheme + 3..]
    };
    let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        // [v6]:port
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    (!host.is_empty()).then_some(host)
}

/// The extension of a path's last segment (`/a/setup.EXE` → `EXE`).
pub(crate) fn extension(path: &str) -> Option<&str> {
    let last = path.rsplit('/').next()?;
    let (name, ext) = last.rsplit_once('.')?;
    (!name.is_empty() && !ext.is_empty() && ext.len() <= 16).then_some(ext)
}

/// `-` means absent.
fn present(s: &str) -> Option<&str> {
    (!s.is_empty() && s != "-").then_some(s)
}

/// Reads `line` as an access-log line.
pub(crate) fn parse(line: &str) -> Option<AccessLine<'_>> {
    // The time in brackets: ` [dd/Mon/yyyy:hh:mm:ss zone] "`.
    let open = line.find(" [")?;
    let after_open = &line[open + 2..];
    let close = after_open.find("] \"")?;
    let time = &after_open[..close];
    if time.len() < 20 || !time.as_bytes()[0].is_ascii_digit() || time.as_bytes().get(2) != Some(&b'/') {
        return None;
    }
    // Before it: [prefix] client ident user.
    let head = &line[..open];
    let mut tokens = head.rsplitn(4, ' ');
    let user = tokens.next()?;
    let _ident = tokens.next()?;
    let client = tokens.next()?;
    let prefix = tokens.next().map(|p| p.trim_end_matches(',').trim_matches('"')).filter(|p| !p.is_empty());
    if client.is_empty() {
        return None;
    }
    let (request, rest) = quoted(&after_open[close + 3..])?;
    let mut parts = rest.trim_start().splitn(3, ' ');
    let status = parts.next()?;
    if status.len() != 3 || !status.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = parts.next().and_then(present);
    let mut out = AccessLine {
        prefix,
        client: client.trim_end_matches(','),
        user: present(user),
        time,
        request,
        status,
        bytes,
        ..AccessLine::default()
    };
    let mut words = request.split(' ');
    if let (Some(m), Some(u), Some(p), None) = (words.next(), words.next(), words.next(), words.next())
        && !m.is_empty()
        && !u.is_empty()
    {
        (out.method, out.uri, out.protocol) = (Some(m), Some(u), Some(p));
    }
    if let Some(tail) = parts.next().and_then(|t| t.strip_prefix('"'))
        && let Some((referrer, tail)) = quoted(tail)
    {
        out.referrer = present(referrer);
        if let Some((agent, _)) = tail.trim_start().strip_prefix('"').and_then(quoted) {
            out.user_agent = present(agent);
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn common_combined_and_prefixed_lines() {
        let a = parse(r#"192.168.33.1 - bob [26/Dec/2016:16:22:13 +0000] "GET /hello?x=1 HTTP/1.1" 404 499 "-" "Mozilla/5.0 (X; \"q\")""#).unwrap();
        assert_eq!(
            a,
            AccessLine {
                prefix: None,
                client: "192.168.33.1",
                user: Some("bob"),
                time: "26/Dec/2016:16:22:13 +0000",
                request: "GET /hello?x=1 HTTP/1.1",
                method: Some("GET"),
                uri: Some("/hello?x=1"),
                protocol: Some("HTTP/1.1"),
                status: "404",
                bytes: Some("499"),
                referrer: None,
                user_agent: Some(r#"Mozilla/5.0 (X; \"q\")"#),
            }
        );
        let common = parse(r#"::1 - - [26/Dec/2016:16:16:29 +0200] "GET /favicon.ico HTTP/1.1" 404 209"#).unwrap();
        assert_eq!((common.client, common.user, common.user_agent), ("::1", None, None));
        let none = parse(r#"::1 - - [26/Dec/2016:16:16:48 +0200] "-" 408 -"#).unwrap();
        assert_eq!((none.method, none.request, none.bytes), (None, "-", None));
        let vhost = parse(r#"vhost1.domaine.fr 123.123.123.123 - - [04/Jul/2019:09:20:46 +0200] "GET / HTTP/1.1" 200 32953 "-" "Chrome""#).unwrap();
        assert_eq!((vhost.prefix, vhost.client), (Some("vhost1.domaine.fr"), "123.123.123.123"));
        let chain = parse(r#""10.5.102.222, 199.96.1.1, 204.246.1.1" 10.2.1.185 - - [22/Jan/2016:13:18:29 +0000] "GET /assets/xxxx?q=100 HTTP/1.1" 200 25507 "-" "Amazon CloudFront""#).unwrap();
        assert_eq!((chain.prefix, chain.client), (Some("10.5.102.222, 199.96.1.1, 204.246.1.1"), "10.2.1.185"));
        let xff = parse(
            r#"10.0.0.2, 10.0.0.1, 127.0.0.1 - - [07/Dec/2016:11:05:07 +0100] "GET /ocelot HTTP/1.1" 200 571 "-" "F""#,
        )
        .unwrap();
        assert_eq!((xff.prefix, xff.client), (Some("10.0.0.2, 10.0.0.1"), "127.0.0.1"));
        assert_eq!(uri_host("GET", "http://bob@Example.com:8080/a?b"), Some("Example.com"));
        assert_eq!(uri_host("GET", "https://[2001:db8::1]:443/"), Some("2001:db8::1"));
        assert_eq!(uri_host("CONNECT", "example.com:443"), Some("example.com"));
        assert_eq!(uri_host("GET", "/path?x=http://a"), None);
        assert_eq!(extension("http://h/a/setup.EXE"), Some("EXE"));
        assert_eq!((extension("/a/.hidden"), extension("/a/b"), extension("/")), (None, None, None));
        let t = time("26/Dec/2016:16:16:29 +0200").unwrap();
        assert_eq!(t.to_rfc3339(), "2016-12-26T16:16:29+02:00");
        // 16:16:29 at -01:30 is 17:46:29 UTC.
        assert_eq!(time("26/Dec/2016:16:16:29 -0130").unwrap().unix_millis(), 1_482_774_389_000);
        for bad in ["26/Foo/2016:16:16:29 +0200", "26/Dec/2016:25:16:29 +0200", "26/Dec/2016 16:16:29 +0200", ""] {
            assert_eq!(time(bad), None, "{bad}");
        }
        for bad in [
            "",
            "no brackets here",
            r#"a - - [x] "GET / HTTP/1.1" 200 1"#,
            r#"a - - [26/Dec/2016:16:16:48 +0200] "GET" abc 1"#,
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Any text, and any text shaped like an access-log line, is read
        /// or refused without a panic.
        #[test]
        fn no_input_panics(line in ".{0,200}", head in "[ -~é\\\\\"]{0,40}", tail in "[ -~é\\\\\"]{0,60}") {
            let _ = parse(&line);
            let _ = time(&line);
            let shaped = format!("{head} - - [26/Dec/2016:16:16:29 +0200] \"{tail}");
            let _ = parse(&shaped);
        }
    }
}
