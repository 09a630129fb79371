//! Who is calling (SPEC §9): MAG's JWT users besides the operator's `MAG_API_TOKEN`.
//!
//! When `JWT_SECRET_KEY` is set, a bearer credential that is not the API token is read as
//! one of MAG's access tokens (`mag/app/auth`: HS256 by default, claims `sub` = the user
//! id, `type` = `"access"`, `role`, `exp`): a bad signature, an expired token or a refresh
//! token is refused (401 at the HTTP edge); a valid one puts its [`Caller`] on the request.
//! A request without one (the API token, or no credential configured) is MAG's default
//! user, [`DEFAULT_USER`].

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::settings::Secret;

pub use crate::store::DEFAULT_USER;

/// `JWT_SECRET_KEY` and `JWT_ALGORITHM` (the key shows redacted in `Debug`, as every
/// [`Secret`]).
#[derive(Clone, Debug)]
pub struct JwtSettings {
    key: Secret,
    algorithm: Algorithm,
}

impl JwtSettings {
    /// The key and MAG's algorithm name (`HS256`, `HS384`, `HS512`).
    ///
    /// # Errors
    /// Any other algorithm: MAG signs with a shared secret.
    pub fn new(key: Secret, algorithm: &str) -> Result<Self, String> {
        let algorithm = match algorithm.trim().to_ascii_uppercase().as_str() {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            other => {
                return Err(format!(
                    "{other:?} is not a shared-secret algorithm (HS256, HS384 or HS512)"
                ));
            }
        };
        Ok(Self { key, algorithm })
    }
}

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// MAG's user id: the token's `sub`, or [`DEFAULT_USER`].
    pub user_id: String,
    /// `role: admin`: sees and deletes every user's conversations.
    pub admin: bool,
    /// Whether a JWT named the user (then a `user_id` in a body is overridden, and the
    /// conversation endpoints show only the user's own).
    pub from_token: bool,
}

impl Caller {
    /// The caller of a request that carried no JWT.
    pub fn default_user() -> Self {
        Self {
            user_id: DEFAULT_USER.to_owned(),
            admin: false,
            from_token: false,
        }
    }

    /// Whether this caller may see or change a conversation of `owner` (MAG's rule).
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.user_id == owner
    }

    /// This caller on mag-server's own `/api/mcp` paths: a JWT's user as they are; a
    /// request without a JWT acts for the operator there and reaches every owner's
    /// conversations (MAG's `/api/chat` paths take the caller as it is).
    pub fn on_operator_paths(self) -> Self {
        Self {
            admin: self.admin || !self.from_token,
            ..self
        }
    }
}

/// The claims of MAG's tokens that matter here.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    role: Option<String>,
}

/// MAG's access tokens, checked at the HTTP edge.
pub struct JwtScheme {
    key: DecodingKey,
    validation: Validation,
}

impl JwtScheme {
    /// A scheme over `settings`; `exp` is required and checked with no leeway.
    pub fn new(settings: &JwtSettings) -> Arc<Self> {
        let mut validation = Validation::new(settings.algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Arc::new(Self {
            key: DecodingKey::from_secret(settings.key.expose().as_bytes()),
            validation,
        })
    }

    /// The caller `token` names, when it is a valid access token.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .ok()?
            .claims;
        (claims.kind == "access" && !claims.sub.is_empty()).then(|| Caller {
            user_id: claims.sub,
            admin: claims.role.as_deref() == Some("admin"),
            from_token: true,
        })
    }
}

impl mag_common::http_edge::BearerScheme for JwtScheme {
    fn admit(&self, credential: &str, extensions: &mut axum::http::Extensions) -> bool {
        match self.verify(credential) {
            Some(caller) => {
                extensions.insert(caller);
                true
            }
            None => false,
        }
    }
}
