//! Bound ServiceAccount tokens (the TokenRequest subresource) and legacy Secret tokens: issuing
//! and verifying them. No I/O.

use super::*;

/// Signs and checks bound ServiceAccount tokens. Tokens are JWTs with Kubernetes' claims; the
/// signature is a keyed SHA-256 (the emulator is its own only verifier).
#[derive(Debug)]
pub struct TokenIssuer {
    key: String,
}

/// The claims of a ServiceAccount token that the emulator checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    pub namespace: String,
    pub service_account: String,
    pub uid: String,
    pub expires: i64,
}

/// The claims of a legacy ServiceAccount token, kept in a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyTokenClaims {
    pub namespace: String,
    pub service_account: String,
    pub uid: String,
    pub secret: String,
}

/// The Secret type the token controller fills with a token.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

pub(super) fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenIssuer {
    pub fn new(key: String) -> Self {
        Self { key }
    }

    fn sign(&self, signing_input: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.key.as_bytes());
        hasher.update(b".");
        hasher.update(signing_input.as_bytes());
        b64(&hasher.finalize())
    }

    /// A token for the ServiceAccount, valid from `now` for `seconds`.
    pub fn issue(&self, claims: &TokenClaims, audiences: &[String], now: i64) -> String {
        let header = b64(br#"{"alg":"RS256","kid":"serin-testbed"}"#);
        let payload = json!({
            "aud": audiences,
            "exp": claims.expires,
            "iat": now,
            "nbf": now,
            "iss": DEFAULT_AUDIENCE,
            "jti": format!("{:032x}", rand::random::<u128>()),
            "kubernetes.io": {
                "namespace": claims.namespace,
                "serviceaccount": {"name": claims.service_account, "uid": claims.uid},
            },
            "sub": format!("{SERVICE_ACCOUNT_PREFIX}{}:{}", claims.namespace, claims.service_account),
        });
        let signing_input = format!("{header}.{}", b64(payload.to_string().as_bytes()));
        let signature = self.sign(&signing_input);
        format!("{signing_input}.{signature}")
    }

    /// The payload of a token this issuer signed.
    fn payload(&self, token: &str) -> Option<Value> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        if self.sign(signing_input) != signature {
            return None;
        }
        let payload = signing_input.split('.').nth(1)?;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()?,
        )
        .ok()
    }

    /// A legacy token for a `kubernetes.io/service-account-token` Secret, as the token
    /// controller writes it: no expiry, valid while the Secret holds it.
    pub fn issue_legacy(&self, claims: &LegacyTokenClaims) -> String {
        let header = b64(br#"{"alg":"RS256","kid":"serin-testbed"}"#);
        let payload = json!({
            "iss": "kubernetes/serviceaccount",
            "kubernetes.io/serviceaccount/namespace": claims.namespace,
            "kubernetes.io/serviceaccount/secret.name": claims.secret,
            "kubernetes.io/serviceaccount/service-account.name": claims.service_account,
            "kubernetes.io/serviceaccount/service-account.uid": claims.uid,
            "sub": format!("{SERVICE_ACCOUNT_PREFIX}{}:{}", claims.namespace, claims.service_account),
        });
        let signing_input = format!("{header}.{}", b64(payload.to_string().as_bytes()));
        let signature = self.sign(&signing_input);
        format!("{signing_input}.{signature}")
    }

    /// The claims of a legacy token this issuer signed.
    pub fn verify_legacy(&self, token: &str) -> Option<LegacyTokenClaims> {
        let payload = self.payload(token)?;
        let claim = |k: &str| {
            payload
                .get(format!("kubernetes.io/serviceaccount/{k}"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(LegacyTokenClaims {
            namespace: claim("namespace")?,
            service_account: claim("service-account.name")?,
            uid: claim("service-account.uid")?,
            secret: claim("secret.name")?,
        })
    }

    /// The claims of a bound token this issuer signed, if it did and it has not expired at `now`.
    pub fn verify(&self, token: &str, now: i64) -> Option<TokenClaims> {
        let payload = self.payload(token)?;
        let claims = TokenClaims {
            namespace: payload.pointer("/kubernetes.io/namespace")?.as_str()?.to_owned(),
            service_account: payload
                .pointer("/kubernetes.io/serviceaccount/name")?
                .as_str()?
                .to_owned(),
            uid: payload
                .pointer("/kubernetes.io/serviceaccount/uid")?
                .as_str()?
                .to_owned(),
            expires: payload.get("exp")?.as_i64()?,
        };
        (claims.expires > now).then_some(claims)
    }
}
