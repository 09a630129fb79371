//! Tool arguments checked against the tool's `inputSchema` before a call leaves the daemon
//! (SPEC §8): JSON Schema 2020-12 unless the schema's `$schema` names another draft, through
//! the `jsonschema` crate. Each tool's schema is compiled once per tools list (at its first
//! call); a schema that does not compile is reported once and not enforced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

/// The compiled schemas of one tools list, by tool name; `None`: the schema did not compile.
#[derive(Default)]
pub struct ArgumentSchemas {
    compiled: Mutex<HashMap<String, Option<Arc<jsonschema::Validator>>>>,
}

/// How many failures one refusal names at most.
const MAX_REPORTED: usize = 5;

impl ArgumentSchemas {
    /// Checks `arguments` against `tool`'s `inputSchema`, compiling it on first use, and
    /// gives them back.
    ///
    /// # Errors
    /// The failures, each with the JSON pointer of the field it is about, e.g.
    /// `at /message: 5 is not of type "string"` or `at (root): "message" is a required
    /// property`; at most `MAX_REPORTED` (5) of them, `; `-separated.
    pub fn check(
        &self,
        server: &str,
        tool: &Tool,
        arguments: JsonObject,
    ) -> Result<JsonObject, String> {
        let validator = {
            let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            compiled
                .entry(tool.name.to_string())
                .or_insert_with(|| {
                    let schema = Value::Object((*tool.input_schema).clone());
                    match jsonschema::validator_for(&schema) {
                        Ok(validator) => Some(Arc::new(validator)),
                        Err(e) => {
                            tracing::warn!(
                                server,
                                tool = %tool.name,
                                "the tool's inputSchema does not compile, so its arguments are \
                                 not checked: {e}"
                            );
                            None
                        }
                    }
                })
                .clone()
        };
        let Some(validator) = validator else {
            return Ok(arguments);
        };
        let instance = Value::Object(arguments);
        let failures: Vec<String> = validator
            .iter_errors(&instance)
            .take(MAX_REPORTED)
            .map(|e| {
                let path = e.instance_path().to_string();
                let at = if path.is_empty() { "(root)" } else { &path };
                format!("at {at}: {e}")
            })
            .collect();
        match instance {
            Value::Object(arguments) if failures.is_empty() => Ok(arguments),
            _ => Err(failures.join("; ")),
        }
    }
}
