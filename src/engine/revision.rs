//! Revision detection: the hash of a target's pod template and the checksums of the ConfigMaps
//! and Secrets it uses, compared with what the Canary's status last recorded. Pure.

use std::collections::BTreeMap;

use serde_json::Value;

/// The alphabet Flagger encodes spec hashes with (`rand.SafeEncodeString`).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash of a pod template: FNV-32a over its canonical JSON, each decimal digit mapped into
/// Flagger's alphabet (strings such as `5b8c9f7d6`). Field order does not matter.
pub fn template_hash(template: &Value) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in canonical(template).bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_string()
        .bytes()
        .map(|d| SAFE_ALPHABET[(d - b'0') as usize] as char)
        .collect()
}

/// JSON with object keys sorted, so equal values hash alike.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// A ConfigMap's or Secret's checksum: the first 8 bytes of SHA-256 over its `data` as JSON, in
/// hex (16 characters), as Flagger computes it.
pub fn config_checksum(data: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_string(data).unwrap_or_default();
    Sha256::digest(json.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the target's template is a new revision: nothing applied yet, or a hash other than
/// the last applied one (going back to the last promoted template is not a new revision).
pub fn has_spec_changed(last_applied: Option<&str>, last_promoted: Option<&str>, current: &str) -> bool {
    match last_applied {
        None | Some("") => true,
        Some(_) if last_promoted == Some(current) => false,
        Some(applied) => applied != current,
    }
}

/// Whether tracked ConfigMaps or Secrets changed since the status recorded them.
pub fn have_configs_changed(
    tracked: Option<&BTreeMap<String, String>>,
    current: &BTreeMap<String, String>,
) -> bool {
    match tracked {
        None => !current.is_empty(),
        Some(t) => t != current,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn template_hash_is_stable_and_order_free() {
        let a = json!({"metadata": {"labels": {"app": "x", "b": "y"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}});
        let b = json!({"spec": {"containers": [{"image": "i:1", "name": "c"}]}, "metadata": {"labels": {"b": "y", "app": "x"}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        let c = json!({"spec": {"containers": [{"image": "i:2", "name": "c"}]}, "metadata": {"labels": {"b": "y", "app": "x"}}});
        assert_ne!(template_hash(&a), template_hash(&c));
        assert!(template_hash(&a).bytes().all(|b| SAFE_ALPHABET.contains(&b)));
    }

    #[test]
    fn checksums_are_sixteen_hex_characters() {
        let data = BTreeMap::from([("value".to_owned(), "czNjcjN0".to_owned())]);
        let sum = config_checksum(&data);
        assert_eq!(sum.len(), 16);
        assert!(sum.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(sum, config_checksum(&BTreeMap::new()));
    }

    #[test]
    fn change_detection() {
        assert!(has_spec_changed(None, None, "a"));
        assert!(has_spec_changed(Some(""), None, "a"));
        assert!(!has_spec_changed(Some("a"), Some("a"), "a"));
        assert!(has_spec_changed(Some("a"), Some("a"), "b"));
        assert!(
            !has_spec_changed(Some("b"), Some("a"), "a"),
            "a manual return to the promoted spec is no new revision"
        );
        let current = BTreeMap::from([("secret/s".to_owned(), "1".to_owned())]);
        assert!(have_configs_changed(None, &current));
        assert!(!have_configs_changed(None, &BTreeMap::new()));
        assert!(!have_configs_changed(Some(&current), &current));
        assert!(have_configs_changed(Some(&BTreeMap::new()), &current));
    }
}
