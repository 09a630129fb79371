//! Secret values kept out of every log line, log file and API answer (SPEC §6), whatever
//! library produced the text.
//!
//! The daemon registers the values it must never show ([`Secrets::set`]): the expanded
//! `${VAR}` references of the live `mcp.json` (shown as `${VAR}`, the entry's unexpanded
//! form), API tokens and keys (shown as `***`). [`Secrets::redact`] replaces every
//! occurrence of each, in its plain, percent-encoded and form-encoded spelling (a value
//! inside a URL may be written either way by an HTTP library's error), longest first.
//!
//! The daemons' tracing writers ([`Redacting`]) pass every line through the process-wide
//! set ([`global`]), so a URL with a key that a dependency puts in its own error or log line
//! is redacted as well. Values shorter than [`MIN_SECRET_LEN`] bytes are not redacted:
//! they are no secret, and replacing them would garble every line; values shorter than
//! [`WORD_ONLY_BELOW`] only where they stand alone.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use aho_corasick::{AhoCorasick, MatchKind};
use percent_encoding::{AsciiSet, CONTROLS, NON_ALPHANUMERIC, utf8_percent_encode};
use tracing_subscriber::fmt::MakeWriter;

/// The shortest value that is redacted, in bytes.
pub const MIN_SECRET_LEN: usize = 4;

/// How a URL path or query writes a value (RFC 3986 with the WHATWG URL Standard's
/// percent-encode sets for path and query).
const URL_SET: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'?')
    .add(b'{')
    .add(b'}')
    .add(b'\'');

/// What `encodeURIComponent`-style encoders leave alone: RFC 3986's unreserved characters.
const COMPONENT_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A URL's userinfo (WHATWG URL Standard § 1.3, userinfo percent-encode set).
const USERINFO_SET: &AsciiSet = &URL_SET
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|');

/// `application/x-www-form-urlencoded` (WHATWG URL Standard § 5.2), before space becomes `+`.
const FORM_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// A set of secret values, in named groups (e.g. `"config"` for the live `mcp.json`'s
/// expansions, `"token"` for the API token), each replaced as a whole.
#[derive(Default)]
pub struct Secrets {
    groups: Mutex<BTreeMap<&'static str, Vec<(String, String)>>>,
    matcher: RwLock<Option<Arc<Matcher>>>,
}

struct Matcher {
    automaton: AhoCorasick,
    shown: Vec<String>,
    /// Per pattern: whether it is short enough to count only as a whole word.
    word_only: Vec<bool>,
}

/// A value shorter than this (in bytes) is redacted only where it stands alone (no letter,
/// digit or `_` on either side), so `8080` leaves pid `18080` alone.
pub const WORD_ONLY_BELOW: usize = 8;

/// The process-wide set the tracing writers and the API use.
pub fn global() -> &'static Secrets {
    static GLOBAL: LazyLock<Secrets> = LazyLock::new(Secrets::default);
    &GLOBAL
}

impl Secrets {
    /// Replaces group `group` with `secrets`: each `(value, shown)` makes `value` (and its
    /// URL-encoded spellings) read `shown` from now on.
    pub fn set(&self, group: &'static str, secrets: impl IntoIterator<Item = (String, String)>) {
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        groups.insert(group, secrets.into_iter().collect());
        let mut pairs: BTreeMap<String, String> = BTreeMap::new();
        for (value, shown) in groups.values().flatten() {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let spellings = [
                value.clone(),
                value.escape_debug().to_string(),
                utf8_percent_encode(value, URL_SET).to_string(),
                utf8_percent_encode(value, USERINFO_SET).to_string(),
                utf8_percent_encode(value, COMPONENT_SET).to_string(),
                utf8_percent_encode(value, FORM_SET)
                    .to_string()
                    .replace("%20", "+"),
            ];
            for spelling in spellings {
                pairs.entry(spelling).or_insert_with(|| shown.clone());
            }
        }
        let matcher = if pairs.is_empty() {
            None
        } else {
            let (patterns, shown): (Vec<String>, Vec<String>) = pairs.into_iter().unzip();
            let word_only = patterns.iter().map(|p| p.len() < WORD_ONLY_BELOW).collect();
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .map_err(|e| tracing::error!("cannot build the secret matcher: {e}"))
                .ok()
                .map(|automaton| {
                    Arc::new(Matcher {
                        automaton,
                        shown,
                        word_only,
                    })
                })
        };
        *self.matcher.write().unwrap_or_else(|p| p.into_inner()) = matcher;
    }

    /// `text` with every registered secret replaced by how it is shown; borrowed when there
    /// is none in it.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let matcher = self
            .matcher
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(m) = matcher.filter(|m| m.automaton.is_match(text)) else {
            return Cow::Borrowed(text);
        };
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for found in m.automaton.find_iter(text) {
            let pattern = found.pattern().as_usize();
            let alone = !word(text[..found.start()].chars().next_back())
                && !word(text[found.end()..].chars().next());
            if m.word_only[pattern] && !alone {
                continue;
            }
            out.push_str(&text[last..found.start()]);
            out.push_str(&m.shown[pattern]);
            last = found.end();
        }
        if last == 0 {
            return Cow::Borrowed(text);
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }
}

/// [`global`]'s [`Secrets::redact`], as an owned string.
pub fn redact(text: &str) -> String {
    global().redact(text).into_owned()
}

/// A tracing writer factory whose writers redact every line ([`global`]) before passing it
/// on; wrap both the stderr and the file writer in it.
pub struct Redacting<M>(pub M);

/// The writer [`Redacting`] makes.
pub struct RedactingWriter<W>(W);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    /// Takes the whole buffer (tracing's formatter writes one event at a time).
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(global().redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_spelling_longest_first_and_skips_short_values() {
        let secrets = Secrets::default();
        secrets.set(
            "config",
            [
                ("s3cr3t key/1".to_string(), "${KEY}".to_string()),
                ("s3cr3t".to_string(), "${SHORT}".to_string()),
                ("abc".to_string(), "${TINY}".to_string()),
            ],
        );
        assert_eq!(
            secrets.redact("a s3cr3t key/1 b s3cr3t c abc"),
            "a ${KEY} b ${SHORT} c abc"
        );
        assert_eq!(
            secrets.redact("http://h/x?k=s3cr3t%20key%2F1&v=s3cr3t+key%2F1 and /s3cr3t%20key/1"),
            "http://h/x?k=${KEY}&v=${KEY} and /${KEY}"
        );
        assert!(matches!(secrets.redact("nothing here"), Cow::Borrowed(_)));
        // Short values only as whole words; every spelling of a long one.
        secrets.set("port", [("8080".to_string(), "${PORT}".to_string())]);
        assert_eq!(
            secrets.redact("127.0.0.1:8080/x pid 18080 8080x"),
            "127.0.0.1:${PORT}/x pid 18080 8080x"
        );
        secrets.set(
            "quoted",
            [("p@ss\"word/1".to_string(), "${PW}".to_string())],
        );
        assert_eq!(
            secrets.redact(r#"user:p%40ss%22word%2F1@h and "p@ss\"word/1""#),
            r#"user:${PW}@h and "${PW}""#
        );
        // A group is replaced as a whole; others stay.
        secrets.set("token", [("tok-12345".to_string(), "***".to_string())]);
        secrets.set("config", []);
        assert_eq!(secrets.redact("s3cr3t tok-12345"), "s3cr3t ***");
    }
}
