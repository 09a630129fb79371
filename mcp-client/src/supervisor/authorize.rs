//! OAuth in the supervisor (SPEC §10): what a 401 or 403 on a request of a connected server
//! starts, and the redirect back from the authorization server, which connects the server.

use mag_common::config::{GrantType, ServerEntry};

use super::{Status, Supervisor};
use crate::error::{ConnectError, Error};
use crate::oauth::{CallbackError, CallbackQuery, Challenge};

impl Supervisor {
    /// The answer to a request of `server` that its server refused with `challenge`: a
    /// 403 `insufficient_scope` asks the user for the larger scope (the session stays); a
    /// 401 means the token is no longer taken (revoked, its refresh refused), so the session
    /// ends and a new authorization starts. Either way `/servers` shows the URL.
    pub async fn authorize(&self, server: &str, challenge: Challenge) -> Error {
        let Ok(slot) = self.slot(server) else {
            return Error::UnknownServer(server.to_string());
        };
        let oauth = &self.inner.ctx.oauth;
        let entry = slot.state().entry.clone();
        let cause = match &challenge {
            Challenge::InsufficientScope { .. } => oauth.answer(server, &entry, &challenge).await,
            Challenge::Unauthorized(_) if machine_access(&entry) => {
                // Client credentials need no user: a new session with a new token.
                self.disconnect_slot(&slot, "the server no longer takes mcp-client's token")
                    .await;
                oauth.forget_client(server);
                self.spawn_connect(server);
                ConnectError::Unauthorized(format!(
                    "server {server:?} no longer takes the token of mcp-client's client \
                     credentials; reconnecting with a new one"
                ))
            }
            Challenge::Unauthorized(_) => {
                let cause = oauth.answer(server, &entry, &challenge).await;
                self.disconnect_slot(&slot, "the server no longer takes mcp-client's token")
                    .await;
                slot.state().record_failure(&cause, false);
                if !cause.needs_user() {
                    // The authorization server is out of reach: try again later.
                    slot.state().wanted = true;
                    self.schedule_reconnect(&slot);
                }
                cause
            }
        };
        tracing::warn!(server, "the server asks for authorization: {cause}");
        Error::Authorization {
            server: server.to_string(),
            cause,
        }
    }

    /// Takes a redirect to `GET /oauth/callback`: exchanges the code of the authorization
    /// its `state` names, then connects the server (a server connected already, after a
    /// step-up, keeps its session). Answers the server's name and tool names.
    ///
    /// # Errors
    /// [`Error::OAuthCallback`] (also shown on the server's status when the authorization
    /// server refused or the token request failed), or the connect's error.
    pub async fn oauth_callback(
        &self,
        query: CallbackQuery,
    ) -> Result<(String, Vec<String>), Error> {
        let server = match self.inner.ctx.oauth.callback(query).await {
            Ok(server) => server,
            Err(e) => {
                if let CallbackError::Denied { server, .. } | CallbackError::Exchange { server, .. } =
                    &e
                    && let Ok(slot) = self.slot(server)
                {
                    let mut state = slot.state();
                    if state.connection.is_none() {
                        state.status = Status::Failed;
                    }
                    state.error = Some(e.to_string());
                    state.error_kind = Some("unauthorized");
                }
                return Err(Error::OAuthCallback(e));
            }
        };
        let Ok(slot) = self.slot(&server) else {
            // Removed while its authorization waited: its tokens go too.
            self.inner.ctx.oauth.forget(&server).await;
            return Err(Error::UnknownServer(server));
        };
        slot.state().wanted = true;
        let tools = self.connect_slot(&slot).await?;
        Ok((server, tools))
    }
}

/// Whether the server's `oauth` is `client_credentials` (no user in the loop).
fn machine_access(entry: &ServerEntry) -> bool {
    entry
        .oauth
        .as_ref()
        .is_some_and(|o| o.grant_type == GrantType::ClientCredentials)
}
