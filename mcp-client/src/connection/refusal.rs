//! Why a session could not be opened: a failure, or a 401 / 403 that OAuth may answer
//! (SPEC §10).

use super::ConnectContext;
use crate::error::ConnectError;
use crate::oauth::Challenge;
use crate::transport;
use mag_common::config::ServerEntry;

/// Why a session could not be opened: a failure, or a 401 / 403 that OAuth may answer.
pub(super) enum Refusal {
    Failed(ConnectError),
    Challenged(Challenge),
}

impl From<ConnectError> for Refusal {
    fn from(e: ConnectError) -> Self {
        Self::Failed(e)
    }
}

impl Refusal {
    /// The connect's error: a challenge starts the authorization it asks for (SPEC §10).
    pub(super) async fn answer(
        self,
        name: &str,
        entry: &ServerEntry,
        ctx: &ConnectContext,
    ) -> ConnectError {
        let challenge = match self {
            Self::Failed(e) => return e,
            Self::Challenged(challenge) => challenge,
        };
        let url = match transport::expanded_url(entry) {
            Ok(url) => url,
            Err(e) => return e,
        };
        // Discovery and registration talk to the authorization server: bounded as the
        // connect is.
        let started = async {
            match &challenge {
                Challenge::Unauthorized(_) => ctx.oauth.begin(name, entry, &url, &challenge).await,
                Challenge::InsufficientScope { scope, .. } => {
                    match ctx.oauth.step_up(name, scope.as_deref()).await {
                        Ok(url) => ConnectError::AuthorizationRequired(url),
                        Err(e) => e,
                    }
                }
            }
        };
        tokio::time::timeout(entry.timeout, started)
            .await
            .unwrap_or_else(|_| {
                ConnectError::Transport(format!(
                    "server {name:?} needs authorization, but its authorization server did not \
                     answer within {:?}",
                    entry.timeout
                ))
            })
    }
}
