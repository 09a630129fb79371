//! Legacy HTTP+SSE client transport (MCP spec 2024-11-05, Transports § HTTP with SSE).
//!
//! rmcp removed its SSE client, so this one is ours: GET the SSE URL; the first `endpoint`
//! event's data is the URL (relative to the SSE URL) to POST messages to; every `message`
//! event carries one JSON-RPC message from the server. The connection ends when the event
//! stream ends or fails: the 2024-11-05 transport has no resumption.

use std::pin::Pin;
use std::sync::Arc;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{Stream, StreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Client, Url};
use rmcp::RoleClient;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;

use crate::error::ConnectError;
use crate::transport::{ServerMessage, read_server_message};
use mag_common::error_chain;

/// The server's events, parsed as the WHATWG SSE rules say (comments, unknown and repeated
/// fields, CRLF taken or ignored, never an error).
type EventStream =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// An open legacy SSE session: the event stream and the endpoint to POST to.
pub struct SseTransport {
    events: EventStream,
    post: Arc<PostTarget>,
}

struct PostTarget {
    client: Client,
    endpoint: Url,
    headers: HeaderMap,
}

/// Why the SSE transport failed: the HTTP request, the status, the stream.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// The HTTP request could not be made or its body could not be read.
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    /// The server answered with a status other than 2xx.
    #[error("HTTP {status} from {url}")]
    Status {
        /// The status received.
        status: reqwest::StatusCode,
        /// The URL requested (without its query).
        url: String,
    },
    /// The message could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(#[from] serde_json::Error),
}

impl SseTransport {
    /// Opens the event stream at `url` and waits for the `endpoint` event.
    ///
    /// # Errors
    /// The cause, of its kind: [`ConnectError::Config`] (the URL is invalid), the kind of
    /// the GET's failure ([`crate::error::failure_kind`]: refused, TLS, …),
    /// [`ConnectError::HttpStatus`] (not answered with 2xx), [`ConnectError::Protocol`]
    /// (not `text/event-stream`, no usable `endpoint` event before the stream ended, an
    /// endpoint on another origin), [`ConnectError::Transport`] (the stream broke). The URL
    /// is named without its query.
    pub async fn connect(
        client: Client,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Self, ConnectError> {
        let base =
            Url::parse(url).map_err(|e| ConnectError::Config(format!("invalid url: {e}")))?;
        let response = client
            .get(base.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| {
                let e = e.without_url();
                let text = format!("GET {}: {}", without_query(&base), error_chain(&e));
                ConnectError::from_transport(&e, text)
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(ConnectError::HttpStatus {
                status: status.as_u16(),
                message: format!("GET {}: HTTP {status}", without_query(&base)),
            });
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Err(ConnectError::Protocol(format!(
                "GET {}: expected an event stream, got content type {content_type:?}",
                without_query(&base)
            )));
        }
        let mut events: EventStream = Box::pin(response.bytes_stream().eventsource());
        let endpoint = loop {
            match events.next().await {
                Some(Ok(event)) if event.event == "endpoint" => {
                    let data = event.data;
                    let endpoint = base.join(data.trim()).map_err(|e| {
                        ConnectError::Protocol(format!(
                            "invalid endpoint event {}: {e}",
                            cut_query(data.trim())
                        ))
                    })?;
                    check_origin(&base, &endpoint).map_err(ConnectError::Protocol)?;
                    break endpoint;
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => {
                    return Err(ConnectError::Transport(format!(
                        "reading the event stream: {e}"
                    )));
                }
                None => {
                    return Err(ConnectError::Protocol(
                        "the event stream ended before its endpoint event".into(),
                    ));
                }
            }
        };
        Ok(Self {
            events,
            post: Arc::new(PostTarget {
                client,
                endpoint,
                headers,
            }),
        })
    }
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let post = self.post.clone();
        async move {
            let body = serde_json::to_vec(&item)?;
            let response = post
                .client
                .post(post.endpoint.clone())
                .headers(post.headers.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body)
                .send()
                .await
                .map_err(reqwest::Error::without_url)?;
            let status = response.status();
            if !status.is_success() {
                return Err(SseError::Status {
                    status,
                    url: without_query(&post.endpoint),
                });
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let event = match self.events.next().await? {
                Ok(event) => event,
                Err(e) => {
                    tracing::info!("SSE stream ended: {e}");
                    return None;
                }
            };
            if event.event != "message" {
                continue;
            }
            match read_server_message(event.data.as_bytes()) {
                ServerMessage::Valid(message) => return Some(message),
                ServerMessage::Repaired { message, why } => {
                    tracing::warn!(
                        "an SSE message is a malformed JSON-RPC response ({why}); its request \
                         fails with that"
                    );
                    return Some(message);
                }
                ServerMessage::Invalid(e) => {
                    tracing::warn!("skipping an SSE message that is not JSON-RPC: {e}")
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.events = Box::pin(futures::stream::empty());
        Ok(())
    }
}

/// Refuses an endpoint on another origin (scheme, host, port; RFC 6454) than the SSE URL:
/// mcp-client would POST the entry's `headers` (often a key) there. The official TypeScript
/// and Python SDKs refuse it too ("Endpoint origin does not match connection origin").
///
/// # Errors
/// A sentence naming both origins (never a path or query).
fn check_origin(sse: &Url, endpoint: &Url) -> Result<(), String> {
    // (An opaque origin, of a URL such as `data:`, equals no other.)
    let (sse, endpoint) = (sse.origin(), endpoint.origin());
    if sse != endpoint {
        return Err(format!(
            "refused the SSE endpoint event: it points at origin {}, not at the SSE URL's \
             origin {}; mcp-client only posts to the origin it connected to",
            endpoint.ascii_serialization(),
            sse.ascii_serialization()
        ));
    }
    Ok(())
}

/// What an `endpoint` event said, without its query and fragment (they may hold a key).
fn cut_query(data: &str) -> String {
    let end = data.find(['?', '#']).unwrap_or(data.len());
    format!("{:?}", &data[..end])
}

/// The URL without query and fragment, for messages (a query may carry a key).
pub fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sse: &str, data: &str) -> Result<(), String> {
        let base = Url::parse(sse).unwrap();
        check_origin(&base, &base.join(data).unwrap())
    }

    #[test]
    fn an_endpoint_on_the_same_origin_is_taken() {
        assert_eq!(check("http://127.0.0.1:3000/sse", "/messages?s=1"), Ok(()));
        assert_eq!(
            check("http://127.0.0.1:3000/a/sse", "http://127.0.0.1:3000/m"),
            Ok(())
        );
        // The default port, written or not, is the same origin.
        assert_eq!(check("http://h/sse", "http://h:80/m"), Ok(()));
    }

    #[test]
    fn an_endpoint_on_another_origin_is_refused_without_its_query() {
        for data in [
            "http://127.0.0.1:3001/m?key=SECRET",
            "https://127.0.0.1:3000/m?key=SECRET",
            "http://evil.example:3000/m?key=SECRET",
            "//evil.example/m?key=SECRET",
            "data:text/plain,SECRET",
        ] {
            let e = check("http://127.0.0.1:3000/sse?key=SECRET", data).unwrap_err();
            assert!(e.contains("http://127.0.0.1:3000"), "{e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
        let e = check("http://127.0.0.1:3000/sse", "http://127.0.0.1:3001/m").unwrap_err();
        assert!(e.contains("origin http://127.0.0.1:3001,"), "{e}");
    }

    #[test]
    fn an_endpoint_is_quoted_without_its_query() {
        assert_eq!(cut_query("/m?key=SECRET#f"), "\"/m\"");
        assert_eq!(cut_query("/m#f?x"), "\"/m\"");
    }
}
