//! The tagged sections of an assistant's answer and how they merge into a conversation's
//! `parsed_results` (MAG's `mag/app/utils/text_parser.py` and `mcp_manager.py`).
//!
//! Tags (case-insensitive, content trimmed; an empty section counts as absent):
//! `<analysis>`, `<todo>`, `<folder_name>`, `<dependencies>`, `<readme>` (the first of each
//! wins), `<script_file name="F">…</script_file>` (any number; a later one with the same
//! name wins; a name holding a control character such as NUL is no file name, and the
//! section is skipped) and `<delete_script_file>F</delete_script_file>` (any number).
//!
//! Merging: a present simple field replaces the stored one; script files are added or
//! replaced by name; deletes remove names from the files stored before this answer, and
//! never a file the same answer writes (MAG drops those: a bug we do not keep).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};

/// The simple (one text each) sections, in MAG's order.
pub const SIMPLE_FIELDS: [&str; 5] = ["analysis", "todo", "folder_name", "dependencies", "readme"];

/// The script the generated server must have (MAG's completeness rule).
pub const MAIN_SCRIPT: &str = "main.py";

/// What one answer contains.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sections {
    /// The simple sections found, by field name.
    pub fields: Map<String, Value>,
    /// `<script_file>`s: (name, content), in order.
    pub script_files: Vec<(String, String)>,
    /// `<delete_script_file>` names.
    pub deleted: Vec<String>,
}

fn simple(tag: &str) -> Regex {
    Regex::new(&format!(r"(?is)<{tag}>\s*(.*?)\s*</{tag}>")).expect("a valid pattern")
}

static SIMPLE: LazyLock<Vec<(&'static str, Regex)>> =
    LazyLock::new(|| SIMPLE_FIELDS.iter().map(|f| (*f, simple(f))).collect());
static SCRIPT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?is)<script_file\s+name=["']([^"'\x00-\x1f]+)["']\s*>\s*(.*?)\s*</script_file>"#)
        .expect("a valid pattern")
});
static DELETE: LazyLock<Regex> = LazyLock::new(|| simple("delete_script_file"));

/// The sections of `text`.
pub fn sections(text: &str) -> Sections {
    let mut found = Sections::default();
    for (field, pattern) in SIMPLE.iter() {
        if let Some(c) = pattern.captures(text) {
            let content = c[1].trim();
            if !content.is_empty() {
                found.fields.insert((*field).into(), Value::from(content));
            }
        }
    }
    for c in SCRIPT.captures_iter(text) {
        let (name, content) = (c[1].trim(), c[2].trim());
        if !name.is_empty() && !content.is_empty() {
            found.script_files.push((name.into(), content.into()));
        }
    }
    for c in DELETE.captures_iter(text) {
        let name = c[1].trim();
        if !name.is_empty() {
            found.deleted.push(name.into());
        }
    }
    found
}

/// Merges `found` into `parsed` (a conversation's `parsed_results`).
pub fn merge(parsed: &mut Map<String, Value>, found: Sections) {
    for (field, value) in found.fields {
        parsed.insert(field, value);
    }
    let mut files = match parsed.remove("script_files") {
        Some(Value::Object(files)) => files,
        _ => Map::new(),
    };
    for name in &found.deleted {
        files.shift_remove(name);
    }
    for (name, content) in found.script_files {
        files.insert(name, Value::from(content));
    }
    parsed.insert("script_files".into(), Value::Object(files));
}

/// The `parsed_results` fields a finished design must have (MAG's
/// `ai_mcp_generator.py`), in the order they are reported missing.
pub const REQUIRED_SECTIONS: [&str; 6] = [
    "analysis",
    "todo",
    "folder_name",
    "script_files",
    "dependencies",
    "readme",
];

/// The parts a finished design still lacks, in MAG's words: each simple field that is
/// missing or empty, `script_files` when there are none, and `main.py脚本` when there are
/// some but no `main.py`.
pub fn missing_parts(parsed: &Map<String, Value>) -> Vec<String> {
    let present = |field: &str| match parsed.get(field) {
        Some(Value::String(s)) => !s.trim().is_empty(),
        Some(Value::Object(m)) => !m.is_empty(),
        _ => false,
    };
    let mut missing = Vec::new();
    for field in REQUIRED_SECTIONS {
        if !present(field) {
            missing.push(field.to_owned());
        }
    }
    if present("script_files") && parsed["script_files"].get(MAIN_SCRIPT).is_none() {
        missing.push(format!("{MAIN_SCRIPT}脚本"));
    }
    missing
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::empty_parsed_results;

    #[test]
    fn sections_are_found_trimmed_and_case_insensitive() {
        let text = "intro <ANALYSIS>\n  needs a clock \n</analysis>\n<todo></todo>\n\
            <folder_name>clock_tool</folder_name>\n\
            <script_file name=\"main.py\">\nprint(1)\n</script_file>\n\
            <script_file name='util.py'>x = 1</script_file>\n\
            <script_file name=\"main.py\">print(2)</script_file>\n\
            <delete_script_file> old.py </delete_script_file>\n\
            <dependencies>mcp==2.3.0 tzdata</dependencies>";
        let found = sections(text);
        assert_eq!(found.fields["analysis"], "needs a clock");
        assert!(
            !found.fields.contains_key("todo"),
            "an empty section is absent"
        );
        assert_eq!(found.fields["folder_name"], "clock_tool");
        assert_eq!(found.fields["dependencies"], "mcp==2.3.0 tzdata");
        assert_eq!(
            found.script_files,
            vec![
                ("main.py".into(), "print(1)".into()),
                ("util.py".into(), "x = 1".into()),
                ("main.py".into(), "print(2)".into()),
            ]
        );
        assert_eq!(found.deleted, vec!["old.py".to_owned()]);
    }

    #[test]
    fn a_name_with_a_control_character_is_no_script_file() {
        // MongoDB cannot hold a NUL in a key: such a section must never reach the store.
        let found = sections(
            "<script_file name=\"a\u{0}.py\">x</script_file>\
            <script_file name=\"b\n.py\">y</script_file><script_file name=\"c.py\">z</script_file>",
        );
        assert_eq!(found.script_files, vec![("c.py".into(), "z".into())]);
    }

    #[test]
    fn rounds_merge_by_field_and_file_name() {
        let mut parsed = empty_parsed_results();
        merge(
            &mut parsed,
            sections(
                "<analysis>a1</analysis><script_file name=\"main.py\">v1</script_file>\
                 <script_file name=\"old.py\">o</script_file>",
            ),
        );
        merge(
            &mut parsed,
            sections(
                "<todo>t</todo><script_file name=\"main.py\">v2</script_file>\
                 <delete_script_file>old.py</delete_script_file>\
                 <script_file name=\"new.py\">n</script_file>",
            ),
        );
        assert_eq!(parsed["analysis"], "a1");
        assert_eq!(parsed["todo"], "t");
        assert_eq!(parsed["folder_name"], Value::Null);
        assert_eq!(
            parsed["script_files"],
            json!({"main.py": "v2", "new.py": "n"}),
            "a delete keeps the files written by the same answer"
        );
    }

    #[test]
    fn missing_parts_name_what_the_design_lacks() {
        let mut parsed = empty_parsed_results();
        assert_eq!(
            missing_parts(&parsed),
            [
                "analysis",
                "todo",
                "folder_name",
                "script_files",
                "dependencies",
                "readme"
            ]
        );
        merge(
            &mut parsed,
            sections(
                "<analysis>a</analysis><todo>t</todo><folder_name>f</folder_name>\
                 <dependencies>mcp</dependencies><readme>r</readme>\
                 <script_file name=\"server.py\">s</script_file>",
            ),
        );
        assert_eq!(missing_parts(&parsed), ["main.py脚本"]);
        merge(
            &mut parsed,
            sections("<script_file name=\"main.py\">m</script_file>"),
        );
        assert!(missing_parts(&parsed).is_empty());
    }
}
