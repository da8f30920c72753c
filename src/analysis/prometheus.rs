//! The Prometheus provider: instant queries with a 5 s timeout, optional headers and
//! bearer/basic auth, over the controller's shared HTTP clients (one connection pool, not a
//! client per query), and Flagger's result rules (no value or NaN is "no values found"), except
//! that several series are an error naming how many came back instead of silently taking the
//! last one. Does I/O (HTTP).

use std::time::Duration;

use prometheus_http_query::response::Data;

/// How long a query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a query gave no usable value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueryError {
    #[error("no values found")]
    NoValues,
    #[error(
        "the query returned {0} series; a check needs exactly one (aggregate it, for example with sum())"
    )]
    MultipleSeries(usize),
    #[error("the query returned a range vector; a check needs an instant value")]
    RangeVector,
    #[error("{0}")]
    Request(String),
}

/// Credentials and headers for a provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Auth {
    pub bearer: Option<String>,
    pub basic: Option<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub insecure_skip_verify: bool,
}

/// The HTTP clients queries go through: one that verifies TLS certificates and one for
/// providers that skip the verification (`insecureSkipVerify`). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Clients {
    pub verifying: reqwest::Client,
    pub insecure: reqwest::Client,
}

/// The value of an instant query.
pub async fn query(clients: &Clients, address: &str, promql: &str, auth: &Auth) -> Result<f64, QueryError> {
    let http = if auth.insecure_skip_verify {
        clients.insecure.clone()
    } else {
        clients.verifying.clone()
    };
    let client = prometheus_http_query::Client::from(http, address)
        .map_err(|e| QueryError::Request(format!("invalid Prometheus address {address:?}: {e}")))?;
    let mut request = client.query(promql);
    if let Some(token) = &auth.bearer {
        request = request.header(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| QueryError::Request(e.to_string()))?,
        );
    }
    if let Some((user, password)) = &auth.basic {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        request = request.header(
            reqwest::header::AUTHORIZATION,
            reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|e| QueryError::Request(e.to_string()))?,
        );
    }
    for (name, value) in &auth.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| QueryError::Request(e.to_string()))?;
        request = request.header(
            name,
            reqwest::header::HeaderValue::from_str(value).map_err(|e| QueryError::Request(e.to_string()))?,
        );
    }
    let result = tokio::time::timeout(QUERY_TIMEOUT, request.get())
        .await
        .map_err(|_| QueryError::Request(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())))?
        .map_err(|e| QueryError::Request(serin_runtime::error_chain(&e)))?;
    value_of(result.data())
}

/// The one value of a result, by Flagger's rules (and serin's for several series).
pub fn value_of(data: &Data) -> Result<f64, QueryError> {
    let value = match data {
        Data::Vector(series) => match series.len() {
            0 => return Err(QueryError::NoValues),
            1 => series[0].sample().value(),
            n => return Err(QueryError::MultipleSeries(n)),
        },
        Data::Scalar(sample) => sample.value(),
        Data::Matrix(_) => return Err(QueryError::RangeVector),
    };
    if value.is_nan() {
        Err(QueryError::NoValues)
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn data(v: serde_json::Value) -> Data {
        serde_json::from_value(v).expect("data")
    }

    #[test]
    fn one_series_one_value() {
        let one = data(json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "99.5"]}]}));
        assert_eq!(value_of(&one), Ok(99.5));
        assert_eq!(
            value_of(&data(json!({"resultType": "scalar", "result": [1.0, "3"]}))),
            Ok(3.0)
        );
    }

    #[test]
    fn no_value_nan_and_several_series_are_errors() {
        assert_eq!(
            value_of(&data(json!({"resultType": "vector", "result": []}))),
            Err(QueryError::NoValues)
        );
        let nan = data(json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "NaN"]}]}));
        assert_eq!(value_of(&nan), Err(QueryError::NoValues));
        let two = data(
            json!({"resultType": "vector", "result": [{"metric": {"a": "1"}, "value": [1.0, "1"]}, {"metric": {"a": "2"}, "value": [1.0, "2"]}]}),
        );
        let err = value_of(&two).expect_err("two series");
        assert_eq!(err, QueryError::MultipleSeries(2));
        assert!(err.to_string().contains("returned 2 series"), "{err}");
    }
}
