//! The rmcp client handler of a server session.

// rmcp 3.9 marks logging, sampling and roots deprecated for protocol 2026-07-28; mcp-client
// speaks 2025-11-25 and older, where they are current (the handler relays them).
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::model::{
    ClientCapabilities, ClientConfig, ClientResult, CreateMessageRequest,
    CreateMessageRequestParams, CreateMessageResult, ElicitRequest, ElicitRequestParams,
    ElicitResult, ErrorData, Implementation, ListRootsRequest, ListRootsResult,
    LoggingMessageNotificationParam, RequestId, ResourceUpdatedNotificationParam, ServerRequest,
};
use rmcp::service::{InboundStreamOrigin, NotificationContext, RequestContext};
use rmcp::{ClientHandler, RoleClient};
use tokio::sync::Notify;

use super::REQUESTED_PROTOCOL_VERSION;
use super::relay::{Relay, ServerEvent};

/// The rmcp client handler: identifies mcp-client, hears the server's notifications and
/// passes its server-to-client requests to a gateway client ([`Relay`]).
///
/// It declares sampling, elicitation and roots, so that servers offer the tools that use
/// them; such a request is answered by a gateway client session with a request in flight on
/// the server, or declined with a clear error (MCP spec 2025-11-25, Client Features).
pub(super) struct Handler {
    pub(super) tools_changed: Arc<Notify>,
    pub(super) relay: Arc<Relay>,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        let capabilities = ClientCapabilities::builder()
            .enable_roots()
            .enable_sampling()
            .enable_elicitation()
            .build();
        ClientConfig::new(
            capabilities,
            Implementation::new("mcp-client", env!("CARGO_PKG_VERSION")),
        )
        .with_protocol_version(REQUESTED_PROTOCOL_VERSION)
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let server = self.relay.server().to_string();
        self.relay.publish(ServerEvent::PromptsChanged(server));
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let server = self.relay.server().to_string();
        self.relay.publish(ServerEvent::ResourcesChanged(server));
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let server = self.relay.server().to_string();
        self.relay.publish(ServerEvent::ResourceUpdated {
            server,
            uri: params.uri,
        });
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let server = self.relay.server().to_string();
        self.relay.publish(ServerEvent::Log { server, params });
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, ErrorData> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        match self
            .relay
            .ask_client(
                request,
                "sampling/createMessage",
                |c| c.sampling.is_some(),
                origin(&context),
            )
            .await?
        {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(unexpected_answer("sampling/createMessage")),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match self
            .relay
            .ask_client(
                request,
                "elicitation/create",
                |c| c.elicitation.is_some(),
                origin(&context),
            )
            .await?
        {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(unexpected_answer("elicitation/create")),
        }
    }

    async fn list_roots(
        &self,
        context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, ErrorData> {
        let request = ServerRequest::ListRootsRequest(ListRootsRequest::default());
        match self
            .relay
            .ask_client(
                request,
                "roots/list",
                |c| c.roots.is_some(),
                origin(&context),
            )
            .await?
        {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(unexpected_answer("roots/list")),
        }
    }
}

/// The id of the daemon's request a server-to-client request came with: the request on
/// whose response stream a streamable HTTP server sent it (rmcp's [`InboundStreamOrigin`]).
fn origin(context: &RequestContext<RoleClient>) -> Option<&RequestId> {
    match context.extensions.get::<InboundStreamOrigin>() {
        Some(InboundStreamOrigin::OutboundRequest(id)) => Some(id),
        _ => None,
    }
}

fn unexpected_answer(what: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("the client answered {what} with another kind of result"),
        None,
    )
}
