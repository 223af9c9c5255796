//! The one implementation of each matching meaning, shared by routes, lists and the metrics'
//! destination label:
//!
//! - [`HostPattern`] and [`HostTable`]: an exact host name, a `*.suffix` wildcard (at least one
//!   label before the suffix: `*.cnn.com` matches `edition.cnn.com` and `a.b.cnn.com`, never
//!   `cnn.com` or `evilcnn.com`), or `*`; looked up most specific first, with the specificity as
//!   an [`Ord`].
//! - [`PathPrefix`] and [`PathPrefixSet`]: prefixes of whole path segments. A trailing `/` is
//!   ignored: `/sport` and `/sport/` are the same prefix and match `/sport`, `/sport/` and
//!   `/sport/football`, never `/sports`. `/` matches every path.

use crate::hash::{FastMap, FastSet};
use std::cmp::Ordering;
use std::fmt;

/// A host name, a `*.suffix` wildcard or `*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(Box<str>),
    /// The suffix with its leading dot: `*.cnn.com` is `.cnn.com`.
    Suffix(Box<str>),
    Any,
}

impl HostPattern {
    /// Parses `edition.cnn.com`, `*.cnn.com` or `*` (case-insensitive; no port, no trailing dot).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "'{text}' is not a host name or a wildcard like '*.example.com' (no ports, no trailing dot)"
            ));
        }
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            Self::Suffix(format!(".{name}").into())
        } else {
            Self::Exact(name.into())
        })
    }

    /// The wildcard whose suffix is `suffix` (with or without its leading dot).
    pub fn suffix(suffix: &str) -> Self {
        let bare = suffix.trim_start_matches('.');
        Self::Suffix(format!(".{bare}").into())
    }

    /// Whether `host` (already canonical: lower case, no port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => **name == *host,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(&**suffix),
            Self::Any => true,
        }
    }

    /// Exact names beat wildcards, longer suffixes beat shorter ones, `*` comes last.
    fn rank(&self) -> (u8, usize) {
        match self {
            Self::Exact(_) => (2, 0),
            Self::Suffix(suffix) => (1, suffix.len()),
            Self::Any => (0, 0),
        }
    }
}

/// More specific is greater: `edition.cnn.com` > `*.edition.cnn.com` > `*.cnn.com` > `*`.
impl Ord for HostPattern {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank()
            .cmp(&other.rank())
            .then_with(|| self.to_string().cmp(&other.to_string()))
    }
}

impl PartialOrd for HostPattern {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
            Self::Any => f.write_str("*"),
        }
    }
}

/// Values keyed by host pattern; a lookup returns the most specific pattern's value in at most
/// one hash probe per label of the host, whatever the table's size.
#[derive(Debug, Clone)]
pub struct HostTable<T> {
    exact: FastMap<Box<str>, T>,
    suffixes: FastMap<Box<str>, T>,
    any: Option<T>,
}

impl<T> Default for HostTable<T> {
    fn default() -> Self {
        Self {
            exact: FastMap::default(),
            suffixes: FastMap::default(),
            any: None,
        }
    }
}

impl<T> HostTable<T> {
    /// The value for `pattern`, inserted with `make` if absent.
    pub fn entry(&mut self, pattern: HostPattern, make: impl FnOnce() -> T) -> &mut T {
        match pattern {
            HostPattern::Exact(name) => self.exact.entry(name).or_insert_with(make),
            HostPattern::Suffix(suffix) => self.suffixes.entry(suffix).or_insert_with(make),
            HostPattern::Any => self.any.get_or_insert_with(make),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty() && self.any.is_none()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.suffixes.len() + usize::from(self.any.is_some())
    }

    /// The value of the most specific pattern that matches `host`.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        if let Some(value) = self.exact.get(host) {
            return Some(value);
        }
        if !self.suffixes.is_empty() {
            // Left to right is longest suffix first; a suffix must leave a label before it.
            for (i, _) in host.match_indices('.').filter(|(i, _)| *i > 0) {
                if let Some(value) = host.get(i..).and_then(|suffix| self.suffixes.get(suffix)) {
                    return Some(value);
                }
            }
        }
        self.any.as_ref()
    }

    /// Every pattern with its value, most specific first.
    pub fn iter(&self) -> impl Iterator<Item = (HostPattern, &T)> {
        let mut all: Vec<(HostPattern, &T)> = self
            .exact
            .iter()
            .map(|(k, v)| (HostPattern::Exact(k.clone()), v))
            .chain(
                self.suffixes
                    .iter()
                    .map(|(k, v)| (HostPattern::Suffix(k.clone()), v)),
            )
            .chain(self.any.iter().map(|v| (HostPattern::Any, v)))
            .collect();
        all.sort_by(|a, b| b.0.cmp(&a.0));
        all.into_iter()
    }
}

/// A prefix of whole path segments, stored without its trailing `/` (the root stays `/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathPrefix(Box<str>);

impl PathPrefix {
    /// `/sport`, `/sport/` -> `/sport`; `/`, `//` -> `/`. The prefix must start with `/`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !text.starts_with('/') {
            return Err(format!("path prefix '{text}' must start with '/'"));
        }
        let trimmed = text.trim_end_matches('/');
        Ok(Self(if trimmed.is_empty() { "/" } else { trimmed }.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `/sport` matches `/sport`, `/sport/` and `/sport/x`, not `/sports`.
    pub fn matches(&self, path: &str) -> bool {
        let prefix = &*self.0;
        if prefix == "/" {
            return path.starts_with('/');
        }
        path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
    }
}

/// Path prefixes in a hash set: a lookup probes once per segment of the path.
#[derive(Debug, Clone, Default)]
pub struct PathPrefixSet(FastSet<PathPrefix>);

impl PathPrefixSet {
    pub fn insert(&mut self, prefix: PathPrefix) {
        self.0.insert(prefix);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether some prefix in the set matches `path`, with the meaning of [`PathPrefix::matches`].
    pub fn matches(&self, path: &str) -> bool {
        if !path.starts_with('/') {
            return false;
        }
        let probe = |candidate: &str| self.0.contains(&PathPrefix(candidate.into()));
        if probe("/") || probe(path) {
            return true;
        }
        // Every prefix that ends at a segment boundary: "/a/b/c" -> "/a", "/a/b".
        path.match_indices('/')
            .filter(|(i, _)| *i > 0)
            .any(|(i, _)| path.get(..i).is_some_and(probe))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_exact_names_and_whole_label_suffixes() {
        let wildcard = HostPattern::parse("*.CNN.com").unwrap();
        assert_eq!(wildcard.to_string(), "*.cnn.com");
        assert!(wildcard.matches("edition.cnn.com"));
        assert!(wildcard.matches("a.b.cnn.com"));
        assert!(!wildcard.matches("cnn.com"));
        assert!(!wildcard.matches("evilcnn.com"));
        assert!(!wildcard.matches(".cnn.com"));
        assert!(
            HostPattern::parse("edition.cnn.com")
                .unwrap()
                .matches("edition.cnn.com")
        );
        assert!(HostPattern::Any.matches("anything"));
        for bad in [
            "",
            "a..b",
            "cnn.com.",
            "cnn.com:443",
            "*cnn.com",
            "a/b",
            "*.",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn more_specific_host_patterns_order_higher() {
        let mut patterns: Vec<HostPattern> =
            ["*", "*.cnn.com", "edition.cnn.com", "*.edition.cnn.com"]
                .iter()
                .map(|p| HostPattern::parse(p).unwrap())
                .collect();
        patterns.sort();
        let names: Vec<String> = patterns.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["*", "*.cnn.com", "*.edition.cnn.com", "edition.cnn.com"]
        );
    }

    #[test]
    fn host_table_finds_the_most_specific_pattern() {
        let mut table = HostTable::default();
        for (pattern, value) in [
            ("*", 0),
            ("*.cnn.com", 1),
            ("*.edition.cnn.com", 2),
            ("edition.cnn.com", 3),
        ] {
            *table.entry(HostPattern::parse(pattern).unwrap(), || 0) = value;
        }
        assert_eq!(table.lookup("edition.cnn.com"), Some(&3));
        assert_eq!(table.lookup("www.edition.cnn.com"), Some(&2));
        assert_eq!(table.lookup("money.cnn.com"), Some(&1));
        assert_eq!(table.lookup("evilcnn.com"), Some(&0));
        assert_eq!(table.lookup("cnn.com"), Some(&0));
        let order: Vec<String> = table.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(
            order,
            ["edition.cnn.com", "*.edition.cnn.com", "*.cnn.com", "*"]
        );
        let mut no_any = HostTable::default();
        *no_any.entry(HostPattern::suffix("cnn.com"), || 0) = 1;
        assert_eq!(no_any.lookup("evilcnn.com"), None);
        assert_eq!(no_any.lookup(".cnn.com"), None);
    }

    /// Paths the prefix `/sport` must never admit: sharing characters is not sharing a segment.
    pub(crate) const NOT_UNDER_SPORT: [&str; 6] = [
        "/sports",
        "/sportpolitics",
        "/politics/sport",
        "/",
        "",
        "sport",
    ];

    #[test]
    fn a_trailing_slash_does_not_change_a_path_prefix() {
        for text in ["/sport", "/sport/", "/sport//"] {
            let prefix = PathPrefix::parse(text).unwrap();
            assert_eq!(prefix.as_str(), "/sport");
            let mut set = PathPrefixSet::default();
            set.insert(prefix.clone());
            for path in ["/sport", "/sport/", "/sport/football", "/sport/a/b"] {
                assert!(prefix.matches(path) && set.matches(path), "{text} {path}");
            }
            for path in NOT_UNDER_SPORT {
                assert!(!prefix.matches(path) && !set.matches(path), "{text} {path}");
            }
        }
        let root = PathPrefix::parse("/").unwrap();
        assert!(root.matches("/anything") && !root.matches("relative"));
        assert!(PathPrefix::parse("sport").is_err());
    }
}
