//! Pages of the aggregate's merged lists (MCP spec 2025-11-25, Utilities § Pagination): at
//! most [`PAGE_SIZE`] items per answer, with an opaque `nextCursor` the client sends back.
//!
//! The merged list is made again for each page (every server's list, in server order), so a
//! server that connects or changes its list between two pages shifts what the next page
//! holds; clients hear of such changes by `*/list_changed` and list again.

use rmcp::model::ErrorData;

/// The most items one page of an aggregate list holds.
pub const PAGE_SIZE: usize = 100;

/// What a cursor of the gateway starts with (the rest is the offset of the page).
const PREFIX: &str = "mcp-client-page-";

/// The page of `items` that `cursor` names (the first without one) and the cursor of the
/// next page, if there is one.
///
/// # Errors
/// A cursor the gateway did not give out, or one past the end of the list: MCP error
/// -32602 (invalid params), as the spec asks for an invalid cursor.
pub fn page<T>(items: Vec<T>, cursor: Option<&str>) -> Result<(Vec<T>, Option<String>), ErrorData> {
    let start = match cursor {
        None => 0,
        Some(cursor) => cursor
            .strip_prefix(PREFIX)
            .and_then(|offset| offset.parse::<usize>().ok())
            .filter(|offset| *offset < items.len())
            .ok_or_else(|| {
                ErrorData::invalid_params(
                    format!("invalid cursor {cursor:?}: list again from the start"),
                    None,
                )
            })?,
    };
    let end = (start + PAGE_SIZE).min(items.len());
    let next = (end < items.len()).then(|| format!("{PREFIX}{end}"));
    let page = items.into_iter().skip(start).take(end - start).collect();
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_list_comes_in_pages_that_cover_it_once() {
        let items: Vec<usize> = (0..250).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let (items, next) = page(items.clone(), cursor.as_deref()).unwrap();
            assert!(items.len() <= PAGE_SIZE);
            seen.extend(items);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, (0..250).collect::<Vec<_>>());
    }

    #[test]
    fn a_short_list_is_one_page_and_bad_cursors_are_refused() {
        let (items, next) = page(vec![1, 2, 3], None).unwrap();
        assert_eq!((items, next), (vec![1, 2, 3], None));
        for bad in ["", "7", "mcp-client-page-x", "mcp-client-page-3"] {
            let error = page(vec![1, 2, 3], Some(bad)).unwrap_err();
            assert_eq!(
                error.code,
                rmcp::model::ErrorCode::INVALID_PARAMS,
                "{bad:?}"
            );
        }
    }
}
