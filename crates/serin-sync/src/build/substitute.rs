//! Post-build variable substitution as Flux does it: bash-style `${var}`, `${var:=default}`,
//! `${var:-default}`, `${var=default}`, `${var-default}`, `${#var}`, `${var^^}`, `${var,,}`,
//! `${var:offset}` and `${var:offset:length}`; bare `$var` is left alone and `$${var}` is the
//! escape for a literal `${var}`. Strict mode fails on an unset variable without a default. Pure.

use std::collections::BTreeMap;

use regex::Regex;

/// The label or annotation that turns substitution off for one object.
pub const SUBSTITUTE_KEY: &str = "kustomize.toolkit.fluxcd.io/substitute";
/// Flux's variable name rule.
pub const VAR_NAME_PATTERN: &str = "^[_[:alpha:]][_[:alpha:][:digit:]]*$";

/// A substitution error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    #[error("variable not set (strict mode): \"{0}\"")]
    Unset(String),
    #[error("'{0}' var name is invalid, must match '{VAR_NAME_PATTERN}'")]
    InvalidName(String),
    #[error("unable to parse variable name: {0}")]
    Syntax(String),
}

/// Checks the variable names and strips newlines from the values, as Flux does.
pub fn prepare_vars(vars: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, SubstituteError> {
    let re = Regex::new(VAR_NAME_PATTERN).map_err(|e| SubstituteError::Syntax(e.to_string()))?;
    vars.into_iter()
        .map(|(k, v)| {
            if re.is_match(&k) {
                Ok((k, v.replace('\n', "")))
            } else {
                Err(SubstituteError::InvalidName(k))
            }
        })
        .collect()
}

/// Substitutes the variables in `text`.
pub fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
    strict: bool,
) -> Result<String, SubstituteError> {
    let mut out = String::with_capacity(text.len());
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '$' && bytes.get(i + 1) == Some(&'$') && bytes.get(i + 2) == Some(&'{') {
            // `$${` is the escape for a literal `${`.
            out.push_str("${");
            i += 3;
            continue;
        }
        if c == '$' && bytes.get(i + 1) == Some(&'{') {
            let Some(len) = closing(&bytes[i + 2..]) else {
                return Err(SubstituteError::Syntax(bytes[i..].iter().collect()));
            };
            let expr: String = bytes[i + 2..i + 2 + len].iter().collect();
            out.push_str(&evaluate(&expr, vars, strict)?);
            i += len + 3;
            continue;
        }
        out.push(c);
        i += 1;
    }
    Ok(out)
}

/// The length of the expression up to its matching `}`.
fn closing(rest: &[char]) -> Option<usize> {
    let mut depth = 0;
    for (n, c) in rest.iter().enumerate() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(n),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn evaluate(expr: &str, vars: &BTreeMap<String, String>, strict: bool) -> Result<String, SubstituteError> {
    if let Some(name) = expr.strip_prefix('#') {
        return Ok(lookup(name, vars, strict)?.chars().count().to_string());
    }
    let name_len = expr
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(expr.len(), |(n, _)| n);
    let (name, op) = expr.split_at(name_len);
    if name.is_empty() {
        return Err(SubstituteError::Syntax(format!("${{{expr}}}")));
    }
    let value = vars.get(name);
    let default = |d: &str| substitute(d, vars, strict);
    match op {
        "" => lookup(name, vars, strict),
        "^^" => Ok(lookup(name, vars, strict)?.to_uppercase()),
        ",," => Ok(lookup(name, vars, strict)?.to_lowercase()),
        _ if op.starts_with(":=") || op.starts_with(":-") => match value.filter(|v| !v.is_empty()) {
            Some(v) => Ok(v.clone()),
            None => default(&op[2..]),
        },
        _ if op.starts_with('=') || op.starts_with('-') => match value {
            Some(v) => Ok(v.clone()),
            None => default(&op[1..]),
        },
        _ if op.starts_with(':') => {
            let v = lookup(name, vars, strict)?;
            let mut parts = op[1..].splitn(2, ':');
            let parse = |s: Option<&str>| {
                s.map(|s| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| SubstituteError::Syntax(format!("${{{expr}}}")))
                })
            };
            let offset = parse(parts.next()).transpose()?.unwrap_or(0);
            let length = parse(parts.next()).transpose()?;
            let chars = v.chars().skip(offset);
            Ok(match length {
                Some(l) => chars.take(l).collect(),
                None => chars.collect(),
            })
        }
        _ => Err(SubstituteError::Syntax(format!("${{{expr}}}"))),
    }
}

fn lookup(name: &str, vars: &BTreeMap<String, String>, strict: bool) -> Result<String, SubstituteError> {
    match vars.get(name) {
        Some(v) => Ok(v.clone()),
        None if strict => Err(SubstituteError::Unset(name.to_owned())),
        None => Ok(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("cluster", "dev"), ("empty", ""), ("TAG", "6.5.0")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn table() {
        let cases = [
            ("name: ${cluster}-db", "name: dev-db"),
            ("image: podinfo:${TAG}", "image: podinfo:6.5.0"),
            ("a: ${missing:=fallback}", "a: fallback"),
            ("a: ${missing:-fallback}", "a: fallback"),
            ("a: ${empty:-fallback}", "a: fallback"),
            ("a: ${empty-fallback}", "a: "),
            ("a: ${missing:=${cluster}}", "a: dev"),
            ("a: $cluster", "a: $cluster"),
            ("a: $${cluster}", "a: ${cluster}"),
            ("a: ${#cluster}", "a: 3"),
            ("a: ${cluster^^}", "a: DEV"),
            ("a: ${TAG:0:3}", "a: 6.5"),
            ("a: ${TAG:2}", "a: 5.0"),
            ("cost: $5", "cost: $5"),
        ];
        for (input, want) in cases {
            assert_eq!(substitute(input, &vars(), true).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn strict_mode_fails_on_unset_variables() {
        assert_eq!(
            substitute("a: ${nope}", &vars(), true),
            Err(SubstituteError::Unset("nope".into()))
        );
        assert_eq!(substitute("a: ${nope}", &vars(), false).as_deref(), Ok("a: "));
    }

    #[test]
    fn variable_names_are_checked() {
        let bad: BTreeMap<String, String> = [("1abc".to_owned(), "x".to_owned())].into();
        assert_eq!(
            prepare_vars(bad),
            Err(SubstituteError::InvalidName("1abc".into()))
        );
        let ok: BTreeMap<String, String> = [("a_b".to_owned(), "x\ny".to_owned())].into();
        assert_eq!(prepare_vars(ok).expect("ok")["a_b"], "xy");
    }
}
