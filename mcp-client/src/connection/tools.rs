//! Listing a server's tools, page by page, keeping the entries that parse.

use rmcp::RoleClient;
use rmcp::model::{ClientRequest, CustomRequest, ErrorData, ServerResult, Tool};
use rmcp::service::Peer;
use serde_json::Value;

/// Lists every tool of the server: `tools/list` page by page, following `nextCursor` (MCP
/// spec 2025-11-25, Server Features § Tools, and Utilities § Pagination).
///
/// A tool entry that does not parse (no `name`, no `inputSchema`, a schema that is not an
/// object, …) is skipped with a warning in mcp-client's log naming the server, the tool's
/// name if it has one, and why; the other tools are kept. rmcp's own `list_all_tools` fails
/// the whole list for one bad tool, so the request goes out as a custom `tools/list` and its
/// result is read here: rmcp's untagged `ServerResult` keeps a result it cannot type as a
/// `CustomResult` holding the raw JSON.
///
/// # Errors
/// The request failed, a page is not a `{"tools": [..]}` object, its `nextCursor` is not a
/// string, or a cursor came back twice (the listing would never end); the last three as a
/// JSON-RPC error -32603 naming what was wrong.
pub(super) async fn list_all_tools(
    peer: &Peer<RoleClient>,
    server: &str,
) -> Result<Vec<Tool>, rmcp::ServiceError> {
    let mut tools = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let params = cursor.as_ref().map(|c| serde_json::json!({"cursor": c}));
        let request = ClientRequest::CustomRequest(CustomRequest::new("tools/list", params));
        let page = read_tools_page(peer.send_request(request).await?).map_err(|why| {
            rmcp::ServiceError::McpError(ErrorData::internal_error(
                format!("the tools/list result is malformed: {why}"),
                None,
            ))
        })?;
        for (name, why) in &page.skipped {
            match name {
                Some(name) => tracing::warn!(
                    server,
                    tool = %name,
                    "tools/list: skipped the tool {name:?} of server {server:?}: {why}"
                ),
                None => tracing::warn!(
                    server,
                    "tools/list: skipped a tool without a name of server {server:?}: {why}"
                ),
            }
        }
        tools.extend(page.tools);
        match page.next_cursor {
            None => return Ok(tools),
            Some(next) if !seen.insert(next.clone()) => {
                return Err(rmcp::ServiceError::McpError(ErrorData::internal_error(
                    format!("tools/list sent the cursor {next:?} twice"),
                    None,
                )));
            }
            Some(next) => cursor = Some(next),
        }
    }
}

/// One page of `tools/list`, as [`read_tools_page`] reads it.
#[derive(Debug)]
pub(super) struct ToolsPage {
    /// The tools that parse.
    pub(super) tools: Vec<Tool>,
    /// The tools left out: name (if any) and why.
    pub(super) skipped: Vec<(Option<String>, String)>,
    /// `nextCursor`, if any.
    pub(super) next_cursor: Option<String>,
}

/// Reads a `tools/list` result, skipping the tool entries that do not parse.
///
/// # Errors
/// Why the page itself is unusable.
pub(super) fn read_tools_page(result: ServerResult) -> Result<ToolsPage, String> {
    if let ServerResult::ListToolsResult(page) = result {
        return Ok(ToolsPage {
            tools: page.tools,
            skipped: Vec::new(),
            next_cursor: page.next_cursor,
        });
    }
    let value = serde_json::to_value(&result).map_err(|e| e.to_string())?;
    let Some(entries) = value.get("tools").and_then(Value::as_array) else {
        return Err("it has no tools array".into());
    };
    let next_cursor = match value.get("nextCursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.clone()),
        Some(_) => return Err("its nextCursor is not a string".into()),
    };
    let mut page = ToolsPage {
        tools: Vec::with_capacity(entries.len()),
        skipped: Vec::new(),
        next_cursor,
    };
    for entry in entries {
        match serde_json::from_value::<Tool>(entry.clone()) {
            Ok(tool) => page.tools.push(tool),
            Err(e) => {
                let name = entry.get("name").and_then(Value::as_str).map(String::from);
                page.skipped.push((name, why_not_a_tool(entry, &e)));
            }
        }
    }
    Ok(page)
}

/// Why a `tools/list` entry is not a tool (MCP spec 2025-11-25, Server Features § Tools,
/// Tool: `name` a string, `inputSchema` a JSON Schema object): the field at fault when
/// serde's reason does not name it.
fn why_not_a_tool(entry: &Value, error: &serde_json::Error) -> String {
    let Some(entry) = entry.as_object() else {
        return "it is not a JSON object".into();
    };
    match (entry.get("name"), entry.get("inputSchema")) {
        (None, _) => "it has no name".into(),
        (Some(name), _) if !name.is_string() => "its name is not a string".into(),
        (_, None) => "it has no inputSchema".into(),
        (_, Some(schema)) if !schema.is_object() => "its inputSchema is not a JSON object".into(),
        _ => match entry.get("outputSchema") {
            Some(schema) if !schema.is_object() && !schema.is_null() => {
                "its outputSchema is not a JSON object".into()
            }
            _ => error.to_string(),
        },
    }
}
