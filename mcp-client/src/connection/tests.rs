use super::*;
use serde_json::Value;

fn page(json: Value) -> Result<ToolsPage, String> {
    // As rmcp types a result it receives (untagged).
    read_tools_page(serde_json::from_value::<ServerResult>(json).unwrap())
}

#[test]
fn a_good_page_is_read_whole() {
    let read = page(serde_json::json!({
        "tools": [{"name": "a", "inputSchema": {"type": "object"}}],
        "nextCursor": "2",
    }))
    .unwrap();
    assert_eq!(read.tools.len(), 1);
    assert!(read.skipped.is_empty());
    assert_eq!(read.next_cursor.as_deref(), Some("2"));
}

#[test]
fn malformed_tools_are_skipped_with_the_reason() {
    let read = page(serde_json::json!({
        "tools": [
            {"name": "good", "inputSchema": {"type": "object"}},
            {"name": "no_schema"},
            {"name": "string_schema", "inputSchema": "object"},
            {"name": "bad_output", "inputSchema": {}, "outputSchema": 5},
            {"inputSchema": {}},
            {"name": 7, "inputSchema": {}},
            "not a tool",
            {"name": "also_good", "inputSchema": {}, "outputSchema": null},
        ],
    }))
    .unwrap();
    let names: Vec<&str> = read.tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["good", "also_good"]);
    let skipped: Vec<(Option<&str>, &str)> = read
        .skipped
        .iter()
        .map(|(name, why)| (name.as_deref(), why.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [
            (Some("no_schema"), "it has no inputSchema"),
            (
                Some("string_schema"),
                "its inputSchema is not a JSON object"
            ),
            (Some("bad_output"), "its outputSchema is not a JSON object"),
            (None, "it has no name"),
            (None, "its name is not a string"),
            (None, "it is not a JSON object"),
        ]
    );
    assert_eq!(read.next_cursor, None);
}

#[test]
fn an_unusable_page_is_an_error() {
    for (json, why) in [
        (serde_json::json!({}), "it has no tools array"),
        (serde_json::json!({"tools": {}}), "it has no tools array"),
        (
            serde_json::json!({"tools": [], "nextCursor": 2}),
            "its nextCursor is not a string",
        ),
    ] {
        assert_eq!(page(json).unwrap_err(), why);
    }
}
