//! What every long-running Tandem binary does the same way: stop on a signal, and log.

use tokio_util::sync::CancellationToken;
use tracing_subscriber::Layer;
use tracing_subscriber::Registry;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Waits for SIGINT (ctrl-c) or SIGTERM (systemd's stop).
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            return;
        }
    }
    let _ = ctrl_c.await;
}

/// A token cancelled at the first SIGINT or SIGTERM: the shutdown signal a binary hands
/// to its library's `run`.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line: the event's fields flattened, the current span attached
    /// (the format log collectors and the parent's log receiver read).
    Json,
    /// Human-readable.
    Text,
}

/// Installs the process's logger: `RUST_LOG` if set, else `default_filter`, to stderr in
/// `format`; with `also_json`, every line is also written as JSON to that writer (the
/// enclave ships its logs to the parent this way).
pub fn init_logging(format: LogFormat, default_filter: &str, also_json: Option<BoxMakeWriter>) {
    subscriber(format, default_filter, BoxMakeWriter::new(std::io::stderr), also_json).init();
}

/// The subscriber [`init_logging`] installs, writing "stderr" to `stderr`.
fn subscriber(
    format: LogFormat,
    default_filter: &str,
    stderr: BoxMakeWriter,
    also_json: Option<BoxMakeWriter>,
) -> impl tracing::Subscriber + Send + Sync + for<'a> tracing_subscriber::registry::LookupSpan<'a> {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter))
    };
    let stderr: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => json_layer(stderr).with_filter(filter()).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(stderr)
            .with_filter(filter())
            .boxed(),
    };
    // An `Option`, not an empty `Vec`: an empty `Vec` of layers has no interest in any
    // event and would silence the whole subscriber.
    let also = also_json.map(|w| json_layer(w).with_filter(filter()));
    tracing_subscriber::registry().with(stderr).with(also)
}

/// The JSON format of every Tandem log line (one shape for stderr and for shipping).
fn json_layer<S>(writer: BoxMakeWriter) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn writer(&self) -> BoxMakeWriter {
            let me = self.clone();
            BoxMakeWriter::new(move || me.clone())
        }
        fn lines(&self) -> Vec<serde_json::Value> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    fn log_one_request_event() {
        let span = tracing::info_span!("request", request_id = "rid-1");
        let _enter = span.enter();
        tracing::info!(answer = 42, "hello");
        tracing::debug!("below the default filter");
    }

    /// The JSON lines are the log-line schema the parent reads (`tandem_core::parent::logs`):
    /// the event's fields flattened, the request span's id under `span`.
    #[test]
    fn json_lines_reach_stderr_and_the_second_writer_alike() {
        let (stderr, shipped) = (Captured::default(), Captured::default());
        let s = subscriber(LogFormat::Json, "info", stderr.writer(), Some(shipped.writer()));
        tracing::subscriber::with_default(s, log_one_request_event);
        for out in [&stderr, &shipped] {
            let lines = out.lines();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert_eq!(lines[0]["message"], "hello");
            assert_eq!(lines[0]["answer"], 42);
            assert_eq!(lines[0]["level"], "INFO");
            assert_eq!(lines[0]["span"]["request_id"], "rid-1");
            let parsed = tandem_core::parent::logs::ShippedLine::parse(&lines[0].to_string()).unwrap();
            assert_eq!(parsed.request_id(), Some("rid-1"));
        }
    }

    /// Without a second writer nothing is lost (an empty layer list once silenced all).
    #[test]
    fn without_a_second_writer_lines_still_reach_stderr() {
        let stderr = Captured::default();
        let s = subscriber(LogFormat::Text, "info", stderr.writer(), None);
        tracing::subscriber::with_default(s, log_one_request_event);
        let text = String::from_utf8(stderr.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("hello") && text.contains("rid-1"), "{text}");
        assert!(!text.contains("below the default filter"));
    }
}
