//! HS256 test tokens shaped like the official suites' (BROKER.md §13):
//! `iss = ""`, `aud`, `sub`, `tid`, `iat`, `exp` and a `permissions` list.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

/// The seven `#*` permissions the official suites grant.
pub const ALL_PERMISSIONS: [&str; 7] =
    ["kv://**#*", "queue://**#*", "rpc://**#*", "notice://**#*", "lease://**#*", "stream://**#*", "schedule://**#*"];

/// Claims of a test token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// HMAC secret.
    pub secret: String,
    /// `aud`.
    pub audience: String,
    /// `tid` (and `sub`).
    pub tenant: String,
    /// `permissions`.
    pub permissions: Vec<String>,
    /// Seconds from now until `exp` (negative: already expired).
    pub expires_in: i64,
}

impl TokenSpec {
    /// A valid token for one hour with every permission (secret
    /// `dev-test-secret`, audience `fitz`, tenant `dev`).
    pub fn official() -> Self {
        Self {
            secret: "dev-test-secret".into(),
            audience: "fitz".into(),
            tenant: "dev".into(),
            permissions: ALL_PERMISSIONS.iter().map(|s| (*s).to_owned()).collect(),
            expires_in: 3600,
        }
    }

    /// Same claims with another permission list.
    pub fn with_permissions(mut self, permissions: &[&str]) -> Self {
        self.permissions = permissions.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Same claims, expired a minute ago.
    pub fn expired(mut self) -> Self {
        self.expires_in = -60;
        self
    }

    /// Signs the token.
    pub fn sign(&self) -> String {
        self.sign_with(&self.secret)
    }

    /// Signs with another secret (an invalid signature for the broker).
    pub fn sign_with(&self, secret: &str) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let claims = json!({
            "iss": "",
            "aud": self.audience,
            "sub": self.tenant,
            "tid": self.tenant,
            "iat": now,
            "exp": now + self.expires_in,
            "permissions": self.permissions,
        });
        jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap_or_default()
    }
}
