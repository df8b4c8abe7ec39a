//! Sigma conditions: `and`, `or`, `not`, brackets, `1 of X`, `all of X`,
//! `any of X` (X a search identifier, possibly with `*` wildcards, or
//! `them`), parsed into an expression over the rule's search identifiers.
//!
//! Precedence, least binding first: `or`, `and`, `not`, `x of`, brackets.

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    /// A search identifier.
    Ident(String),
    /// At least one of these.
    Any(Vec<Expr>),
    /// All of these.
    All(Vec<Expr>),
    /// Not this.
    Not(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    for c in text.chars() {
        match c {
            '(' => {
                flush(&mut word, &mut out);
                out.push(Token::Open);
            }
            ')' => {
                flush(&mut word, &mut out);
                out.push(Token::Close);
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c if c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.') => word.push(c),
            '|' => {
                return Err(
                    "the pipe aggregations of Sigma 1 (`| count() by …`) are not supported; write a correlation rule"
                        .into(),
                );
            }
            c => return Err(format!("unexpected character {c:?} in the condition")),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

/// Parses `text` over the search identifiers `names` (in the rule's
/// order): wildcard patterns and `them` are expanded, unknown identifiers
/// refused.
pub(crate) fn parse(text: &str, names: &[String]) -> Result<Expr, String> {
    let tokens = tokens(text)?;
    if tokens.is_empty() {
        return Err("the condition is empty".into());
    }
    let mut p = Parser { tokens, at: 0, names };
    let expr = p.or()?;
    match p.tokens.get(p.at) {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected {} in the condition", describe(t))),
    }
}

fn describe(t: &Token) -> String {
    match t {
        Token::Word(w) => format!("'{w}'"),
        Token::Open => "'('".into(),
        Token::Close => "')'".into(),
    }
}

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    names: &'a [String],
}

impl Parser<'_> {
    fn peek_word(&self) -> Option<&str> {
        match self.tokens.get(self.at) {
            Some(Token::Word(w)) => Some(w.as_str()),
            _ => None,
        }
    }

    fn keyword(&mut self, k: &str) -> bool {
        if self.peek_word().is_some_and(|w| w.eq_ignore_ascii_case(k)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.and()?];
        while self.keyword("or") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Any(items) })
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut items = vec![self.not()?];
        while self.keyword("and") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::All(items) })
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.tokens.get(self.at).cloned() {
            None => Err("the condition ends too early".into()),
            Some(Token::Open) => {
                self.at += 1;
                let inner = self.or()?;
                if self.tokens.get(self.at) != Some(&Token::Close) {
                    return Err("a '(' in the condition is not closed".into());
                }
                self.at += 1;
                Ok(inner)
            }
            Some(Token::Close) => Err("unexpected ')' in the condition".into()),
            Some(Token::Word(w)) => {
                self.at += 1;
                let quantifier = if w == "1" || w.eq_ignore_ascii_case("any") {
                    Some(false)
                } else if w.eq_ignore_ascii_case("all") {
                    Some(true)
                } else {
                    None
                };
                if let Some(all) = quantifier
                    && self.keyword("of")
                {
                    let target =
                        self.peek_word().map(str::to_owned).ok_or("'of' needs a search identifier or 'them'")?;
                    self.at += 1;
                    let chosen: Vec<Expr> = self
                        .names
                        .iter()
                        .filter(|n| {
                            if target.eq_ignore_ascii_case("them") {
                                !n.starts_with('_')
                            } else {
                                wildcard_match(&target, n)
                            }
                        })
                        .map(|n| Expr::Ident(n.clone()))
                        .collect();
                    if chosen.is_empty() {
                        return Err(format!("'{target}' names no search identifier"));
                    }
                    return Ok(if all { Expr::All(chosen) } else { Expr::Any(chosen) });
                }
                if ["and", "or", "not", "of"].iter().any(|k| w.eq_ignore_ascii_case(k)) {
                    return Err(format!("unexpected '{w}' in the condition"));
                }
                if !self.names.contains(&w) {
                    return Err(format!("the condition names '{w}', which is not a search identifier of the rule"));
                }
                Ok(Expr::Ident(w))
            }
        }
    }
}

/// Whether `name` matches `pattern`, where `*` is any run of characters.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn id(s: &str) -> Expr {
        Expr::Ident(s.into())
    }

    #[test]
    fn precedence_brackets_and_quantifiers() {
        let n = names(&["selection_a", "selection_b", "filter_x", "keywords", "_hidden"]);
        assert_eq!(
            parse("selection_a and not filter_x or keywords", &n).unwrap(),
            Expr::Any(vec![Expr::All(vec![id("selection_a"), Expr::Not(Box::new(id("filter_x")))]), id("keywords")])
        );
        assert_eq!(
            parse("selection_a and (filter_x or keywords)", &n).unwrap(),
            Expr::All(vec![id("selection_a"), Expr::Any(vec![id("filter_x"), id("keywords")])])
        );
        assert_eq!(
            parse("1 of selection_* and not 1 of filter*", &n).unwrap(),
            Expr::All(vec![
                Expr::Any(vec![id("selection_a"), id("selection_b")]),
                Expr::Not(Box::new(Expr::Any(vec![id("filter_x")])))
            ])
        );
        assert_eq!(
            parse("all of them", &n).unwrap(),
            Expr::All(
                names(&["selection_a", "selection_b", "filter_x", "keywords"]).into_iter().map(Expr::Ident).collect()
            )
        );
        assert_eq!(parse("not not keywords", &n).unwrap(), Expr::Not(Box::new(Expr::Not(Box::new(id("keywords"))))));
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        let n = names(&["selection"]);
        for (text, message) in [
            ("", "empty"),
            ("selection and", "ends too early"),
            ("(selection", "not closed"),
            ("selection)", "unexpected ')'"),
            ("selectoin", "not a search identifier"),
            ("1 of filter*", "names no search identifier"),
            ("selection | count() > 5", "pipe aggregations"),
            ("selection selection", "unexpected 'selection'"),
        ] {
            let e = parse(text, &n).unwrap_err();
            assert!(e.contains(message), "{text}: {e}");
        }
        assert!(wildcard_match("sel*_a*", "selection_ab") && !wildcard_match("sel*x", "selection"));
    }
}
