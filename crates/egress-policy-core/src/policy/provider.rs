//! Remote list entries (Mixer's listchecker `providerUrl`): the compiled provider settings, the
//! parsing of a fetched body into an index, and the state the adapter keeps between fetches.
//!
//! Parsing is all or nothing: a body with one bad entry, too many entries or too many bytes is
//! refused whole and the previous list stays in force, so a list is never half applied.

use std::sync::Arc;

use crate::config::{EntryType, OnError, ProviderConfig};
use crate::duration::parse_micros;
use crate::error::ConfigError;

use super::list::EntryIndex;

/// Compiled provider settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub cluster: String,
    pub path: String,
    pub authority: String,
    pub refresh_micros: i64,
    pub ttl_micros: i64,
    pub timeout_micros: i64,
    pub on_error: OnError,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub allow_empty: bool,
}

impl Provider {
    /// The headers of the fetch request.
    pub fn request_headers(&self) -> [(&str, &str); 4] {
        [
            (":method", "GET"),
            (":path", &self.path),
            (":authority", &self.authority),
            ("accept", "text/plain, application/json"),
        ]
    }

    /// The timeout of one fetch, in milliseconds.
    pub fn timeout_millis(&self) -> u32 {
        u32::try_from(self.timeout_micros / 1_000).unwrap_or(u32::MAX)
    }

    pub fn compile(
        config: &ProviderConfig,
        path: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<Self> {
        let before = errors.len();
        let mut duration = |text: &str, field: &str| {
            parse_micros(text)
                .map_err(|message| {
                    errors.push(ConfigError::new(format!("{path}.{field}"), message))
                })
                .unwrap_or(0)
        };
        let refresh_micros = duration(&config.refresh_interval, "refreshInterval");
        let ttl_micros = duration(&config.ttl, "ttl");
        let timeout_micros = duration(&config.timeout, "timeout");
        if config.cluster.is_empty() {
            errors.push(ConfigError::new(
                format!("{path}.cluster"),
                "must name an Envoy cluster",
            ));
        }
        if !config.path.starts_with('/') {
            errors.push(ConfigError::new(
                format!("{path}.path"),
                format!("'{}' must start with '/'", config.path),
            ));
        }
        if refresh_micros > 0 && ttl_micros > 0 && ttl_micros < refresh_micros {
            errors.push(ConfigError::new(
                format!("{path}.ttl"),
                format!(
                    "{} is shorter than refreshInterval {}: the list would expire between fetches",
                    config.ttl, config.refresh_interval
                ),
            ));
        }
        if config.max_entries == 0 || config.max_bytes == 0 {
            errors.push(ConfigError::new(
                path,
                "maxEntries and maxBytes must be greater than zero",
            ));
        }
        (errors.len() == before).then(|| Provider {
            cluster: config.cluster.clone(),
            path: config.path.clone(),
            authority: config
                .authority
                .clone()
                .unwrap_or_else(|| config.cluster.clone()),
            refresh_micros,
            ttl_micros,
            timeout_micros,
            on_error: config.on_error,
            max_entries: usize::try_from(config.max_entries).unwrap_or(usize::MAX),
            max_bytes: usize::try_from(config.max_bytes).unwrap_or(usize::MAX),
            allow_empty: config.allow_empty,
        })
    }

    /// Parses a fetched body: a JSON array of strings when it starts with `[`, otherwise one
    /// entry per line (blank lines and `#` comments skipped).
    pub fn parse(&self, entry_type: EntryType, body: &[u8]) -> Result<EntryIndex, FetchError> {
        if body.len() > self.max_bytes {
            return Err(FetchError::TooLarge {
                bytes: body.len(),
                max_bytes: self.max_bytes,
                read: true,
            });
        }
        let text = std::str::from_utf8(body).map_err(|e| FetchError::NotUtf8(e.to_string()))?;
        let entries: Vec<String> = if text.trim_start().starts_with('[') {
            serde_json::from_str(text).map_err(|e| FetchError::NotJsonStrings(e.to_string()))?
        } else {
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        if entries.is_empty() && !self.allow_empty {
            return Err(FetchError::Empty);
        }
        if entries.len() > self.max_entries {
            return Err(FetchError::TooManyEntries {
                entries: entries.len(),
                max_entries: self.max_entries,
            });
        }
        EntryIndex::build(entry_type, &entries).map_err(|errors| FetchError::BadEntries {
            count: errors.len(),
            first: errors.first().map_or(String::new(), |e| match e.index {
                Some(index) => format!("entry {index}: {}", e.message),
                None => e.message.clone(),
            }),
        })
    }
}

/// Why a fetch of a remote list changed nothing: the list in force stays (README: Remote lists).
/// Its text is the reason in the proxy's warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// The proxy refused to call the list's cluster (an unknown cluster, a bad header).
    Dispatch {
        cluster: String,
        why: String,
    },
    /// No answer: connection failure, reset or timeout.
    NoResponse,
    /// An answer other than 200.
    Status(String),
    /// A body over `maxBytes`; `read` says whether it was read (a 200 that announced it was
    /// not).
    TooLarge {
        bytes: usize,
        max_bytes: usize,
        read: bool,
    },
    /// The proxy could not hand the body over.
    BodyUnreadable,
    NotUtf8(String),
    NotJsonStrings(String),
    /// No entries, and `allowEmpty` is false.
    Empty,
    TooManyEntries {
        entries: usize,
        max_entries: usize,
    },
    /// Entries the list's type refuses: how many, and the first with its index.
    BadEntries {
        count: usize,
        first: String,
    },
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dispatch { cluster, why } => write!(f, "cannot call cluster {cluster}: {why}"),
            Self::NoResponse => f.write_str("no response (connection failure, reset or timeout)"),
            Self::Status(status) => write!(f, "status {status}"),
            Self::TooLarge {
                bytes,
                max_bytes,
                read: true,
            } => write!(f, "body of {bytes} bytes is over maxBytes {max_bytes}"),
            Self::TooLarge {
                bytes, max_bytes, ..
            } => write!(
                f,
                "body of {bytes} bytes is over maxBytes {max_bytes}; not read"
            ),
            Self::BodyUnreadable => f.write_str("the body could not be read"),
            Self::NotUtf8(why) => write!(f, "body is not UTF-8: {why}"),
            Self::NotJsonStrings(why) => write!(f, "body is not a JSON array of strings: {why}"),
            Self::Empty => f.write_str(
                "the body has no entries (an empty list is refused unless allowEmpty is true)",
            ),
            Self::TooManyEntries {
                entries,
                max_entries,
            } => write!(f, "{entries} entries is over maxEntries {max_entries}"),
            Self::BadEntries { count, first } => write!(f, "{count} bad entries; {first}"),
        }
    }
}

/// The last good remote list of one list.
#[derive(Debug)]
pub struct RemoteEntries {
    pub index: EntryIndex,
    pub fetched_at_micros: i64,
    /// The digest of the body the entries came from (`listVersions` on every log line).
    pub version: String,
}

/// Remote entries by list index, replaced whole on each good fetch ([`crate::refresh::Loaded`]).
#[derive(Debug, Clone, Default)]
pub struct RemoteLists {
    /// Shared between the versions of the lists: replacing one list copies the others' pointers.
    lists: Vec<Option<Arc<RemoteEntries>>>,
    /// `,"listVersions":{"name":"…"}` for the policy's remote lists (`unloaded` before a first
    /// good fetch); empty for a policy without one. Built when a list changes, written per line.
    log_fragment: String,
}

impl RemoteLists {
    /// No list loaded yet, for `policy`.
    pub fn for_policy(policy: &super::Policy) -> Self {
        let mut lists = RemoteLists::default();
        lists.describe(policy);
        lists
    }

    /// Rebuilds the log fragment after a change of the lists in force.
    pub fn describe(&mut self, policy: &super::Policy) {
        let mut out = String::new();
        for (index, list, _) in policy.providers() {
            out.push_str(if out.is_empty() {
                ",\"listVersions\":{"
            } else {
                ","
            });
            crate::telemetry::log_entry::push_json_string(&mut out, &list.name);
            out.push(':');
            let version = self.get(index).map_or("unloaded", |e| e.version.as_str());
            crate::telemetry::log_entry::push_json_string(&mut out, version);
        }
        if !out.is_empty() {
            out.push('}');
        }
        self.log_fragment = out;
    }

    /// What every log line carries of the remote lists in force.
    pub fn log_fragment(&self) -> &str {
        &self.log_fragment
    }

    pub fn get(&self, list: usize) -> Option<&RemoteEntries> {
        self.lists.get(list)?.as_deref()
    }

    pub fn set(&mut self, list: usize, entries: RemoteEntries) {
        if self.lists.len() <= list {
            self.lists.resize_with(list + 1, || None);
        }
        if let Some(slot) = self.lists.get_mut(list) {
            *slot = Some(Arc::new(entries));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderConfig;

    fn provider(max_entries: u32, max_bytes: u32) -> Provider {
        let config = ProviderConfig {
            cluster: "lists".into(),
            path: "/paths".into(),
            authority: None,
            refresh_interval: "1s".into(),
            ttl: "3s".into(),
            timeout: "1s".into(),
            on_error: OnError::Deny,
            max_entries,
            max_bytes,
            allow_empty: false,
        };
        Provider::compile(&config, "lists.p.provider", &mut Vec::new()).unwrap()
    }

    #[test]
    fn text_and_json_bodies_are_parsed() {
        let p = provider(10, 1000);
        let text = p
            .parse(EntryType::Strings, b"# allowed\n/sport\n\n  /health \n")
            .unwrap();
        assert!(text.contains("/sport") && text.contains("/health") && !text.contains("# allowed"));
        let json = p
            .parse(EntryType::Strings, br#"["/sport", "/health"]"#)
            .unwrap();
        assert!(json.contains("/health"));
    }

    #[test]
    fn bad_bodies_are_refused_whole_with_a_reason() {
        let p = provider(2, 40);
        let too_many: &[u8] = b"/a\n/b\n/c\n";
        let refusal = |entry_type: EntryType, body: &[u8]| p.parse(entry_type, body).unwrap_err();
        assert_eq!(
            refusal(EntryType::Strings, too_many),
            FetchError::TooManyEntries {
                entries: 3,
                max_entries: 2
            }
        );
        assert_eq!(
            refusal(EntryType::Strings, &[b'a'; 41]),
            FetchError::TooLarge {
                bytes: 41,
                max_bytes: 40,
                read: true
            }
        );
        assert!(matches!(
            refusal(EntryType::Strings, b"/a\xff"),
            FetchError::NotUtf8(_)
        ));
        assert!(matches!(
            refusal(EntryType::Strings, b"[\"/a\", 3]"),
            FetchError::NotJsonStrings(_)
        ));
        let bad_regex = refusal(EntryType::Regex, b"/ok\n/bad(\n");
        assert!(
            matches!(&bad_regex, FetchError::BadEntries { count: 1, first } if first.starts_with("entry 1: invalid regex")),
            "{bad_regex:?}"
        );
        for empty in [&b""[..], b"\n\n", b"# nothing yet\n", b"[]"] {
            assert_eq!(
                refusal(EntryType::Strings, empty),
                FetchError::Empty,
                "{empty:?}"
            );
        }
    }

    #[test]
    fn an_empty_list_is_accepted_only_when_allowed() {
        let p = Provider {
            allow_empty: true,
            ..provider(10, 100)
        };
        assert!(p.parse(EntryType::Strings, b"").unwrap().is_empty());
    }

    #[test]
    fn settings_are_validated_with_their_paths() {
        let mut errors = Vec::new();
        let config = ProviderConfig {
            cluster: String::new(),
            path: "paths".into(),
            authority: None,
            refresh_interval: "10s".into(),
            ttl: "5s".into(),
            timeout: "soon".into(),
            on_error: OnError::Allow,
            max_entries: 1,
            max_bytes: 1,
            allow_empty: false,
        };
        assert!(Provider::compile(&config, "lists.p.provider", &mut errors).is_none());
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 4, "{messages:#?}");
        assert!(messages[0].starts_with("lists.p.provider.timeout: 'soon' is not a duration"));
        assert!(messages.iter().any(|m| {
            m.starts_with("lists.p.provider.ttl: 5s is shorter than refreshInterval 10s")
        }));
    }
}
