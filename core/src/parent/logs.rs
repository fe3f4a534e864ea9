//! The log link: the enclave's log stream to its parent.
//!
//! A Nitro Enclave has no console, so it streams its structured logs to the parent, which
//! writes them into its own log with the enclave's request ids. One stream per connection:
//!
//! ```text
//! {"tandemLogStream":1}\n        the hello: the schema version of the lines that follow
//! {…one log event…}\n            JSON lines, at most MAX_LINE bytes each
//! ```
//!
//! Version 1 lines are the JSON events of `tracing-subscriber` with the event's fields
//! flattened and the current span attached: `timestamp`, `level`, `target`, the event's
//! fields (`message` among them), and `span` holding the current span's fields, among them
//! `request_id` for the events of an HTTP request. The parent reads only what
//! [`ShippedLine`] names and relays the rest as text. A stream without a hello (an older
//! enclave) is read as version 1; one with an unknown version is relayed as plain text.
//!
//! The enclave never logs secrets; the parent still bounds what it accepts.

use serde::{Deserialize, Serialize};

/// The schema version of the lines this build ships.
pub const STREAM_VERSION: u32 = 1;

/// The longest line the parent accepts; longer lines are cut.
pub const MAX_LINE: usize = 16 * 1024;

/// The first line of every log stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamHello {
    /// The schema version of the lines that follow.
    #[serde(rename = "tandemLogStream")]
    pub version: u32,
}

impl StreamHello {
    /// This build's hello.
    pub fn current() -> Self {
        StreamHello {
            version: STREAM_VERSION,
        }
    }

    /// The hello as it goes on the wire, newline included.
    pub fn line(&self) -> Vec<u8> {
        format!("{{\"tandemLogStream\":{}}}\n", self.version).into_bytes()
    }

    /// Reads a hello; `None` when the line is anything else (an ordinary log line).
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim_end()).ok()
    }
}

/// What the parent reads from one version-1 line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ShippedLine {
    /// `TRACE` … `ERROR`.
    #[serde(default)]
    pub level: Option<String>,
    /// A `request_id` field of the event itself.
    #[serde(default)]
    request_id: Option<String>,
    /// The current span.
    #[serde(default)]
    span: Option<SpanFields>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
struct SpanFields {
    #[serde(default)]
    request_id: Option<String>,
}

impl ShippedLine {
    /// Reads a line; `None` when it is not a JSON object of this shape.
    pub fn parse(line: &str) -> Option<Self> {
        serde_json::from_str(line).ok()
    }

    /// The request id the event belongs to: its own field, or its span's.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id
            .as_deref()
            .or_else(|| self.span.as_ref().and_then(|s| s.request_id.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hello_is_one_json_line_and_is_told_apart_from_log_lines() {
        let line = StreamHello::current().line();
        assert_eq!(line, b"{\"tandemLogStream\":1}\n");
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(StreamHello::parse(text), Some(StreamHello { version: 1 }));
        assert_eq!(StreamHello::parse(r#"{"level":"INFO","message":"hi"}"#), None);
        assert_eq!(StreamHello::parse("not json"), None);
    }

    #[test]
    fn request_ids_are_found_where_tracing_puts_them() {
        let in_span = r#"{"timestamp":"t","level":"INFO","message":"m","target":"x","span":{"name":"request","request_id":"abc"}}"#;
        let line = ShippedLine::parse(in_span).unwrap();
        assert_eq!(line.request_id(), Some("abc"));
        assert_eq!(line.level.as_deref(), Some("INFO"));
        let own = ShippedLine::parse(r#"{"level":"WARN","request_id":"top","span":{"request_id":"inner"}}"#).unwrap();
        assert_eq!(own.request_id(), Some("top"));
        let none = ShippedLine::parse(r#"{"level":"DEBUG"}"#).unwrap();
        assert_eq!(none.request_id(), None);
        assert!(ShippedLine::parse("plain text").is_none());
    }
}
