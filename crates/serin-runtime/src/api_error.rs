//! API errors by kind, so that callers tell a conflict from a refusal: a 409 means "read again and
//! retry", a 403 "fix RBAC", a 422 "fix the object", a 429 or a 5xx "wait". [`Failure`] carries
//! the kind with the message a controller reports (what it was doing, then the cause). Pure.

use std::fmt;

/// What kind of failure an API request ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// 409: the object changed since it was read, or already exists.
    Conflict,
    /// 404 (or 410 for a request that named a gone object).
    NotFound,
    /// 401 or 403: the identity may not do this.
    Forbidden,
    /// 400, 415 or 422: the request or the object is wrong.
    Invalid,
    /// 429: the API server asks to slow down.
    Throttled,
    /// 5xx, timeouts and connection failures: the next attempt may succeed as it is.
    Transient,
    /// Anything else (decoding a response, a configuration error, a rule of the caller).
    Other,
}

impl Kind {
    /// The kind of a kube client error.
    pub fn of(err: &kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => Self::of_code(status.code),
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::HttpError(_) => {
                Self::Transient
            }
            _ => Self::Other,
        }
    }

    /// The kind of an HTTP status code.
    pub fn of_code(code: u16) -> Self {
        match code {
            409 => Self::Conflict,
            404 | 410 => Self::NotFound,
            401 | 403 => Self::Forbidden,
            400 | 415 | 422 => Self::Invalid,
            429 => Self::Throttled,
            500..=599 | 408 => Self::Transient,
            _ => Self::Other,
        }
    }

    /// Whether the same request may succeed when simply sent again later.
    pub fn retriable(self) -> bool {
        matches!(self, Self::Conflict | Self::Throttled | Self::Transient)
    }

    /// A bounded name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "Conflict",
            Self::NotFound => "NotFound",
            Self::Forbidden => "Forbidden",
            Self::Invalid => "Invalid",
            Self::Throttled => "Throttled",
            Self::Transient => "Transient",
            Self::Other => "Other",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed step of a controller: its kind and the message it reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    /// How long the API server asked the client to wait (`details.retryAfterSeconds` of a 429
    /// or a 5xx), if it did.
    pub retry_after: Option<std::time::Duration>,
}

impl Failure {
    /// A failure that is no API error (a rule of the caller, a missing input).
    pub fn other(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Other,
            message: message.into(),
            retry_after: None,
        }
    }

    /// An API error, with what was being done: `"{doing}: {err}"`.
    pub fn api(doing: impl fmt::Display, err: &kube::Error) -> Self {
        Self {
            kind: Kind::of(err),
            message: format!("{doing}: {err}"),
            retry_after: retry_after(err),
        }
    }
}

/// How long the API server asked the client to wait before sending the request again
/// (`details.retryAfterSeconds` of its Status, which it sets on 429 "too many requests" and
/// on some 5xx such as a server timeout); `None` when it did not say.
pub fn retry_after(err: &kube::Error) -> Option<std::time::Duration> {
    match err {
        kube::Error::Api(status) => status
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| std::time::Duration::from_secs(u64::from(s))),
        _ => None,
    }
}

/// `map_err` into a [`Failure`] saying what was being done.
pub trait Context<T> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, Failure>;
}

impl<T> Context<T> for Result<T, kube::Error> {
    fn doing(self, doing: impl FnOnce() -> String) -> Result<T, Failure> {
        self.map_err(|e| Failure::api(doing(), &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("the message", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn the_servers_retry_after_is_kept() {
        let mut status = kube::core::Status::failure("too many requests", "TooManyRequests").with_code(429);
        status.details =
            Some(serde_json::from_value(serde_json::json!({"retryAfterSeconds": 7})).expect("details"));
        let throttled = kube::Error::Api(status.boxed());
        let failure = Failure::api("patching the status", &throttled);
        assert_eq!(failure.kind, Kind::Throttled);
        assert_eq!(failure.retry_after, Some(std::time::Duration::from_secs(7)));
        assert_eq!(
            Failure::api("reading", &api_error(429)).retry_after,
            None,
            "not said"
        );
        assert_eq!(Failure::other("no").retry_after, None);
    }

    #[test]
    fn codes_map_to_kinds() {
        let cases = [
            (409, Kind::Conflict),
            (404, Kind::NotFound),
            (403, Kind::Forbidden),
            (401, Kind::Forbidden),
            (422, Kind::Invalid),
            (400, Kind::Invalid),
            (429, Kind::Throttled),
            (500, Kind::Transient),
            (503, Kind::Transient),
            (302, Kind::Other),
        ];
        for (code, kind) in cases {
            assert_eq!(Kind::of(&api_error(code)), kind, "{code}");
        }
        assert!(Kind::Conflict.retriable() && !Kind::Forbidden.retriable() && !Kind::Invalid.retriable());
    }

    #[test]
    fn a_failure_says_what_was_being_done() {
        let failed: Result<(), kube::Error> = Err(api_error(403));
        let failure = failed
            .doing(|| "Deployment podinfo-primary.test apply failed".to_owned())
            .expect_err("fails");
        assert_eq!(failure.kind, Kind::Forbidden);
        assert!(
            failure
                .to_string()
                .starts_with("Deployment podinfo-primary.test apply failed: "),
            "{failure}"
        );
    }
}
