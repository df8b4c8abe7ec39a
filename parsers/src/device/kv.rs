//! Key=value splitting for device messages (FortiGate, iptables, PAM, sudo).
//!
//! Pairs are separated by `separator` (one or more bytes; runs of a
//! one-space separator count once). A value that starts with the quote
//! character runs to the next unescaped quote and loses the quotes. A token
//! without `=` (iptables flags such as `DF`, `SYN`) is skipped. The key is
//! the run of `[A-Za-z0-9_.-]` just before `=`, so a log prefix glued to the
//! first key (`[WAN_LOCAL-default-D]IN=eth0`) does not become part of it.

/// Splitting settings for one family.
#[derive(Clone, Debug)]
pub(crate) struct KvSyntax {
    pub separator: Box<[u8]>,
    pub quote: Option<u8>,
}

/// Iterates `(key, value)` pairs of `text` as byte ranges relative to `text`.
pub(crate) fn pairs<'a>(
    syntax: &'a KvSyntax,
    text: &'a [u8],
) -> impl Iterator<Item = ((usize, usize), (usize, usize))> + 'a {
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            // Skip separators (several spaces in a row are one).
            while text[pos..].starts_with(&syntax.separator) {
                pos += syntax.separator.len();
            }
            if pos >= text.len() {
                return None;
            }
            let token_start = pos;
            let eq_limit = memchr::memmem::find(&text[pos..], &syntax.separator).map_or(text.len(), |p| pos + p);
            let Some(eq) = memchr::memchr(b'=', &text[pos..eq_limit]).map(|p| pos + p) else {
                pos = eq_limit;
                continue;
            };
            let key_len = text[token_start..eq].iter().rev().take_while(|c| is_key_char(**c)).count();
            let key = (eq - key_len, eq);
            let value_start = eq + 1;
            if let Some(q) = syntax.quote
                && text.get(value_start) == Some(&q)
            {
                let body = value_start + 1;
                let mut i = body;
                while i < text.len() && text[i] != q {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                let end = i.min(text.len());
                pos = (end + 1).min(text.len());
                if key_len == 0 {
                    continue;
                }
                return Some((key, (body, end)));
            }
            let end =
                memchr::memmem::find(&text[value_start..], &syntax.separator).map_or(text.len(), |p| value_start + p);
            pos = end;
            if key_len == 0 {
                continue;
            }
            return Some((key, (value_start, end)));
        }
    })
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(sep: &str, quote: Option<u8>, text: &str) -> Vec<(String, String)> {
        let syntax = KvSyntax { separator: sep.as_bytes().into(), quote };
        pairs(&syntax, text.as_bytes())
            .map(|((ks, ke), (vs, ve))| (text[ks..ke].to_owned(), text[vs..ve].to_owned()))
            .collect()
    }

    fn p(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect()
    }

    #[test]
    fn fortigate_quoted() {
        assert_eq!(
            split(" ", Some(b'"'), r#"date=2020-04-23 devname="fw one" msg="a b" empty="" n=1"#),
            p(&[("date", "2020-04-23"), ("devname", "fw one"), ("msg", "a b"), ("empty", ""), ("n", "1")])
        );
    }

    #[test]
    fn iptables_flags_and_prefix() {
        assert_eq!(
            split(" ", None, "[WAN_LOCAL-default-D]IN=eth0 OUT= SRC=1.2.3.4 DF PROTO=TCP  SYN DPT=22"),
            p(&[("IN", "eth0"), ("OUT", ""), ("SRC", "1.2.3.4"), ("PROTO", "TCP"), ("DPT", "22")])
        );
    }

    #[test]
    fn multi_byte_separator_keeps_spaces_in_values() {
        assert_eq!(
            split(" ; ", None, "TTY=pts/0 ; PWD=/home/x ; USER=root ; COMMAND=/bin/cp -pr a b"),
            p(&[("TTY", "pts/0"), ("PWD", "/home/x"), ("USER", "root"), ("COMMAND", "/bin/cp -pr a b")])
        );
    }

    #[test]
    fn unterminated_quote_runs_to_end() {
        assert_eq!(split(" ", Some(b'"'), r#"a="open b=2"#), p(&[("a", "open b=2")]));
    }
}
