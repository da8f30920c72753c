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

fn client(
    clients: &Clients,
    address: &str,
    auth: &Auth,
) -> Result<prometheus_http_query::Client, QueryError> {
    let http = if auth.insecure_skip_verify {
        clients.insecure.clone()
    } else {
        clients.verifying.clone()
    };
    prometheus_http_query::Client::from(http, address)
        .map_err(|e| QueryError::Request(format!("invalid Prometheus address {address:?}: {e}")))
}

/// The headers a provider's credentials and settings add to a request.
fn headers(
    auth: &Auth,
) -> Result<Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>, QueryError> {
    use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
    let value = |v: &str| HeaderValue::from_str(v).map_err(|e| QueryError::Request(e.to_string()));
    let mut out = Vec::new();
    if let Some(token) = &auth.bearer {
        out.push((AUTHORIZATION, value(&format!("Bearer {token}"))?));
    }
    if let Some((user, password)) = &auth.basic {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        out.push((AUTHORIZATION, value(&format!("Basic {encoded}"))?));
    }
    for (name, v) in &auth.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| QueryError::Request(e.to_string()))?;
        out.push((name, value(v)?));
    }
    Ok(out)
}

async fn answer(
    request: impl std::future::Future<
        Output = Result<prometheus_http_query::response::PromqlResult, prometheus_http_query::Error>,
    >,
) -> Result<prometheus_http_query::response::PromqlResult, QueryError> {
    tokio::time::timeout(QUERY_TIMEOUT, request)
        .await
        .map_err(|_| QueryError::Request(format!("no answer within {} s", QUERY_TIMEOUT.as_secs())))?
        .map_err(|e| QueryError::Request(serin_runtime::error_chain(&e)))
}

/// The value of an instant query.
pub async fn query(clients: &Clients, address: &str, promql: &str, auth: &Auth) -> Result<f64, QueryError> {
    let mut request = client(clients, address, auth)?.query(promql);
    for (name, value) in headers(auth)? {
        request = request.header(name, value);
    }
    let result = answer(request.get()).await?;
    value_of(result.data())
}

/// The values of a range query of one series (aggregate it, e.g. with `sum()`) at `start`,
/// `start + step`, ... up to `end` (Unix seconds), in order; a time without a value (no series
/// at all, or none at that time) is `None`.
pub async fn query_range(
    clients: &Clients,
    address: &str,
    promql: &str,
    auth: &Auth,
    (start, end, step): (i64, i64, i64),
) -> Result<Vec<Option<f64>>, QueryError> {
    let mut request = client(clients, address, auth)?.query_range(promql, start, end, step as f64);
    for (name, value) in headers(auth)? {
        request = request.header(name, value);
    }
    let result = answer(request.get()).await?;
    values_at(result.data(), (start, end, step))
}

/// The one series of a range result, at each time from `start` to `end` by `step`.
pub fn values_at(data: &Data, (start, end, step): (i64, i64, i64)) -> Result<Vec<Option<f64>>, QueryError> {
    let times: Vec<i64> = (0..)
        .map(|i| start + i * step.max(1))
        .take_while(|t| *t <= end)
        .collect();
    let samples = match data {
        Data::Matrix(series) => match series.len() {
            0 => return Ok(vec![None; times.len()]),
            1 => series[0].samples(),
            n => return Err(QueryError::MultipleSeries(n)),
        },
        _ => {
            return Err(QueryError::Request(
                "a range query answered without a range".into(),
            ));
        }
    };
    Ok(times
        .iter()
        .map(|t| {
            samples
                .iter()
                .find(|s| s.timestamp().round() as i64 == *t)
                .map(|s| s.value())
                .filter(|v| v.is_finite())
        })
        .collect())
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
    fn a_range_answers_every_step_in_order() {
        let one = data(json!({"resultType": "matrix", "result": [
            {"metric": {}, "values": [[100.0, "3"], [120.0, "NaN"], [130.0, "5"]]}
        ]}));
        assert_eq!(
            values_at(&one, (100, 130, 10)),
            Ok(vec![Some(3.0), None, None, Some(5.0)]),
            "a missing step and NaN are no value"
        );
        let none = data(json!({"resultType": "matrix", "result": []}));
        assert_eq!(values_at(&none, (100, 120, 10)), Ok(vec![None, None, None]));
        let two = data(json!({"resultType": "matrix", "result": [
            {"metric": {"a": "1"}, "values": [[100.0, "1"]]}, {"metric": {"a": "2"}, "values": [[100.0, "1"]]}
        ]}));
        assert_eq!(
            values_at(&two, (100, 100, 10)),
            Err(QueryError::MultipleSeries(2))
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
