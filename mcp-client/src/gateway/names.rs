//! Public names in the gateway's aggregate (SPEC §8): a tool or prompt `NAME` of server
//! `SERVER` is `SERVER__NAME` (or `SERVER.NAME` with `--name-separator .`), because LLM APIs
//! accept only function names matching `^[a-zA-Z0-9_-]{1,64}$` (OpenAI, Anthropic) and some
//! clients (Windsurf, Copilot CLI) reject dots.
//!
//! A name that would be longer than [`MAX_NAME`] characters, or holds characters outside that
//! set (other than a `.` separator), is made deterministically from the pair instead: the
//! allowed characters of its start, then `_` and the first 8 hex digits of the SHA-256 of
//! `SERVER`, a NUL and `NAME`. Two pairs that would get the same public name (a server named
//! `a__b` with a tool `c` next to server `a` with tool `b__c`) are told apart the same way:
//! the first in server order keeps the plain name. Every public name maps back to exactly one
//! (server, name) through [`Catalog`].

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// The longest public name (the LLM APIs' limit).
pub const MAX_NAME: usize = 64;

/// The default separator between server and name.
pub const DEFAULT_SEPARATOR: &str = "__";

/// Whether `c` may appear in a public name (`[a-zA-Z0-9_-]`, and `.` when it separates).
fn allowed(c: char, separator: &str) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-' || (c == '.' && separator == ".")
}

/// The plain public name of (`server`, `name`), or `None` when it is too long or holds
/// characters that are not allowed.
fn plain(server: &str, name: &str, separator: &str) -> Option<String> {
    let full = format!("{server}{separator}{name}");
    let fits = full.len() <= MAX_NAME && full.chars().all(|c| allowed(c, separator));
    fits.then_some(full)
}

/// The shortened public name of (`server`, `name`): see the module docs.
fn hashed(server: &str, name: &str, separator: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(server.as_bytes());
    hash.update([0]);
    hash.update(name.as_bytes());
    let digest = hex::encode(&hash.finalize()[..4]);
    let start: String = format!("{server}{separator}{name}")
        .chars()
        .filter(|&c| allowed(c, separator))
        .take(MAX_NAME - 9)
        .collect();
    format!("{start}_{digest}")
}

/// The public names of one listing, both ways.
#[derive(Default, Debug)]
pub struct Catalog {
    to_pair: HashMap<String, (String, String)>,
}

impl Catalog {
    /// Names every (server, name) pair of `pairs`, in the order given (servers sorted by
    /// name, each server's items in its own order), and returns the public names in the same
    /// order.
    pub fn build<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        separator: &str,
    ) -> (Self, Vec<String>) {
        let mut catalog = Self::default();
        let mut names = Vec::new();
        for (server, name) in pairs {
            let public = plain(server, name, separator)
                .filter(|public| !catalog.to_pair.contains_key(public))
                .unwrap_or_else(|| hashed(server, name, separator));
            catalog
                .to_pair
                .insert(public.clone(), (server.to_string(), name.to_string()));
            names.push(public);
        }
        (catalog, names)
    }

    /// The (server, name) a public name stands for.
    pub fn resolve(&self, public: &str) -> Option<(&str, &str)> {
        self.to_pair
            .get(public)
            .map(|(server, name)| (server.as_str(), name.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        (1..=MAX_NAME).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }

    #[test]
    fn names_are_server_separator_name_and_map_back() {
        let pairs = [
            ("time", "get_time"),
            ("fs", "read_file"),
            ("fs2", "read_file"),
        ];
        let (catalog, names) = Catalog::build(pairs, DEFAULT_SEPARATOR);
        assert_eq!(names, ["time__get_time", "fs__read_file", "fs2__read_file"]);
        assert_eq!(
            catalog.resolve("fs2__read_file"),
            Some(("fs2", "read_file"))
        );
        assert_eq!(catalog.resolve("nope"), None);
        let (_, dotted) = Catalog::build([("time", "get_time")], ".");
        assert_eq!(dotted, ["time.get_time"]);
    }

    #[test]
    fn long_or_odd_names_are_shortened_deterministically_and_stay_valid() {
        let long = "a".repeat(80);
        let pairs = [
            ("server", long.as_str()),
            ("server", "dotted.tool/name"),
            ("srv", "ok"),
        ];
        let (catalog, names) = Catalog::build(pairs, DEFAULT_SEPARATOR);
        let (_, again) = Catalog::build(pairs, DEFAULT_SEPARATOR);
        assert_eq!(names, again, "the same pairs get the same names");
        for name in &names {
            assert!(valid(name), "{name:?} is not a valid function name");
        }
        assert_eq!(names[2], "srv__ok");
        assert_eq!(catalog.resolve(&names[0]), Some(("server", long.as_str())));
        assert_eq!(
            catalog.resolve(&names[1]),
            Some(("server", "dotted.tool/name"))
        );
    }

    #[test]
    fn colliding_pairs_get_distinct_names() {
        let pairs = [("a", "b__c"), ("a__b", "c")];
        let (catalog, names) = Catalog::build(pairs, DEFAULT_SEPARATOR);
        assert_eq!(names[0], "a__b__c");
        assert_ne!(names[1], names[0]);
        assert!(valid(&names[1]));
        assert_eq!(catalog.resolve(&names[1]), Some(("a__b", "c")));
    }
}
