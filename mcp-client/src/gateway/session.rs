//! One MCP client session of the gateway: an rmcp [`ServerHandler`] that answers from the
//! supervised servers, for one server ([`Scope::One`], transparent) or for all of them
//! ([`Scope::All`], the aggregate with public names).

// rmcp 3.9 marks logging and `resources/subscribe` deprecated for protocol 2026-07-28; the
// gateway serves 2025-11-25 and older, where they are current.
#![allow(deprecated)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
    CompleteRequest, CompleteRequestParams, CompleteResult, ContentBlock, ErrorCode, ErrorData,
    GetPromptRequest, GetPromptRequestParams, GetPromptResponse, Implementation,
    InitializeRequestParams, InitializeResult, ListPromptsRequest, ListPromptsResult,
    ListResourceTemplatesRequest, ListResourceTemplatesResult, ListResourcesRequest,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, PromptsCapability,
    ProtocolVersion, ReadResourceRequest, ReadResourceRequestParams, ReadResourceResponse,
    Reference, ResourcesCapability, ServerCapabilities, ServerResult, SetLevelRequestParams,
    SubscribeRequestParams, ToolsCapability, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{RoleServer, ServerHandler};
use tokio_util::sync::CancellationToken;

use super::names::Catalog;
use super::pages;
use super::{Shared, notify, upstream};
use crate::connection::{ArgumentError, CallError, Caller, Connection};
use crate::error::Error;
use mag_common::config::ServerEntry;
use mag_common::secrets::redact;

/// Which servers a session serves.
#[derive(Clone, Debug)]
pub enum Scope {
    /// One server, under its own names (`/servers/NAME/mcp`, or `x-mcp-server-id`).
    One(String),
    /// Every connected server, under public names (`/mcp`).
    All,
}

/// The protocol versions the gateway speaks (SPEC §8: 2025-11-25, negotiating down).
const VERSIONS: [ProtocolVersion; 4] = [
    ProtocolVersion::V_2024_11_05,
    ProtocolVersion::V_2025_03_26,
    ProtocolVersion::V_2025_06_18,
    ProtocolVersion::V_2025_11_25,
];

/// One client session (see the module docs).
pub struct Session {
    shared: Arc<Shared>,
    scope: Scope,
    /// The aggregate's prompt names, from this session's last `prompts/list`.
    prompts: Mutex<Arc<Catalog>>,
    /// The aggregate's resource routes (URI or URI template → server), from this session's
    /// last listing.
    resources: Mutex<HashMap<String, String>>,
    /// The URIs it subscribed to and the log level it set.
    pub(super) wants: Arc<notify::Wants>,
    /// Ends the session's notification task when the session ends.
    stop: CancellationToken,
    /// The session's key in the gateway's [`upstream::Upstream`].
    key: u64,
}

impl Drop for Session {
    /// Ends the notification task; what the session asked of the servers and no other
    /// session asks is taken back (in tasks: a session may end outside a request).
    fn drop(&mut self) {
        self.stop.cancel();
        let servers = self.shared.upstream.leave(self.key);
        if !servers.is_empty()
            && !self.shared.stop.is_cancelled()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            upstream::resync(&self.shared.supervisor, &self.shared.upstream, servers);
        }
    }
}

impl Session {
    pub(super) fn new(shared: Arc<Shared>, scope: Scope) -> Self {
        let wants: Arc<notify::Wants> = Arc::default();
        let key = shared.upstream.join(scope.clone(), wants.clone());
        Self {
            shared,
            scope,
            prompts: Mutex::default(),
            resources: Mutex::default(),
            wants,
            stop: CancellationToken::new(),
            key,
        }
    }

    /// The session with `server`, as an MCP error when there is none.
    fn server(&self, server: &str) -> Result<(Arc<Connection>, ServerEntry), ErrorData> {
        self.shared.supervisor.session(server).map_err(rpc_error)
    }

    fn subscribed(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<(String, String)>> {
        self.wants
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Every live session, or the one of this session's scope.
    fn servers(&self) -> Vec<(String, Arc<Connection>, ServerEntry)> {
        match &self.scope {
            Scope::All => self.shared.supervisor.sessions(),
            Scope::One(server) => match self.shared.supervisor.session(server) {
                Ok((connection, entry)) => vec![(server.clone(), connection, entry)],
                Err(_) => Vec::new(),
            },
        }
    }

    /// Sends `request` to `server` on behalf of the client of `context`.
    async fn forward(
        &self,
        server: &str,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, ErrorData> {
        let (connection, _) = self.server(server)?;
        let caller = Caller {
            peer: context.peer.clone(),
            request_id: context.id.clone(),
            progress_token: context.meta.get_progress_token(),
        };
        match connection.forward(request, &caller, &context.ct).await {
            Ok(result) => Ok(result),
            Err(e) => Err(self.upstream_error(server, e).await),
        }
    }

    /// The MCP error for a request to `server` that failed: a challenge (401/403) starts or
    /// steps up an authorization, which the error names; else [`call_error`].
    async fn upstream_error(&self, server: &str, e: CallError) -> ErrorData {
        match e {
            CallError::Challenged(challenge) => {
                rpc_error(self.shared.supervisor.authorize(server, challenge).await)
            }
            e => call_error(server, e),
        }
    }

    /// Asks `server` for what the client sessions ask of it now ([`upstream::Upstream`]).
    async fn sync(&self, server: &str) -> Result<(), ErrorData> {
        let (connection, _) = self.server(server)?;
        match self.shared.upstream.sync(server, &connection).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.upstream_error(server, e).await),
        }
    }

    /// Every page of a list request to one server.
    async fn list_all<T>(
        &self,
        server: &str,
        context: &RequestContext<RoleServer>,
        request: fn(PaginatedRequestParams) -> ClientRequest,
        take: fn(ServerResult) -> Option<Page<T>>,
    ) -> Result<Vec<T>, ErrorData> {
        let mut items = Vec::new();
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let params = PaginatedRequestParams::default().with_cursor(cursor.take());
            let answer = self.forward(server, request(params), context).await?;
            let (page, next) = take(answer).ok_or_else(|| unexpected(server))?;
            items.extend(page);
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(items),
            }
        }
        Err(ErrorData::internal_error(
            format!("server {server:?} answered more than {MAX_PAGES} pages"),
            None,
        ))
    }

    /// Every page of a list of every aggregated server offering it (`offered`), in server
    /// order, each item with its server.
    async fn gather<T>(
        &self,
        context: &RequestContext<RoleServer>,
        offered: fn(&ServerCapabilities) -> bool,
        request: fn(PaginatedRequestParams) -> ClientRequest,
        take: fn(ServerResult) -> Option<Page<T>>,
    ) -> Result<Vec<(String, T)>, ErrorData> {
        let mut listed = Vec::new();
        for (server, _, _) in self.offering(offered) {
            let items = self.list_all(&server, context, request, take).await?;
            listed.extend(items.into_iter().map(|item| (server.clone(), item)));
        }
        Ok(listed)
    }

    /// Keeps, of items listed by several servers under the same `key` (a resource URI or
    /// template), the first server's, and records where each key goes.
    fn route_first<T>(&self, listed: Vec<(String, T)>, key: fn(&T) -> &String) -> Vec<T> {
        let mut routes = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        let mut kept = Vec::new();
        for (server, item) in listed {
            if seen.insert(key(&item).clone()) {
                routes.insert(key(&item).clone(), server);
                kept.push(item);
            }
        }
        kept
    }

    /// Sends `request` to `server` and takes the kind of result `take` accepts.
    async fn forward_as<R>(
        &self,
        server: &str,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
        take: fn(ServerResult) -> Option<R>,
    ) -> Result<R, ErrorData> {
        let answer = self.forward(server, request, context).await?;
        take(answer).ok_or_else(|| unexpected(server))
    }

    /// The aggregate's servers offering a capability.
    fn offering(
        &self,
        has: fn(&ServerCapabilities) -> bool,
    ) -> Vec<(String, Arc<Connection>, ServerEntry)> {
        self.servers()
            .into_iter()
            .filter(|(_, connection, _)| {
                connection
                    .server_info()
                    .is_some_and(|info| has(&info.capabilities))
            })
            .collect()
    }

    /// Where a resource URI (or template) goes in the aggregate: the server that listed it
    /// in this session's last listing, else (listing again) the first server in name order
    /// that lists it.
    async fn route_resource(
        &self,
        uri: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<String, ErrorData> {
        if let Scope::One(server) = &self.scope {
            return Ok(server.clone());
        }
        if let Some(server) = self.resources_route(uri) {
            return Ok(server);
        }
        self.list_resources(None, context.clone()).await?;
        self.list_resource_templates(None, context.clone()).await?;
        self.resources_route(uri).ok_or_else(|| {
            ErrorData::new(
                ErrorCode::RESOURCE_NOT_FOUND,
                format!("no connected server lists the resource {uri:?}"),
                None,
            )
        })
    }

    fn resources_route(&self, uri: &str) -> Option<String> {
        let routes = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        routes.get(uri).cloned()
    }

    /// Resolves an aggregate prompt name, listing the prompts again once if it is unknown.
    async fn route_prompt(
        &self,
        public: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<(String, String), ErrorData> {
        if let Scope::One(server) = &self.scope {
            return Ok((server.clone(), public.to_string()));
        }
        let resolve = |catalog: &Catalog| {
            catalog
                .resolve(public)
                .map(|(server, name)| (server.to_string(), name.to_string()))
        };
        let catalog = self
            .prompts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(found) = resolve(&catalog) {
            return Ok(found);
        }
        self.list_prompts(None, context.clone()).await?;
        let catalog = self
            .prompts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        resolve(&catalog).ok_or_else(|| {
            ErrorData::invalid_params(
                format!("no connected server has the prompt {public:?}"),
                None,
            )
        })
    }
}

/// The cursor a list request carries, if any.
fn cursor(request: &Option<PaginatedRequestParams>) -> Option<&str> {
    request.as_ref().and_then(|r| r.cursor.as_deref())
}

/// One page of a list: its items and the cursor of the next page.
type Page<T> = (Vec<T>, Option<String>);

/// The most pages one list request to a server may answer.
const MAX_PAGES: usize = 1000;

fn unexpected(server: &str) -> ErrorData {
    ErrorData::internal_error(
        format!("server {server:?} answered with another kind of result"),
        None,
    )
}

/// An MCP error for a supervisor error (unknown server, not connected, …), redacted.
fn rpc_error(e: Error) -> ErrorData {
    let code = match e {
        Error::UnknownServer(_) | Error::UnknownTool { .. } | Error::ToolNotAllowed { .. } => {
            ErrorCode::INVALID_PARAMS
        }
        _ => ErrorCode::INTERNAL_ERROR,
    };
    // An authorization URL is not handed to MCP clients: whoever approves it decides whose
    // account every client's calls use (the operator reads it in `/servers`).
    ErrorData::new(code, redact(&e.to_string()), None)
}

/// An MCP error for a failure after a request was sent: the server's own error as it sent
/// it, or what happened (timeout, session ended), naming the server.
fn call_error(server: &str, e: CallError) -> ErrorData {
    match e {
        CallError::Rpc(error) => error,
        other => ErrorData::internal_error(redact(&format!("server {server:?}: {other}")), None),
    }
}

/// The union of the servers' capabilities, for the aggregate: tools always (servers may
/// connect later), each list with `listChanged`, since the gateway says when they change.
fn union(infos: &[ServerCapabilities]) -> ServerCapabilities {
    let mut capabilities = ServerCapabilities::default();
    let mut tools = ToolsCapability::default();
    tools.list_changed = Some(true);
    capabilities.tools = Some(tools);
    if infos.iter().any(|c| c.prompts.is_some()) {
        let mut prompts = PromptsCapability::default();
        prompts.list_changed = Some(true);
        capabilities.prompts = Some(prompts);
    }
    if infos.iter().any(|c| c.resources.is_some()) {
        let subscribe = infos
            .iter()
            .any(|c| c.resources.as_ref().and_then(|r| r.subscribe) == Some(true));
        let mut resources = ResourcesCapability::default();
        resources.subscribe = subscribe.then_some(true);
        resources.list_changed = Some(true);
        capabilities.resources = Some(resources);
    }
    if infos.iter().any(|c| c.logging.is_some()) {
        capabilities.logging = Some(Default::default());
    }
    if infos.iter().any(|c| c.completions.is_some()) {
        capabilities.completions = Some(Default::default());
    }
    capabilities
}

impl ServerHandler for Session {
    fn get_info(&self) -> InitializeResult {
        match &self.scope {
            Scope::One(server) => {
                let info = self
                    .shared
                    .supervisor
                    .session(server)
                    .ok()
                    .and_then(|(connection, _)| connection.server_info());
                let Some(info) = info else {
                    return InitializeResult::new(ServerCapabilities::default())
                        .with_server_info(Implementation::new(server.clone(), ""));
                };
                let mut capabilities = info.capabilities.clone();
                // Tool filters change by reload: say so.
                if let Some(tools) = capabilities.tools.as_mut() {
                    tools.list_changed = Some(true);
                }
                let mut result = InitializeResult::new(capabilities).with_server_info(
                    info.server_info
                        .clone()
                        .unwrap_or_else(|| Implementation::new(server.clone(), "")),
                );
                result.instructions = info.instructions.clone();
                result
            }
            Scope::All => {
                let capabilities: Vec<ServerCapabilities> = self
                    .shared
                    .supervisor
                    .sessions()
                    .iter()
                    .filter_map(|(_, connection, _)| connection.server_info())
                    .map(|info| info.capabilities.clone())
                    .collect();
                InitializeResult::new(union(&capabilities))
                    .with_server_info(Implementation::new("mcp-client", env!("CARGO_PKG_VERSION")))
                    .with_instructions(format!(
                        "The tools and prompts of every server mcp-client keeps connected, \
                         named SERVER{}NAME.",
                        self.shared.separator
                    ))
            }
        }
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(&VERSIONS)
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if let Scope::One(server) = &self.scope {
            // As if connected directly: a configured server that is not connected yet is
            // connected now.
            if self.shared.supervisor.session(server).is_err() {
                self.shared
                    .supervisor
                    .connect(server)
                    .await
                    .map_err(rpc_error)?;
            }
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        notify::spawn(
            &self.shared,
            self.scope.clone(),
            context.peer,
            self.wants.clone(),
            self.stop.clone(),
        );
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools = match &self.scope {
            Scope::One(_) => {
                let mut listed = Vec::new();
                for (_, connection, entry) in self.servers() {
                    let tools = connection.tools();
                    listed.extend(tools.iter().filter(|t| entry.exposes(&t.name)).cloned());
                }
                listed
            }
            Scope::All => self.shared.aggregate_tools().tools.clone(),
        };
        let (tools, next) = pages::page(tools, cursor(&request))?;
        let mut result = ListToolsResult::with_all_items(tools);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let (server, tool) = match &self.scope {
            Scope::One(server) => (server.clone(), request.name.to_string()),
            Scope::All => {
                let aggregate = self.shared.aggregate_tools();
                match aggregate.catalog.resolve(&request.name) {
                    Some((server, tool)) => (server.to_string(), tool.to_string()),
                    None => {
                        return Err(ErrorData::invalid_params(
                            format!("unknown tool {:?}", request.name),
                            None,
                        ));
                    }
                }
            }
        };
        let (connection, entry) = self.server(&server)?;
        if !entry.exposes(&tool) {
            return Err(rpc_error(Error::ToolNotAllowed {
                server: server.clone(),
                tool,
            }));
        }
        let arguments = request.arguments.clone().unwrap_or_default();
        let arguments = match connection.check_arguments(&tool, arguments).await {
            Ok(arguments) => arguments,
            Err(ArgumentError::UnknownTool) => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {tool:?}"),
                    None,
                ));
            }
            Err(ArgumentError::Invalid(reason)) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "invalid arguments for tool {tool:?}: {reason}"
                ))])
                .into());
            }
        };
        let mut params = request;
        params.name = tool.into();
        params.arguments = Some(arguments);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        match self.forward(&server, request, &context).await? {
            ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(CallToolResponse::InputRequired(result))
            }
            ServerResult::CreateTaskResult(result) => Ok(CallToolResponse::Task(result)),
            _ => Err(unexpected(&server)),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        if let Scope::One(server) = &self.scope {
            let request = ClientRequest::ListPromptsRequest(ListPromptsRequest::with_param(
                request.unwrap_or_default(),
            ));
            return self
                .forward_as(server, request, &context, |answer| match answer {
                    ServerResult::ListPromptsResult(result) => Some(result),
                    _ => None,
                })
                .await;
        }
        let listed = self
            .gather(
                &context,
                |c| c.prompts.is_some(),
                |p| ClientRequest::ListPromptsRequest(ListPromptsRequest::with_param(p)),
                |answer| match answer {
                    ServerResult::ListPromptsResult(r) => Some((r.prompts, r.next_cursor)),
                    _ => None,
                },
            )
            .await?;
        let (catalog, names) = Catalog::build(
            listed.iter().map(|(s, p)| (s.as_str(), p.name.as_str())),
            &self.shared.separator,
        );
        *self.prompts.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
        let prompts = listed
            .into_iter()
            .zip(names)
            .map(|((_, mut prompt), name)| {
                prompt.name = name;
                prompt
            })
            .collect();
        let (prompts, next) = pages::page(prompts, cursor(&request))?;
        let mut result = ListPromptsResult::with_all_items(prompts);
        result.next_cursor = next;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let (server, name) = self.route_prompt(&request.name, &context).await?;
        let mut params = request;
        params.name = name;
        let request = ClientRequest::GetPromptRequest(GetPromptRequest::new(params));
        match self.forward(&server, request, &context).await? {
            ServerResult::GetPromptResult(result) => Ok(GetPromptResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(GetPromptResponse::InputRequired(result))
            }
            _ => Err(unexpected(&server)),
        }
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        if let Scope::One(server) = &self.scope {
            let request = ClientRequest::ListResourcesRequest(ListResourcesRequest::with_param(
                request.unwrap_or_default(),
            ));
            return self
                .forward_as(server, request, &context, |answer| match answer {
                    ServerResult::ListResourcesResult(result) => Some(result),
                    _ => None,
                })
                .await;
        }
        let listed = self
            .gather(
                &context,
                |c| c.resources.is_some(),
                |p| ClientRequest::ListResourcesRequest(ListResourcesRequest::with_param(p)),
                |answer| match answer {
                    ServerResult::ListResourcesResult(r) => Some((r.resources, r.next_cursor)),
                    _ => None,
                },
            )
            .await?;
        let resources = self.route_first(listed, |r| &r.uri);
        let (resources, next) = pages::page(resources, cursor(&request))?;
        let mut result = ListResourcesResult::with_all_items(resources);
        result.next_cursor = next;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        if let Scope::One(server) = &self.scope {
            let request = ClientRequest::ListResourceTemplatesRequest(
                ListResourceTemplatesRequest::with_param(request.unwrap_or_default()),
            );
            return self
                .forward_as(server, request, &context, |answer| match answer {
                    ServerResult::ListResourceTemplatesResult(result) => Some(result),
                    _ => None,
                })
                .await;
        }
        let listed = self
            .gather(
                &context,
                |c| c.resources.is_some(),
                |p| {
                    ClientRequest::ListResourceTemplatesRequest(
                        ListResourceTemplatesRequest::with_param(p),
                    )
                },
                |answer| match answer {
                    ServerResult::ListResourceTemplatesResult(r) => {
                        Some((r.resource_templates, r.next_cursor))
                    }
                    _ => None,
                },
            )
            .await?;
        let templates = self.route_first(listed, |t| &t.uri_template);
        let (templates, next) = pages::page(templates, cursor(&request))?;
        let mut result = ListResourceTemplatesResult::with_all_items(templates);
        result.next_cursor = next;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let server = self.route_resource(&request.uri, &context).await?;
        let request = ClientRequest::ReadResourceRequest(ReadResourceRequest::new(request));
        match self.forward(&server, request, &context).await? {
            ServerResult::ReadResourceResult(result) => Ok(ReadResourceResponse::Complete(result)),
            ServerResult::InputRequiredResult(result) => {
                Ok(ReadResourceResponse::InputRequired(result))
            }
            _ => Err(unexpected(&server)),
        }
    }

    /// The server is subscribed to the URI unless another session already holds it.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let server = self.route_resource(&request.uri, &context).await?;
        let held = (server.clone(), request.uri);
        let new = self.subscribed().insert(held.clone());
        let synced = self.sync(&server).await;
        if synced.is_err() && new {
            self.subscribed().remove(&held);
        }
        synced
    }

    /// The server is unsubscribed from the URI once no session holds it.
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let server = self.route_resource(&request.uri, &context).await?;
        self.subscribed().remove(&(server.clone(), request.uri));
        self.sync(&server).await
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let mut params = request;
        let server = match &mut params.r#ref {
            Reference::Prompt(prompt) => {
                let (server, name) = self.route_prompt(&prompt.name, &context).await?;
                prompt.name = name;
                server
            }
            Reference::Resource(resource) => self.route_resource(&resource.uri, &context).await?,
            _ => {
                return Err(ErrorData::invalid_params(
                    "completion/complete: unknown kind of reference",
                    None,
                ));
            }
        };
        let request = ClientRequest::CompleteRequest(CompleteRequest::new(params));
        match self.forward(&server, request, &context).await? {
            ServerResult::CompleteResult(result) => Ok(result),
            _ => Err(unexpected(&server)),
        }
    }

    /// The session hears log messages from `level` up; each server is asked for the most
    /// verbose level any session serving it set (the others' notification tasks filter).
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.wants.log_level.store(
            notify::severity(request.level),
            std::sync::atomic::Ordering::Relaxed,
        );
        for (server, _, _) in self.offering(|c| c.logging.is_some()) {
            self.sync(&server).await?;
        }
        Ok(())
    }
}
