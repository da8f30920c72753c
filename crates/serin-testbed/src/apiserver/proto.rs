//! Decoding of the Kubernetes protobuf encoding (`application/vnd.kubernetes.protobuf`), which
//! kubectl uses for the request bodies of its typed commands (`kubectl create namespace`,
//! `create configmap`, `create secret`, `create serviceaccount`). Responses are always JSON, which
//! every client accepts. No I/O.

use base64::Engine;
use serde_json::{Map, Value, json};

/// The magic prefix of a protobuf-encoded object.
pub const MAGIC: &[u8] = b"k8s\0";

#[derive(Clone, Copy)]
enum Ty {
    Str,
    Int,
    Bool,
    Time,
    Msg(&'static [Field]),
    StrMap,
    BytesMap,
    RepeatedStr,
    RepeatedMsg(&'static [Field]),
}

type Field = (u64, &'static str, Ty);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Ty::Str),
    (3, "name", Ty::Str),
    (4, "uid", Ty::Str),
    (5, "apiVersion", Ty::Str),
    (6, "controller", Ty::Bool),
    (7, "blockOwnerDeletion", Ty::Bool),
];
const OBJECT_META: &[Field] = &[
    (1, "name", Ty::Str),
    (2, "generateName", Ty::Str),
    (3, "namespace", Ty::Str),
    (5, "uid", Ty::Str),
    (6, "resourceVersion", Ty::Str),
    (7, "generation", Ty::Int),
    (8, "creationTimestamp", Ty::Time),
    (11, "labels", Ty::StrMap),
    (12, "annotations", Ty::StrMap),
    (13, "ownerReferences", Ty::RepeatedMsg(OWNER_REFERENCE)),
    (14, "finalizers", Ty::RepeatedStr),
];
const NAMESPACE: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "spec", Ty::Msg(&[(1, "finalizers", Ty::RepeatedStr)])),
    (3, "status", Ty::Msg(&[(1, "phase", Ty::Str)])),
];
const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::StrMap),
    (3, "binaryData", Ty::BytesMap),
    (4, "immutable", Ty::Bool),
];
const SECRET: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (2, "data", Ty::BytesMap),
    (3, "type", Ty::Str),
    (4, "stringData", Ty::StrMap),
    (5, "immutable", Ty::Bool),
];
const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (3, "imagePullSecrets", Ty::RepeatedMsg(&[(1, "name", Ty::Str)])),
    (4, "automountServiceAccountToken", Ty::Bool),
];

/// `kubectl create token` sends its TokenRequest as protobuf.
const TOKEN_REQUEST: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (
        2,
        "spec",
        Ty::Msg(&[
            (1, "audiences", Ty::RepeatedStr),
            (4, "expirationSeconds", Ty::Int),
            (
                3,
                "boundObjectRef",
                Ty::Msg(&[
                    (1, "kind", Ty::Str),
                    (2, "apiVersion", Ty::Str),
                    (3, "name", Ty::Str),
                    (4, "uid", Ty::Str),
                ]),
            ),
        ]),
    ),
];

const RESOURCE_ATTRIBUTES: &[Field] = &[
    (1, "namespace", Ty::Str),
    (2, "verb", Ty::Str),
    (3, "group", Ty::Str),
    (4, "version", Ty::Str),
    (5, "resource", Ty::Str),
    (6, "subresource", Ty::Str),
    (7, "name", Ty::Str),
];
const NON_RESOURCE_ATTRIBUTES: &[Field] = &[(1, "path", Ty::Str), (2, "verb", Ty::Str)];
/// `kubectl auth can-i` and `kubectl auth whoami` send their reviews as protobuf.
const SELF_SUBJECT_ACCESS_REVIEW: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (
        2,
        "spec",
        Ty::Msg(&[
            (1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            (2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
        ]),
    ),
];
const SUBJECT_ACCESS_REVIEW: &[Field] = &[
    (1, "metadata", Ty::Msg(OBJECT_META)),
    (
        2,
        "spec",
        Ty::Msg(&[
            (1, "resourceAttributes", Ty::Msg(RESOURCE_ATTRIBUTES)),
            (2, "nonResourceAttributes", Ty::Msg(NON_RESOURCE_ATTRIBUTES)),
            (3, "user", Ty::Str),
            (4, "groups", Ty::RepeatedStr),
            (6, "uid", Ty::Str),
        ]),
    ),
];
const SELF_SUBJECT_REVIEW: &[Field] = &[(1, "metadata", Ty::Msg(OBJECT_META))];

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long".to_owned())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|e| *e <= self.buf.len())
            .ok_or("truncated field")?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, wire: u64) -> Result<(), String> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => {
                self.pos += 8;
                Ok(())
            }
            2 => self.bytes().map(|_| ()),
            5 => {
                self.pos += 4;
                Ok(())
            }
            other => Err(format!("unsupported wire type {other}")),
        }
    }

    /// Next (field number, wire type), or None at the end.
    fn tag(&mut self) -> Result<Option<(u64, u64)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        Ok(Some((tag >> 3, tag & 7)))
    }
}

fn text(bytes: &[u8]) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "invalid UTF-8 in a string field".to_owned())
}

fn map_entry(bytes: &[u8]) -> Result<(String, Vec<u8>), String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let (mut key, mut value) = (String::new(), Vec::new());
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 2) => key = text(r.bytes()?)?,
            (2, 2) => value = r.bytes()?.to_vec(),
            _ => r.skip(wire)?,
        }
    }
    Ok((key, value))
}

fn decode_message(bytes: &[u8], schema: &[Field]) -> Result<Value, String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let mut out = Map::new();
    while let Some((number, wire)) = r.tag()? {
        let Some((_, name, ty)) = schema.iter().find(|(n, _, _)| *n == number) else {
            r.skip(wire)?;
            continue;
        };
        let name = (*name).to_owned();
        match ty {
            Ty::Str => {
                out.insert(name, json!(text(r.bytes()?)?));
            }
            Ty::Int => {
                out.insert(name, json!(r.varint()? as i64));
            }
            Ty::Bool => {
                out.insert(name, json!(r.varint()? != 0));
            }
            Ty::Time => {
                let t = decode_message(r.bytes()?, &[(1, "seconds", Ty::Int)])?;
                let seconds = t.get("seconds").and_then(Value::as_i64).unwrap_or(0);
                if let Ok(ts) = jiff::Timestamp::from_second(seconds) {
                    out.insert(name, json!(ts.to_string()));
                }
            }
            Ty::Msg(inner) => {
                out.insert(name, decode_message(r.bytes()?, inner)?);
            }
            Ty::StrMap => {
                let (k, v) = map_entry(r.bytes()?)?;
                out.entry(name).or_insert_with(|| json!({}))[k] = json!(text(&v)?);
            }
            Ty::BytesMap => {
                let (k, v) = map_entry(r.bytes()?)?;
                out.entry(name).or_insert_with(|| json!({}))[k] =
                    json!(base64::engine::general_purpose::STANDARD.encode(v));
            }
            Ty::RepeatedStr => {
                let s = text(r.bytes()?)?;
                if let Value::Array(items) = out.entry(name).or_insert_with(|| json!([])) {
                    items.push(json!(s));
                }
            }
            Ty::RepeatedMsg(inner) => {
                let m = decode_message(r.bytes()?, inner)?;
                if let Value::Array(items) = out.entry(name).or_insert_with(|| json!([])) {
                    items.push(m);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a protobuf-encoded object into its JSON form. Errors name what is not supported.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf object (missing the k8s\\0 prefix)")?;
    let mut r = Reader {
        buf: envelope,
        pos: 0,
    };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    while let Some((field, wire)) = r.tag()? {
        match (field, wire) {
            (1, 2) => {
                let meta = decode_message(r.bytes()?, &[(1, "apiVersion", Ty::Str), (2, "kind", Ty::Str)])?;
                api_version = meta
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                kind = meta
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
            }
            (2, 2) => raw = r.bytes()?,
            _ => r.skip(wire)?,
        }
    }
    let schema = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("authentication.k8s.io/v1", "TokenRequest") => TOKEN_REQUEST,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => SELF_SUBJECT_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => SELF_SUBJECT_ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SubjectAccessReview") => SUBJECT_ACCESS_REVIEW,
        _ => {
            return Err(format!(
                "the test bed decodes protobuf bodies of v1 Namespace, ConfigMap, Secret and ServiceAccount and of TokenRequest and access reviews only, not {api_version} {kind}; send JSON"
            ));
        }
    };
    let mut obj = decode_message(raw, schema)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((number << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_namespace_envelope() {
        let mut labels_entry = field(1, b"team");
        labels_entry.extend(field(2, b"a"));
        let mut meta = field(1, b"test");
        meta.extend(field(11, &labels_entry));
        let namespace = field(1, &meta);
        let mut type_meta = field(1, b"v1");
        type_meta.extend(field(2, b"Namespace"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &type_meta));
        body.extend(field(2, &namespace));
        let obj = decode(&body).expect("decodes");
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "test", "labels": {"team": "a"}}})
        );
    }

    #[test]
    fn refuses_unknown_kinds_by_name() {
        let mut type_meta = field(1, b"apps/v1");
        type_meta.extend(field(2, b"Deployment"));
        let mut body = MAGIC.to_vec();
        body.extend(field(1, &type_meta));
        let err = decode(&body).expect_err("refused");
        assert!(err.contains("apps/v1 Deployment"), "{err}");
        assert!(decode(b"{}").is_err());
    }
}
