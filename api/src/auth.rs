//! Who calls: bearer JWTs signed RS256, checked against a JWKS (a file, or what the
//! application fetched from a URL), as Amazon Cognito issues them: the signature by the key the
//! token's `kid` names, the issuer, the audience (`aud`, or `client_id` for Cognito access
//! tokens), the expiry, and the roles in `cognito:groups`.
//!
//! Roles: `viewer` reads; `operator` reads and acts on sagas and dead letters; `submitter`
//! submits bookings and reads the sagas. A missing or bad token is 401, the wrong role 403.
//!
//! [`LocalKey`] is the signing key that `como-saga up` makes for local use (and `como-saga
//! token` mints with): an RSA key in a file only its owner can read, and its JWKS.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Submitter,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Submitter];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Submitter => "submitter",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A caller whose token checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who: the token's `username` (Cognito) or `sub`.
    pub id: String,
    pub roles: BTreeSet<Role>,
    /// When the token expires (seconds since the epoch): a stream opened with it ends then.
    pub expires_at: u64,
}

impl Caller {
    /// Whether the caller holds one of `roles`.
    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|r| self.roles.contains(r))
    }
}

/// Why a token was refused (the answer is 401 in every case).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token names key {0:?}, which the key set does not hold")]
    UnknownKey(String),
}

/// The claims read from a token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    /// Cognito's ID tokens name the user here (its access tokens in `username`).
    #[serde(
        default,
        rename = "cognito:username",
        skip_serializing_if = "Option::is_none"
    )]
    cognito_username: Option<String>,
    #[serde(default, rename = "cognito:groups")]
    groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    iss: String,
    exp: u64,
    iat: u64,
}

/// Where tokens must come from.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub keys: JwkSet,
}

/// Checks bearer tokens.
pub struct Verifier {
    issuer: String,
    audience: String,
    keys: HashMap<String, DecodingKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// Fails naming the key that cannot be used (every key needs a `kid`; RSA keys only).
    pub fn new(config: &AuthConfig) -> Result<Verifier, String> {
        let mut keys = HashMap::new();
        for jwk in &config.keys.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or("a key in the key set has no `kid`")?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
            keys.insert(kid, key);
        }
        if keys.is_empty() {
            return Err("the key set holds no key".into());
        }
        Ok(Verifier {
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            keys,
        })
    }

    /// The caller an `Authorization` header value names.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let token = header
            .and_then(|h| {
                let (scheme, token) = h.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.verify(token)
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthError::Invalid(format!(
                "signed {:?}; only RS256 is accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("the token names no key (`kid`)".into()))?;
        let key = self.keys.get(&kid).ok_or(AuthError::UnknownKey(kid))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        // The audience is checked below: Cognito's access tokens carry it as `client_id`.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        let audience = claims.aud.as_deref().or(claims.client_id.as_deref());
        if audience != Some(self.audience.as_str()) {
            return Err(AuthError::Invalid(format!(
                "issued for {:?}, not for {:?}",
                audience.unwrap_or("no audience"),
                self.audience
            )));
        }
        Ok(Caller {
            id: claims
                .username
                .or(claims.cognito_username)
                .unwrap_or(claims.sub),
            expires_at: claims.exp,
            roles: claims
                .groups
                .iter()
                .filter_map(|g| Role::parse(g))
                .collect(),
        })
    }
}

/// The issuer and audience of the tokens [`LocalKey`] mints.
pub const LOCAL_ISSUER: &str = "como-saga-local";
pub const LOCAL_AUDIENCE: &str = "como-saga";

/// A signing key for local use: `up` makes one next to its database, `token` mints with it.
pub struct LocalKey {
    kid: String,
    encoding: EncodingKey,
    jwks: JwkSet,
}

impl LocalKey {
    /// The key in `path`, made (and written readable by its owner only) when there is none.
    pub fn load_or_create(path: &Path) -> Result<LocalKey, String> {
        let pem_text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let text = generate_pem()?;
                write_private(path, &text)?;
                text
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the signing key {}: {e}",
                    path.display()
                ));
            }
        };
        LocalKey::from_pem(&pem_text).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn from_pem(text: &str) -> Result<LocalKey, String> {
        let block = pem::parse(text).map_err(|e| format!("not a PEM key: {e}"))?;
        let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(block.contents())
            .map_err(|e| format!("not an RSA key: {e}"))?;
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        // The key's id: its modulus's first bytes, stable for the file.
        let kid = format!("local-{}", &n[..16.min(n.len())]);
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [{"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": n, "e": e}]
        }))
        .map_err(|e| format!("cannot describe the key: {e}"))?;
        let encoding =
            EncodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| format!("cannot sign: {e}"))?;
        Ok(LocalKey {
            kid,
            encoding,
            jwks,
        })
    }

    /// The public half, as the API's key set.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// What the API checks tokens of this key with.
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            issuer: LOCAL_ISSUER.into(),
            audience: LOCAL_AUDIENCE.into(),
            keys: self.jwks.clone(),
        }
    }

    /// A token for `who` with `roles`, valid for `ttl`.
    pub fn mint(&self, who: &str, roles: &[Role], ttl: Duration) -> Result<String, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let claims = Claims {
            sub: who.to_owned(),
            username: Some(who.to_owned()),
            cognito_username: None,
            groups: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            client_id: None,
            aud: Some(LOCAL_AUDIENCE.into()),
            iss: LOCAL_ISSUER.into(),
            exp: now + ttl.as_secs(),
            iat: now,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding).map_err(|e| e.to_string())
    }
}

fn generate_pem() -> Result<String, String> {
    use aws_lc_rs::encoding::AsDer;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|e| format!("cannot make a signing key: {e}"))?;
    let der = pair
        .as_der()
        .map_err(|e| format!("cannot encode the signing key: {e}"))?;
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref())))
}

/// Writes `text` to `path` readable and writable by its owner only, whatever the umask.
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create the signing key {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write the signing key {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LocalKey {
        LocalKey::from_pem(&generate_pem().unwrap()).unwrap()
    }

    #[test]
    fn a_minted_token_checks_out_with_its_roles() {
        let key = key();
        let verifier = Verifier::new(&key.auth_config()).unwrap();
        let token = key
            .mint("alice", &[Role::Operator], Duration::from_secs(60))
            .unwrap();
        let caller = verifier
            .verify_header(Some(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(caller.id, "alice");
        assert_eq!(caller.roles, BTreeSet::from([Role::Operator]));
    }

    #[test]
    fn another_key_another_issuer_and_garbage_are_refused() {
        let (mine, theirs) = (key(), key());
        let verifier = Verifier::new(&mine.auth_config()).unwrap();
        let token = theirs
            .mint("mallory", &[Role::Operator], Duration::from_secs(60))
            .unwrap();
        assert!(matches!(
            verifier.verify(&token),
            Err(AuthError::UnknownKey(_))
        ));
        let mut config = mine.auth_config();
        config.issuer = "someone-else".into();
        let strict = Verifier::new(&config).unwrap();
        let token = mine
            .mint("alice", &[Role::Viewer], Duration::from_secs(60))
            .unwrap();
        assert!(matches!(strict.verify(&token), Err(AuthError::Invalid(_))));
        assert_eq!(verifier.verify_header(None), Err(AuthError::Missing));
        assert_eq!(
            verifier.verify_header(Some("Basic abc")),
            Err(AuthError::Missing)
        );
        assert!(matches!(
            verifier.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
    }
}
