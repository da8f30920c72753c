//! YAML decoding errors that always say where: serde_yaml leaves the position out of its
//! message when the error is at the very start of the text (line 1, column 1), so a
//! rejection of such a document would name no place. Pure.

/// `err`'s message, with its position when serde_yaml left it out.
pub fn describe(err: &serde_yaml::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(at) if !message.contains(" at line ") => {
            format!("{message} at line {} column {}", at.line(), at.column())
        }
        _ => message,
    }
}

/// Decodes one YAML document; the error names its position.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_yaml::from_str(text).map_err(|e| describe(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_at_the_start_names_line_one() {
        let err = from_str::<serde_yaml::Value>("]piVersion: v1\n").expect_err("not YAML");
        assert!(err.ends_with(" at line 1 column 1"), "{err}");
        let err = from_str::<serde_yaml::Value>("a: 1\nb: [\n").expect_err("not YAML");
        assert_eq!(err.matches(" at line ").count(), 1, "{err}");
    }
}
