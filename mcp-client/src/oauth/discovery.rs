//! Finding a server's authorization server, and what the code here accepts from one.

use std::sync::OnceLock;
use std::time::Duration;

use rmcp::transport::auth::{AuthError, AuthorizationManager, AuthorizationMetadata};

/// Whether a URL of an authorization server may be handed to a browser or posted to:
/// https, or http to a loopback host (a URL from remote metadata could be `javascript:`).
pub(super) fn acceptable_endpoint(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(url::Host::Domain(name)) => {
                name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost")
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// The most of an authorization server's answer read by the code here (rmcp bounds its own).
pub(super) const ANSWER_LIMIT: usize = 1024 * 1024;

/// The HTTP client of the requests to an authorization server made here rather than by
/// rmcp (the 2025-03-26 metadata fallback, the private-key token request): 30 s a request,
/// no redirects; built once.
///
/// # Errors
/// reqwest cannot build a client (no TLS provider installed).
pub(super) fn plain_http() -> Result<reqwest::Client, reqwest::Error> {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    if let Some(client) = CLIENT.get() {
        return Ok(client.clone());
    }
    let built = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    Ok(CLIENT.get_or_init(|| built).clone())
}

/// An answer's body, at most [`ANSWER_LIMIT`] bytes.
pub(super) async fn capped_body(answer: reqwest::Response) -> Result<Vec<u8>, String> {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut chunks = answer.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| mag_common::error_chain(&e))?;
        if body.len() + chunk.len() > ANSWER_LIMIT {
            return Err(format!("the answer is over {ANSWER_LIMIT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The authorization server's metadata for `url`, from the challenge's pointer or the
/// well-known paths (rmcp). A 2025-03-26 server whose metadata sits at its origin's root
/// under another issuer (`…/oauth`) is taken as it is: that revision had no issuer rule.
pub(super) async fn discover(
    manager: &AuthorizationManager,
    url: &str,
    challenge: Option<&str>,
) -> Result<AuthorizationMetadata, AuthError> {
    let metadata = resolve(manager, url, challenge).await?;
    // The code, the client secret and the tokens go to these: never in clear text to
    // another machine, never to a `javascript:` URL handed to a browser.
    let endpoints = [
        Some(&metadata.authorization_endpoint),
        Some(&metadata.token_endpoint),
        metadata.registration_endpoint.as_ref(),
    ];
    for endpoint in endpoints.into_iter().flatten() {
        if !acceptable_endpoint(endpoint) {
            return Err(AuthError::MetadataError(format!(
                "the authorization server's endpoint {endpoint:?} is neither https nor http \
                 to this machine"
            )));
        }
    }
    Ok(metadata)
}

async fn resolve(
    manager: &AuthorizationManager,
    url: &str,
    challenge: Option<&str>,
) -> Result<AuthorizationMetadata, AuthError> {
    match manager.resolve_metadata_from_challenge(challenge).await {
        Ok(resolution) => Ok(resolution.metadata),
        Err(AuthError::AuthorizationServerMismatch { .. }) => {
            let mut root = url::Url::parse(url)?;
            root.set_path("/.well-known/oauth-authorization-server");
            root.set_query(None);
            let answer = plain_http()?.get(root).send().await?.error_for_status()?;
            let body = capped_body(answer)
                .await
                .map_err(AuthError::MetadataError)?;
            let metadata = serde_json::from_slice::<AuthorizationMetadata>(&body)
                .map_err(|e| AuthError::MetadataError(e.to_string()))?;
            tracing::info!(
                issuer = ?metadata.issuer,
                "taking authorization server metadata of the 2025-03-26 revision"
            );
            Ok(metadata)
        }
        Err(e) => Err(e),
    }
}
