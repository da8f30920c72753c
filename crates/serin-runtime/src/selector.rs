//! Kubernetes label selectors, with the API server's grammar (`labels.Parse`): `k=v`, `k==v`,
//! `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`, `k<1`, joined by commas. Parsing is
//! total: any text gives a selector or an error naming what is wrong. Pure.

use std::fmt;

use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Greater(i64),
    Less(i64),
}

/// A parsed label selector; the empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<(String, Op)>);

/// Why a selector did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError {
    pub selector: String,
    pub message: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unable to parse label selector {:?}: {}",
            self.selector, self.message
        )
    }
}

impl std::error::Error for SelectorError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Open,
    Close,
    Comma,
    Greater,
    Less,
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '!' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::NotEq);
                } else {
                    out.push(Token::Not);
                }
            }
            '=' => {
                chars.next();
                if chars.peek() == Some(&'=') {
                    chars.next();
                    out.push(Token::DoubleEq);
                } else {
                    out.push(Token::Eq);
                }
            }
            '(' | ')' | ',' | '>' | '<' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    '>' => Token::Greater,
                    _ => Token::Less,
                });
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || "!=(),<>".contains(c) {
                        break;
                    }
                    if !(c.is_ascii_alphanumeric() || "-_./".contains(c)) {
                        return Err(format!("invalid character {c:?}"));
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

fn valid_key(key: &str) -> Result<(), String> {
    let name = key
        .rsplit_once('/')
        .map_or(key, |(prefix, name)| if prefix.is_empty() { "" } else { name });
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && key.len() <= 253 + 1 + 63;
    if ok {
        Ok(())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn valid_value(value: &str) -> Result<(), String> {
    let ok = value.is_empty()
        || (value.len() <= 63
            && !value.contains('/')
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

impl LabelSelector {
    /// Parses a selector; the empty text selects everything.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        Self::parse_tokens(text).map_err(|message| SelectorError {
            selector: text.to_owned(),
            message,
        })
    }

    fn parse_tokens(text: &str) -> Result<Self, String> {
        let tokens = tokens(text)?;
        let mut reqs = Vec::new();
        let mut it = tokens.into_iter().peekable();
        let word = |t: Option<Token>, what: &str| match t {
            Some(Token::Word(w)) => Ok(w),
            other => Err(format!("expected {what}, found {other:?}")),
        };
        while it.peek().is_some() {
            let req = if it.peek() == Some(&Token::Not) {
                it.next();
                let key = word(it.next(), "a key after '!'")?;
                valid_key(&key)?;
                (key, Op::NotExists)
            } else {
                let key = word(it.next(), "a key")?;
                valid_key(&key)?;
                match it.peek().cloned() {
                    None | Some(Token::Comma) => (key, Op::Exists),
                    Some(Token::Eq | Token::DoubleEq | Token::NotEq) => {
                        let op = it.next();
                        let value = match it.peek() {
                            Some(Token::Word(_)) => word(it.next(), "a value")?,
                            _ => String::new(),
                        };
                        valid_value(&value)?;
                        if op == Some(Token::NotEq) {
                            (key, Op::NotEq(value))
                        } else {
                            (key, Op::Eq(value))
                        }
                    }
                    Some(Token::Greater | Token::Less) => {
                        let greater = it.next() == Some(Token::Greater);
                        let value = word(it.next(), "a number")?;
                        let n: i64 = value
                            .parse()
                            .map_err(|_| format!("{value:?} is not an integer for {key}"))?;
                        (key, if greater { Op::Greater(n) } else { Op::Less(n) })
                    }
                    Some(Token::Word(w)) if w == "in" || w == "notin" => {
                        it.next();
                        if it.next() != Some(Token::Open) {
                            return Err(format!("expected '(' after {w}"));
                        }
                        let mut values = Vec::new();
                        loop {
                            match it.next() {
                                Some(Token::Word(v)) => {
                                    valid_value(&v)?;
                                    values.push(v);
                                }
                                Some(Token::Comma) => {}
                                Some(Token::Close) => break,
                                other => return Err(format!("expected a value or ')', found {other:?}")),
                            }
                        }
                        if values.is_empty() {
                            return Err(format!("{key} {w} () needs at least one value"));
                        }
                        if w == "in" {
                            (key, Op::In(values))
                        } else {
                            (key, Op::NotIn(values))
                        }
                    }
                    Some(other) => return Err(format!("unexpected {other:?} after {key}")),
                }
            };
            reqs.push(req);
            match it.next() {
                None | Some(Token::Comma) => {}
                Some(other) => return Err(format!("expected ',', found {other:?}")),
            }
        }
        Ok(Self(reqs))
    }

    /// Whether an object with `labels` (a JSON map, or `None`) is selected.
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        self.0.iter().all(|(key, op)| {
            let value = labels.and_then(|l| l.get(key)).and_then(Value::as_str);
            match op {
                Op::Eq(v) => value == Some(v.as_str()),
                Op::NotEq(v) => value != Some(v.as_str()),
                Op::In(vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                Op::NotIn(vs) => !value.is_some_and(|x| vs.iter().any(|v| v == x)),
                Op::Exists => value.is_some(),
                Op::NotExists => value.is_none(),
                Op::Greater(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v > *n),
                Op::Less(n) => value.and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < *n),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_api_servers_grammar() {
        let labels = json!({"app": "podinfo", "env": "b", "tier": "web", "rank": "3"});
        let cases = [
            ("", true),
            ("app=podinfo", true),
            ("app==podinfo,tier=web", true),
            ("app!=podinfo", false),
            ("env in (a,b)", true),
            ("env in(a, b )", true),
            ("env notin (a,b)", false),
            ("env notin (c)", true),
            ("tier", true),
            ("!tier", false),
            ("!legacy", true),
            ("rank>2,rank<4", true),
            ("rank>3", false),
            ("app=podinfo, env in (b), !legacy", true),
            ("example.com/team=", false),
            ("missing notin (x)", true),
        ];
        for (text, want) in cases {
            let selector = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(Some(&labels)), want, "{text}");
        }
        assert!(
            LabelSelector::parse("example.com/team=")
                .expect("empty value")
                .matches(Some(&json!({"example.com/team": ""})))
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for (text, want) in [
            ("env in a,b", "expected '(' after in"),
            ("env in ()", "needs at least one value"),
            ("env in (a", "expected a value or ')'"),
            ("=x", "expected a key"),
            ("a=b=c", "expected ','"),
            ("rank>x", "is not an integer"),
            ("app=po dinfo", "expected ','"),
            ("app=-x", "invalid label value"),
            ("a;b", "invalid character ';'"),
            ("!", "expected a key after '!'"),
        ] {
            let err = LabelSelector::parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
            assert!(
                err.starts_with(&format!("unable to parse label selector {text:?}")),
                "{err}"
            );
        }
    }

    #[test]
    fn any_text_parses_or_fails_without_panicking() {
        let alphabet = ["a", "=", "!", "(", ")", ",", " ", "in", "notin", ">", "1", "/"];
        let mut texts = vec![String::new()];
        for _ in 0..4 {
            texts = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            for text in &texts {
                if let Ok(s) = LabelSelector::parse(text) {
                    let _ = s.matches(Some(&json!({"a": "1"})));
                }
            }
        }
    }
}
