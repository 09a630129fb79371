//! Client credentials (RFC 6749 §4.4): machine access to a server, with no user.

use rmcp::transport::auth::{
    AuthClient, AuthorizationMetadata, ClientCredentialsConfig, OAuthTokenResponse,
    StoredCredentials,
};

use super::discovery::{acceptable_endpoint, capped_body, discover, plain_http};
use super::{AuthorizedClient, OAuth, auth_failure, client_secret, failed, unauthorized};
use crate::error::ConnectError;
use mag_common::config::OAuthSettings;

impl OAuth {
    /// A token by client credentials (RFC 6749 §4.4): with the secret (rmcp), or with a
    /// private key JWT (RFC 7523 §2.2, signed here: ES256 for an EC key, RS256 for RSA).
    pub(super) async fn client_credentials(
        &self,
        server: &str,
        settings: &OAuthSettings,
        url: &str,
    ) -> Result<AuthorizedClient, ConnectError> {
        let client_id = settings.client_id.clone().unwrap_or_default();
        let mut manager = self.manager(server, url).await?;
        let metadata = discover(&manager, url, None)
            .await
            .map_err(|e| auth_failure(server, "finding its authorization server", e))?;
        if let Some(key_file) = &settings.private_key_file {
            let token = private_key_jwt_grant(&client_id, key_file, &metadata, url)
                .await
                .map_err(|e| match e {
                    Grant::Unreachable(e) => {
                        ConnectError::Transport(failed(server, "the client credentials grant", e))
                    }
                    Grant::Refused(e) => unauthorized(server, "the client credentials grant", e),
                })?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .ok();
            let credentials =
                StoredCredentials::new(client_id.clone(), Some(token), Vec::new(), now);
            manager.set_metadata(metadata);
            // Where the manager's credential store (`self.manager`) reads it.
            self.tokens
                .update(server, url, |record| record.credentials = Some(credentials))
                .await
                .map_err(|e| unauthorized(server, "keeping its token", e))?;
            manager
                .configure_client_id(&client_id)
                .map_err(|e| unauthorized(server, "configuring its client", e))?;
            return Ok(AuthClient::new(self.http.clone(), manager));
        }
        let secret = client_secret(settings)?.unwrap_or_default();
        manager.set_metadata(metadata);
        let config = ClientCredentialsConfig::ClientSecret {
            client_id,
            client_secret: secret,
            scopes: Vec::new(),
            resource: Some(url.to_string()),
        };
        let granted = async {
            manager.validate_client_credentials_metadata(&config)?;
            manager.configure_client_credentials(&config)?;
            manager.exchange_client_credentials(&config).await
        };
        granted
            .await
            .map_err(|e| auth_failure(server, "the client credentials grant", e))?;
        Ok(AuthClient::new(self.http.clone(), manager))
    }
}

/// Why a private key JWT grant failed.
enum Grant {
    /// The token endpoint could not be reached (tried again later).
    Unreachable(String),
    /// The key, the endpoint or the answer is unusable, or the server refused.
    Refused(String),
}

/// The client credentials grant with a private key JWT (RFC 7523 §2.2): the assertion's
/// `iss` and `sub` are the client id, `aud` the authorization server's issuer, valid 5
/// minutes. The token endpoint must be https (or http to this machine); no redirect is
/// followed (it would post the assertion elsewhere); the answer is read up to
/// [`ANSWER_LIMIT`](super::discovery::ANSWER_LIMIT) within 30 s.
async fn private_key_jwt_grant(
    client_id: &str,
    key_file: &std::path::Path,
    metadata: &AuthorizationMetadata,
    resource: &str,
) -> Result<OAuthTokenResponse, Grant> {
    if !acceptable_endpoint(&metadata.token_endpoint) {
        return Err(Grant::Refused(format!(
            "the token endpoint {:?} is neither https nor http to this machine",
            metadata.token_endpoint
        )));
    }
    let pem = tokio::fs::read(key_file)
        .await
        .map_err(|e| Grant::Refused(format!("cannot read {}: {e}", key_file.display())))?;
    let (key, algorithm) = match jsonwebtoken::EncodingKey::from_ec_pem(&pem) {
        Ok(key) => (key, jsonwebtoken::Algorithm::ES256),
        Err(_) => (
            jsonwebtoken::EncodingKey::from_rsa_pem(&pem).map_err(|e| {
                Grant::Refused(format!(
                    "{} holds no EC or RSA private key: {e}",
                    key_file.display()
                ))
            })?,
            jsonwebtoken::Algorithm::RS256,
        ),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Grant::Refused(e.to_string()))?
        .as_secs();
    let audience = metadata
        .issuer
        .clone()
        .unwrap_or_else(|| metadata.token_endpoint.clone());
    let jti: u128 = rand::random();
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": audience,
        "iat": now, "exp": now + 300, "jti": format!("{jti:032x}"),
    });
    let assertion = jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, &key)
        .map_err(|e| Grant::Refused(format!("cannot sign the assertion: {e}")))?;
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
        ("resource", resource),
    ];
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let unreachable = |e: reqwest::Error| {
        Grant::Unreachable(format!(
            "the token endpoint: {}",
            mag_common::error_chain(&e)
        ))
    };
    let answer = plain_http()
        .map_err(unreachable)?
        .post(&metadata.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = answer.status();
    let body = capped_body(answer)
        .await
        .map_err(|e| Grant::Unreachable(format!("the token endpoint's answer: {e}")))?;
    if !status.is_success() {
        let shown: String = String::from_utf8_lossy(&body).chars().take(300).collect();
        return Err(Grant::Refused(format!(
            "the token endpoint answered {status}: {shown}"
        )));
    }
    serde_json::from_slice(&body)
        .map_err(|e| Grant::Refused(format!("the token endpoint's answer: {e}")))
}
