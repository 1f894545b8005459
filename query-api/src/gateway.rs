//! The seed's API-gateway rules (Kong's `jwt`, `rate-limiting` and `cors` plugins),
//! built into the service so a deployment without a gateway is not open:
//!
//! - **Bearer JWT** (HS256 secret, or an RSA / EC / Ed25519 public key): when configured,
//!   every `/api/…` request needs a valid token (401 otherwise); commands (POST, PUT,
//!   DELETE) need the `erp:write` scope (403 otherwise). Probes, metrics and the OpenAPI
//!   document stay open.
//! - **Rate limiting** per client (token subject when authenticated, else the peer
//!   address): a token bucket refilled at `per_minute`/60 per second; 429 with
//!   Retry-After when empty. The buckets are per instance (Kong's `policy: local`).
//! - **CORS** from a configured origin list (`*` allows any origin, without credentials).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::problem;

/// The scope a token needs to send commands.
pub const WRITE_SCOPE: &str = "erp:write";

/// How requests are let in. `Default`: no auth, no limit, no CORS headers.
#[derive(Clone, Default)]
pub struct Gateway {
    pub auth: Option<Arc<JwtAuth>>,
    pub limiter: Option<Arc<RateLimiter>>,
    /// Allowed browser origins; empty: no CORS headers (same-origin only).
    pub cors_origins: Vec<String>,
}

/// Verifies bearer tokens.
pub struct JwtAuth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("JWT public key is not an RSA, EC or Ed25519 PEM key: {0}")]
    PublicKey(String),
    #[error("JWT HS256 secret must be at least 32 bytes")]
    ShortSecret,
    #[error("CORS origin {0:?} is not `*` or an http(s) origin")]
    Origin(String),
}

impl JwtAuth {
    /// Tokens signed with a shared secret (HS256).
    pub fn hs256(secret: &[u8]) -> Result<Self, GatewayError> {
        if secret.len() < 32 {
            return Err(GatewayError::ShortSecret);
        }
        Ok(Self {
            key: DecodingKey::from_secret(secret),
            validation: Validation::new(Algorithm::HS256),
        })
    }

    /// Tokens signed by the holder of a private key (RS256, ES256 or EdDSA).
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, GatewayError> {
        let (key, alg) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (k, Algorithm::RS256)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            (k, Algorithm::ES256)
        } else {
            let k = DecodingKey::from_ed_pem(pem)
                .map_err(|e| GatewayError::PublicKey(e.to_string()))?;
            (k, Algorithm::EdDSA)
        };
        Ok(Self {
            key,
            validation: Validation::new(alg),
        })
    }

    /// Also require this issuer (`iss`) and audience (`aud`).
    pub fn expect(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        if let Some(i) = issuer {
            self.validation.set_issuer(&[i]);
        }
        match audience {
            Some(a) => self.validation.set_audience(&[a]),
            None => self.validation.validate_aud = false,
        }
        self
    }

    /// Whether `token` may read (or, with `writes`, send commands); its subject.
    pub fn check(&self, token: &str, writes: bool) -> Result<Option<String>, Denied> {
        let claims = self
            .verify(token)
            .map_err(|e| Denied::Unauthenticated(format!("invalid token: {e}")))?;
        if writes && !claims.has_scope(WRITE_SCOPE) {
            return Err(Denied::Forbidden(format!(
                "commands need the {WRITE_SCOPE} scope"
            )));
        }
        Ok(claims.sub)
    }

    fn verify(&self, token: &str) -> Result<Claims, String> {
        jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map(|t| t.claims)
            .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Claims {
    sub: Option<String>,
    /// OAuth 2 style: space-separated scopes.
    #[serde(default)]
    scope: Option<String>,
    /// Azure / Okta style: a list.
    #[serde(default)]
    scp: Option<Vec<String>>,
}

impl Claims {
    fn has_scope(&self, wanted: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|x| x == wanted))
            || self
                .scp
                .as_ref()
                .is_some_and(|s| s.iter().any(|x| x == wanted))
    }
}

/// Why a request is refused.
#[derive(Debug)]
pub enum Denied {
    /// No valid token (401 / UNAUTHENTICATED).
    Unauthenticated(String),
    /// Valid token without the scope (403 / PERMISSION_DENIED).
    Forbidden(String),
}

/// Who is calling, once the token was verified.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

fn open_path(path: &str) -> bool {
    !path.starts_with("/api/")
}

fn unauthorized(detail: String) -> Response {
    let mut r = problem(StatusCode::UNAUTHORIZED, detail);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"erp\""),
    );
    r
}

pub(crate) async fn authenticate(
    State(auth): State<Arc<JwtAuth>>,
    mut req: Request,
    next: Next,
) -> Response {
    if open_path(req.uri().path()) || req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(token) = token else {
        return unauthorized("a bearer token is required (Authorization: Bearer <JWT>)".into());
    };
    let claims = match auth.verify(token) {
        Ok(c) => c,
        Err(e) => return unauthorized(format!("invalid token: {e}")),
    };
    let writes = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    );
    if writes && !claims.has_scope(WRITE_SCOPE) {
        return problem(
            StatusCode::FORBIDDEN,
            format!("commands need the {WRITE_SCOPE} scope"),
        );
    }
    let subject = claims.sub.unwrap_or_else(|| "anonymous".into());
    req.extensions_mut().insert(Principal(subject));
    next.run(req).await
}

/// Token buckets per client.
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keeps the map bounded: idle clients' buckets are full and can be forgotten.
const MAX_CLIENTS: usize = 10_000;

impl RateLimiter {
    pub fn per_minute(per_minute: u32) -> Option<Self> {
        (per_minute > 0).then(|| Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one token: `Ok(remaining)` or `Err(wait)` until the next one.
    fn take(&self, client: &str, now: Instant) -> Result<u32, Duration> {
        let capacity = f64::from(self.per_minute);
        let rate = capacity / 60.0;
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client) {
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < capacity);
        }
        let b = buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(b.tokens as u32)
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

pub(crate) async fn limit_rate(
    State(limiter): State<Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    if open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let client = match req.extensions().get::<Principal>() {
        Some(p) => format!("sub:{}", p.0),
        None => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".into(), |c| format!("ip:{}", c.0.ip())),
    };
    let limit = HeaderValue::from(limiter.per_minute);
    match limiter.take(&client, Instant::now()) {
        Ok(remaining) => {
            let mut r = next.run(req).await;
            let h = r.headers_mut();
            h.insert(LIMIT, limit);
            h.insert(REMAINING, HeaderValue::from(remaining));
            r
        }
        Err(wait) => {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut r = problem(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit of {} requests per minute exceeded; retry in {secs} s",
                    limiter.per_minute
                ),
            );
            let h = r.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            h.insert(LIMIT, limit);
            h.insert(REMAINING, HeaderValue::from(0));
            r
        }
    }
}

/// Kong's header names, so clients written against the seed's gateway keep working.
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-minute");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-minute");

/// Checks origins early, so a typo fails at start-up rather than silently.
pub fn check_origins(origins: &[String]) -> Result<(), GatewayError> {
    for o in origins {
        let ok = o == "*"
            || ((o.starts_with("http://") || o.starts_with("https://"))
                && HeaderValue::from_str(o).is_ok()
                && !o.ends_with('/'));
        if !ok {
            return Err(GatewayError::Origin(o.clone()));
        }
    }
    Ok(())
}

/// The seed's CORS rules (methods, headers, max age 3600) for the configured origins.
pub(crate) fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::ACCEPT,
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("prefer"),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            header::ETAG,
            HeaderName::from_static("x-correlation-id"),
            HeaderName::from_static("preference-applied"),
        ])
        .max_age(Duration::from_secs(3600));
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(list).allow_credentials(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_configured_rate_and_says_how_long_to_wait() {
        let limiter = RateLimiter::per_minute(60).unwrap();
        let t0 = Instant::now();
        for i in 0..60 {
            assert_eq!(limiter.take("a", t0), Ok(59 - i));
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        // Other clients have their own bucket.
        assert_eq!(limiter.take("b", t0), Ok(59));
        // One token per second comes back.
        assert_eq!(limiter.take("a", t0 + Duration::from_secs(1)), Ok(0));
        assert!(RateLimiter::per_minute(0).is_none());
    }

    #[test]
    fn origins_are_checked() {
        assert!(check_origins(&["https://app.example.com".into(), "*".into()]).is_ok());
        assert!(check_origins(&["app.example.com".into()]).is_err());
        assert!(check_origins(&["https://app.example.com/".into()]).is_err());
    }

    #[test]
    fn short_hs256_secrets_are_refused() {
        assert!(matches!(
            JwtAuth::hs256(b"short"),
            Err(GatewayError::ShortSecret)
        ));
        assert!(JwtAuth::public_key_pem(b"not a key").is_err());
    }
}
