//! Schema helpers for fields whose OpenAPI shape must match Flagger's CRD exactly, where the Rust
//! type alone would derive something else (an `int` field that Flagger declares as `number`). No I/O.

use schemars::{Schema, SchemaGenerator, json_schema};

/// `type: number` for an integer field that Flagger's CRD declares as a number.
pub fn number(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "number" })
}

/// `type: array` of numbers (Flagger's `stepWeights`).
pub fn number_array(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "array", "items": { "type": "number" } })
}

/// The duration pattern Flagger puts on `interval` and webhook `timeout`.
pub const DURATION_PATTERN: &str = "^[0-9]+(m|s)";

/// A duration string such as `30s` or `1m`, with Flagger's pattern.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "pattern": DURATION_PATTERN })
}

/// A URL string (`format: url`, as Flagger declares webhook URLs).
pub fn url(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "url" })
}

/// A `date-time` string.
pub fn date_time(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "format": "date-time" })
}

/// A map of strings to strings.
pub fn string_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object", "additionalProperties": { "type": "string" } })
}

/// An enum of strings, for fields kept as `String` so that a value serin does not know is
/// reported by `serin lint` and by the controller instead of failing deserialization. Takes a
/// list of literals or a `&[&str]` constant.
macro_rules! string_enum {
    ($name:ident, [$($value:literal),* $(,)?]) => {
        pub fn $name(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
            ::schemars::json_schema!({ "type": "string", "enum": [$($value),*] })
        }
    };
    ($name:ident, $values:expr) => {
        pub fn $name(_: &mut ::schemars::SchemaGenerator) -> ::schemars::Schema {
            ::schemars::json_schema!({ "type": "string", "enum": $values })
        }
    };
}
pub(crate) use string_enum;

/// Removes the `default` that `#[serde(default)]` gives a field's schema: a real API server
/// rejects a CRD whose default is not one of the field's `enum` values (an empty string is not a
/// provider type), and Flagger's CRD declares none.
pub fn no_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}
