//! Human or JSON output, chosen once by `--json`.

use serde_json::Value;

/// Where command results go.
#[derive(Clone, Copy)]
pub struct Out {
    /// Print JSON objects (for scripts) instead of aligned text.
    pub json: bool,
}

impl Out {
    /// Prints a result: `fields` as `key: value` lines, or the whole object as JSON.
    pub fn result(&self, value: &Value) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
            return;
        }
        if let Value::Object(map) = value {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("{k:>width$}  {text}");
            }
        } else {
            println!("{value}");
        }
    }

    /// A progress line on stderr (never on stdout, which scripts parse). Silent with --json.
    pub fn progress(&self, line: &str) {
        if !self.json {
            eprintln!("{line}");
        }
    }
}

/// An error whose explanation was already printed (as the command's result); the process
/// only needs to exit non-zero.
#[derive(Debug)]
pub struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reported")
    }
}

impl std::error::Error for Reported {}
