//! Why a session could not be opened: a failure, or a 401 / 403 that OAuth may answer
//! (SPEC §10).

use super::ConnectContext;
use crate::error::ConnectError;
use crate::oauth::Challenge;
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
        match self {
            Self::Failed(e) => e,
            Self::Challenged(challenge) => ctx.oauth.answer(name, entry, &challenge).await,
        }
    }
}
