//! CONNECT authentication and per-request authorization (BROKER.md §2.2,
//! §2.3).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::{AuthMode, JwtConfig};

/// What a request needs on its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    /// Read and write (`#*`), e.g. RPC worker registration.
    All,
}

/// One `scheme://pattern#access` grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pattern: String,
    read: bool,
    write: bool,
}

/// What an authenticated session may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Permissions {
    /// Anonymous broker: everything.
    Full,
    /// The grants of the token.
    Grants(Vec<Grant>),
}

impl Permissions {
    /// True if `route` (a concrete route or a pattern) may be used with `access`.
    pub(crate) fn allows(&self, route: &str, access: Access) -> bool {
        match self {
            Permissions::Full => true,
            Permissions::Grants(grants) => grants.iter().any(|g| {
                let ok = match access {
                    Access::Read => g.read,
                    Access::Write => g.write,
                    Access::All => g.read && g.write,
                };
                ok && fitz_wire::route::matches(&g.pattern, route)
            }),
        }
    }
}

/// An authenticated session's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// Route family: isolates all state and matching.
    pub(crate) family: u32,
    pub(crate) permissions: Permissions,
}

/// Why a CONNECT was refused (the broker closes without a frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejected(pub(crate) String);

/// Validates a CONNECT token.
pub(crate) fn authenticate(mode: &AuthMode, token: &[u8]) -> Result<Principal, Rejected> {
    match mode {
        AuthMode::Anonymous => Ok(Principal { family: 1, permissions: Permissions::Full }),
        AuthMode::Jwt(cfg) => validate_jwt(cfg, token),
    }
}

fn validate_jwt(cfg: &JwtConfig, token: &[u8]) -> Result<Principal, Rejected> {
    let token = std::str::from_utf8(token).map_err(|_| Rejected("token is not UTF-8".into()))?;
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.validate_nbf = true;
    v.set_audience(&cfg.audiences);
    // With no issuer allowlist (the HMAC dev setup) `iss` must be "".
    v.set_issuer(&[""]);
    v.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(cfg.secret.as_bytes()), &v)
        .map_err(|e| Rejected(format!("invalid token: {e}")))?;
    let claims = data.claims;
    if !claims.get("sub").is_some_and(Value::is_string) {
        return Err(Rejected("sub claim missing".into()));
    }
    let tenant = claims
        .get(&cfg.tenant_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| Rejected(format!("{} claim missing", cfg.tenant_claim)))?;
    let family = cfg
        .families
        .iter()
        .find(|(id, _)| id == tenant)
        .map(|(_, f)| *f)
        .ok_or_else(|| Rejected(format!("identity {tenant} is not mapped to a route family")))?;
    let grants = permissions_of(&claims, &cfg.permissions_claim)?;
    Ok(Principal { family, permissions: Permissions::Grants(grants) })
}

/// The first present permission source wins (BROKER.md §2.2).
fn permissions_of(claims: &Value, configured: &str) -> Result<Vec<Grant>, Rejected> {
    let strings = |v: &Value| -> Option<Vec<String>> {
        match v {
            Value::Array(a) => a.iter().map(|s| s.as_str().map(str::to_owned)).collect(),
            Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
            _ => None,
        }
    };
    let source = [configured, "permissions", "roles", "scp", "scope"]
        .iter()
        .find_map(|k| claims.get(*k))
        .ok_or_else(|| Rejected("no permission source".into()))?;
    let list = strings(source).ok_or_else(|| Rejected("malformed permissions".into()))?;
    let grants: Vec<Grant> = list.iter().filter_map(|p| parse_grant(p)).collect();
    if grants.is_empty() {
        return Err(Rejected("no valid permission".into()));
    }
    Ok(grants)
}

/// `scheme://pattern#access` (access `read`, `write` or `*`; none = all),
/// or a coarse scope `queue.read` = `queue://**#read`.
fn parse_grant(p: &str) -> Option<Grant> {
    let (pattern, access) = match p.split_once('#') {
        Some((pat, acc)) => (pat.to_owned(), acc),
        None if p.contains("://") => (p.to_owned(), "*"),
        None => {
            let (scheme, acc) = p.split_once('.')?;
            (format!("{scheme}://**"), acc)
        }
    };
    let (read, write) = match access {
        "read" => (true, false),
        "write" => (false, true),
        "*" | "all" => (true, true),
        _ => return None,
    };
    pattern.contains("://").then_some(Grant { pattern, read, write })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        let p = Permissions::Grants(vec![parse_grant("queue://**#read").unwrap()]);
        assert!(p.allows("queue://a/b/c", Access::Read));
        assert!(!p.allows("queue://a/b/c", Access::Write));
        assert!(!p.allows("kv://a/b/c", Access::Read));
        let all = Permissions::Grants(vec![parse_grant("kv://**#*").unwrap()]);
        assert!(all.allows("kv://a/b/*", Access::All));
        assert_eq!(parse_grant("schedule.read").unwrap().pattern, "schedule://**");
    }
}
