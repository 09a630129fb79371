//! Streamable HTTP (MCP spec 2025-11-25, Transports § Streamable HTTP) is rmcp's client; this
//! is the HTTP backend it runs on: reqwest, configured as rmcp's default one, with one
//! change. rmcp drops an SSE event whose data does not parse as JSON-RPC, so a malformed
//! response (an error whose `code` is a string) left its request waiting for its whole
//! timeout; here such an event is rewritten, before rmcp reads it, into the error response
//! [`super::read_server_message`] makes of it, which fails that request at once.
//!
//! A POST answered with `application/json` is read inside rmcp: a body that does not parse
//! fails its request at once already (as a transport error, which ends the session).

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::ClientJsonRpcMessage;
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use sse_stream::Sse;

use super::{ServerMessage, read_server_message};

/// How many redirects a request follows at most (rmcp's default client's limit).
const MAX_REDIRECTS: usize = 10;

/// The HTTP backend of the streamable HTTP transport (see the module docs).
#[derive(Debug, Clone)]
pub struct RepairingClient(reqwest::Client);

impl RepairingClient {
    /// A client as rmcp's default one: no idle connections kept (a reused connection whose
    /// last body was not read to its end stalls on delayed ACKs), and only same-origin 307
    /// and 308 redirects followed, at most 10: those keep the method and body, and another
    /// origin would get the session id and the entry's headers.
    ///
    /// # Errors
    /// reqwest cannot build a client (no TLS provider installed).
    pub fn new() -> Result<Self, reqwest::Error> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(same_origin_redirects())
            .build()
            .map(Self)
    }
}

fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let keeps_body = matches!(
            attempt.status(),
            reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
        );
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !keeps_body || !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

type Events = BoxStream<'static, Result<Sse, SseError>>;

impl StreamableHttpClient for RepairingClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.0
            .post_message(uri, message, session_id, auth_header, custom_headers)
            .await
            .map(repair_response)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<StreamableHttpPostResponse, StreamableHttpError<Self::Error>> {
        self.0
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
            .map(repair_response)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.0
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<Events, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
            .map(repair_events)
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<Events, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
            .map(repair_events)
    }
}

fn repair_response(response: StreamableHttpPostResponse) -> StreamableHttpPostResponse {
    match response {
        StreamableHttpPostResponse::Sse(events, session) => {
            StreamableHttpPostResponse::Sse(repair_events(events), session)
        }
        other => other,
    }
}

fn repair_events(events: Events) -> Events {
    events.map(|event| event.map(repair_event)).boxed()
}

/// The event, with its data replaced by an error response when it is a malformed response
/// (see the module docs).
fn repair_event(mut event: Sse) -> Sse {
    // rmcp reads these as JSON-RPC messages; other events are control frames.
    if !matches!(event.event.as_deref(), None | Some("") | Some("message")) {
        return event;
    }
    let Some(data) = event.data.as_deref() else {
        return event;
    };
    if !may_be_a_malformed_response(data) {
        return event;
    }
    if let ServerMessage::Repaired { message, why } = read_server_message(data.as_bytes())
        && let Ok(data) = serde_json::to_string(&message)
    {
        tracing::warn!(
            "a streamable HTTP event is a malformed JSON-RPC response ({why}); its request \
             fails with that"
        );
        event.data = Some(data);
    }
    event
}

/// A cheap look (nothing but the small fields is kept) at whether `data` is a response with
/// a field JSON-RPC 2.0 (§ 5, § 5.1) does not allow, so that a well-formed message, however
/// large, is not parsed twice.
fn may_be_a_malformed_response(data: &str) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        jsonrpc: Option<Value>,
        id: Option<Value>,
        method: Option<IgnoredAny>,
        result: Option<IgnoredAny>,
        error: Option<ErrorProbe>,
    }
    #[derive(Deserialize)]
    struct ErrorProbe {
        code: Option<Value>,
        message: Option<Value>,
    }
    let Ok(probe) = serde_json::from_str::<Probe>(data) else {
        return false;
    };
    let is_response = probe.method.is_none() && (probe.result.is_some() || probe.error.is_some());
    let has_id = probe
        .id
        .as_ref()
        .is_some_and(|id| id.is_string() || id.is_i64() || id.is_u64());
    if !is_response || !has_id {
        return false;
    }
    let version_ok = probe.jsonrpc.as_ref().and_then(Value::as_str) == Some("2.0");
    let error_ok = probe.error.as_ref().is_none_or(|e| {
        let code_ok = e
            .code
            .as_ref()
            .and_then(Value::as_i64)
            .is_some_and(|c| i32::try_from(c).is_ok());
        code_ok && e.message.as_ref().is_some_and(Value::is_string)
    });
    !(version_ok && error_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: &str) -> Sse {
        Sse::default().data(data)
    }

    #[test]
    fn a_malformed_response_becomes_an_error_for_its_request() {
        let repaired = repair_event(event(
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":"oops","message":"bad"}}"#,
        ));
        let message: Value = serde_json::from_str(repaired.data.as_deref().unwrap()).unwrap();
        assert_eq!(message["id"], 3);
        assert_eq!(message["error"]["code"], -32603);
        let text = message["error"]["message"].as_str().unwrap();
        assert!(
            text.contains("malformed") && text.ends_with("bad"),
            "{text}"
        );
    }

    #[test]
    fn good_messages_and_other_events_pass_unchanged() {
        for data in [
            r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"bad"}}"#,
            r#"{"jsonrpc":"2.0","id":"a","result":{"content":[]}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":{},"error":{"code":"x"}}"#,
            "not json",
        ] {
            assert_eq!(repair_event(event(data)).data.as_deref(), Some(data));
        }
        let mut control = event(r#"{"jsonrpc":"2.0","id":3,"error":{"code":"x"}}"#);
        control.event = Some("endpoint".into());
        assert_eq!(repair_event(control.clone()).data, control.data);
    }

    #[test]
    fn the_probe_flags_what_json_rpc_forbids() {
        for data in [
            r#"{"jsonrpc":"1.0","id":1,"result":{}}"#,
            r#"{"id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":4294967296,"message":"m"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#,
        ] {
            assert!(may_be_a_malformed_response(data), "{data}");
        }
    }
}
