//! List entries indexed so that a lookup costs the same for 10 entries as for 100,000: hash sets,
//! host-suffix walks for `*.domain` globs, one compiled regex set, and per-prefix-length hash
//! sets for CIDR ranges.

use std::net::IpAddr;

use regex::RegexSet;

use super::matchers::{HostPattern, HostTable, PathPrefix, PathPrefixSet};
use crate::addresses::{Network, mask_v4, mask_v6};
use crate::config::EntryType;
use crate::expr::one_line;
use crate::hash::FastSet;

/// Compiled entries of one list.
#[derive(Debug)]
pub enum EntryIndex {
    Strings(FastSet<Box<str>>),
    /// Entries stored lower-cased.
    CaseInsensitive(FastSet<Box<str>>),
    /// `None` when the list is empty (an empty `RegexSet` would still cost a call).
    Regex(Option<RegexSet>),
    Glob(GlobIndex),
    Ip(IpIndex),
    /// Whole-segment prefixes ([`PathPrefixSet`]), looked up once per segment boundary.
    PathPrefixes(PathPrefixSet),
}

/// A problem with one entry, by its index in `entries`, or with the list as a whole (`None`).
#[derive(Debug)]
pub struct EntryError {
    pub index: Option<usize>,
    pub message: String,
}

impl EntryError {
    fn at(index: usize, message: String) -> Self {
        EntryError {
            index: Some(index),
            message,
        }
    }
}

/// Parses every entry; all the problems, each with its entry's index, if any entry is refused.
fn parse_each<T>(
    entries: &[String],
    mut parse: impl FnMut(&str) -> Result<T, String>,
) -> Result<Vec<T>, Vec<EntryError>> {
    let mut parsed = Vec::with_capacity(entries.len());
    let mut errors = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        match parse(entry) {
            Ok(value) => parsed.push(value),
            Err(message) => errors.push(EntryError::at(index, message)),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

impl EntryIndex {
    pub fn build(entry_type: EntryType, entries: &[String]) -> Result<Self, Vec<EntryError>> {
        match entry_type {
            EntryType::Strings => Ok(Self::Strings(
                entries.iter().map(|e| e.as_str().into()).collect(),
            )),
            EntryType::CaseInsensitiveStrings => Ok(Self::CaseInsensitive(
                entries.iter().map(|e| e.to_lowercase().into()).collect(),
            )),
            EntryType::Regex => {
                parse_each(entries, |entry| {
                    regex::Regex::new(entry)
                        .map(drop)
                        .map_err(|e| format!("invalid regex: {}", one_line(&e.to_string())))
                })?;
                let anchored = entries.iter().map(|e| format!("^(?:{e})$"));
                regex_set(anchored, entries.len()).map(Self::Regex)
            }
            EntryType::Glob => GlobIndex::build(entries).map(Self::Glob),
            EntryType::IpAddresses => IpIndex::build(entries).map(Self::Ip),
            EntryType::PathPrefixes => path_prefixes(entries).map(Self::PathPrefixes),
        }
    }

    /// Whether `value` is listed.
    pub fn contains(&self, value: &str) -> bool {
        match self {
            Self::Strings(set) => set.contains(value),
            Self::CaseInsensitive(set) => {
                if value.chars().any(char::is_uppercase) {
                    set.contains(value.to_lowercase().as_str())
                } else {
                    set.contains(value)
                }
            }
            Self::Regex(set) => set.as_ref().is_some_and(|set| set.is_match(value)),
            Self::Glob(index) => index.contains(value),
            Self::Ip(index) => index.contains(value),
            Self::PathPrefixes(set) => set.matches(value),
        }
    }

    /// Number of entries, for diagnostics.
    pub fn len(&self) -> usize {
        match self {
            Self::Strings(set) | Self::CaseInsensitive(set) => set.len(),
            Self::PathPrefixes(set) => set.len(),
            Self::Regex(set) => set.as_ref().map_or(0, RegexSet::len),
            Self::Glob(index) => index.len,
            Self::Ip(index) => index.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn path_prefixes(entries: &[String]) -> Result<PathPrefixSet, Vec<EntryError>> {
    let mut set = PathPrefixSet::default();
    for prefix in parse_each(entries, PathPrefix::parse)? {
        set.insert(prefix);
    }
    Ok(set)
}

fn regex_set(
    patterns: impl Iterator<Item = String>,
    count: usize,
) -> Result<Option<RegexSet>, Vec<EntryError>> {
    if count == 0 {
        return Ok(None);
    }
    RegexSet::new(patterns).map(Some).map_err(|e| {
        vec![EntryError {
            index: None,
            message: format!(
                "entries cannot be compiled together: {}",
                one_line(&e.to_string())
            ),
        }]
    })
}

/// Globs: literal entries and `*.suffix` entries in a [`HostTable`] (one hash probe per label of
/// the value, with the meaning routes give host patterns), everything else in one regex set.
#[derive(Debug)]
pub struct GlobIndex {
    hosts: HostTable<()>,
    patterns: Option<RegexSet>,
    len: usize,
}

impl GlobIndex {
    fn build(entries: &[String]) -> Result<Self, Vec<EntryError>> {
        let mut index = GlobIndex {
            hosts: HostTable::default(),
            patterns: None,
            len: entries.len(),
        };
        let is_meta = |c: char| c == '*' || c == '?';
        let mut patterns = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            if entry.is_empty() {
                return Err(vec![EntryError::at(i, "empty glob".into())]);
            }
            // Globs are not only hosts (`/sport`), so literals are taken as they are.
            if entry == "*" {
                index.hosts.entry(HostPattern::Any, || ());
            } else if !entry.contains(is_meta) {
                index
                    .hosts
                    .entry(HostPattern::Exact(entry.as_str().into()), || ());
            } else if let Some(suffix) = entry
                .strip_prefix('*')
                .filter(|s| s.len() > 1 && s.starts_with('.') && !s.contains(is_meta))
            {
                index.hosts.entry(HostPattern::suffix(suffix), || ());
            } else {
                patterns.push(glob_to_regex(entry));
            }
        }
        let count = patterns.len();
        index.patterns = regex_set(patterns.into_iter(), count)?;
        Ok(index)
    }

    fn contains(&self, value: &str) -> bool {
        if self.hosts.lookup(value).is_some() {
            return true;
        }
        self.patterns
            .as_ref()
            .is_some_and(|set| set.is_match(value))
    }
}

fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^(?s:");
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push_str(")$");
    out
}

/// Addresses and CIDR ranges: one hash set of masked networks per prefix length, so a lookup
/// is at most 33 (IPv4) or 129 (IPv6) hash probes whatever the list size.
#[derive(Debug, Default)]
pub struct IpIndex {
    v4: FastSet<(u8, u32)>,
    v4_lengths: Vec<u8>,
    v6: FastSet<(u8, u128)>,
    v6_lengths: Vec<u8>,
    len: usize,
}

impl IpIndex {
    fn build(entries: &[String]) -> Result<Self, Vec<EntryError>> {
        let mut index = IpIndex {
            len: entries.len(),
            ..IpIndex::default()
        };
        for network in parse_each(entries, parse_network)? {
            match network {
                (IpAddr::V4(addr), len) => {
                    index.v4.insert((len, mask_v4(u32::from(addr), len)));
                    if !index.v4_lengths.contains(&len) {
                        index.v4_lengths.push(len);
                    }
                }
                (IpAddr::V6(addr), len) => {
                    index.v6.insert((len, mask_v6(u128::from(addr), len)));
                    if !index.v6_lengths.contains(&len) {
                        index.v6_lengths.push(len);
                    }
                }
            }
        }
        Ok(index)
    }

    fn contains(&self, value: &str) -> bool {
        match value
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(IpAddr::V4(addr)) => {
                let addr = u32::from(addr);
                self.v4_lengths
                    .iter()
                    .any(|&len| self.v4.contains(&(len, mask_v4(addr, len))))
            }
            Ok(IpAddr::V6(addr)) => {
                if let Some(v4) = addr.to_ipv4_mapped() {
                    return self.contains(&v4.to_string());
                }
                let addr = u128::from(addr);
                self.v6_lengths
                    .iter()
                    .any(|&len| self.v6.contains(&(len, mask_v6(addr, len))))
            }
            Err(_) => false,
        }
    }
}

/// An entry as an address and prefix length: the same reading as the SSRF guard's ranges.
fn parse_network(entry: &str) -> Result<(IpAddr, u8), String> {
    Network::parse(entry).map(|network| (network.addr, network.len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entry_type: EntryType, entries: &[&str]) -> EntryIndex {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        EntryIndex::build(entry_type, &entries).unwrap()
    }

    /// A behaviour, an entry type, its entries, values it lists and values it does not.
    type Case = (
        &'static str,
        EntryType,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        ("strings match exactly", EntryType::Strings, &["/health", "/sport"],
         &["/sport"], &["/sports", "/Sport"]),
        ("case-insensitive strings ignore case", EntryType::CaseInsensitiveStrings, &["Edition.CNN.com"],
         &["edition.cnn.com", "EDITION.cnn.COM"], &["cnn.com"]),
        ("regex entries must match the whole value", EntryType::Regex, &["/health|/sport", "/news/[0-9]+"],
         &["/sport", "/news/42"], &["/politics/sport", "/news/42/politics"]),
        ("wildcard globs walk host labels", EntryType::Glob,
         &["*.cnn.com", "ibm.com", "/sport/*", "mongo?.composedb.com"],
         &["edition.cnn.com", "a.b.cnn.com", "ibm.com", "/sport/football", "mongo1.composedb.com"],
         &["cnn.com", ".cnn.com", "evilcnn.com", "mongo12.composedb.com"]),
        ("ip entries match addresses and ranges", EntryType::IpAddresses,
         &["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"],
         &["10.1.2.3", "192.168.1.7", "2001:db8::1", "::ffff:10.9.9.9"],
         &["192.168.1.8", "not-an-ip"]),
    ];

    #[test]
    fn each_entry_type_admits_what_it_promises() {
        for (behaviour, entry_type, entries, listed, not_listed) in CASES {
            let list = index(*entry_type, entries);
            for value in *listed {
                assert!(
                    list.contains(value),
                    "{behaviour}: {value} should be listed"
                );
            }
            for value in *not_listed {
                assert!(
                    !list.contains(value),
                    "{behaviour}: {value} should not be listed"
                );
            }
        }
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        let list = index(EntryType::PathPrefixes, &["/sport", "/health/"]);
        for allowed in [
            "/sport",
            "/sport/",
            "/sport/football",
            "/health",
            "/health/x/y",
        ] {
            assert!(list.contains(allowed), "{allowed}");
        }
        let not_listed = crate::policy::matchers::tests::NOT_UNDER_SPORT;
        for refused in not_listed.into_iter().chain(["/healthy"]) {
            assert!(!list.contains(refused), "{refused}");
        }
        let root = index(EntryType::PathPrefixes, &["/"]);
        assert!(root.contains("/anything") && !root.contains("relative"));
    }

    #[test]
    fn bad_entries_are_reported_by_index() {
        let entries: Vec<String> = vec!["10.0.0.0/8".into(), "10.0.0.0/33".into(), "x".into()];
        let errors = EntryIndex::build(EntryType::IpAddresses, &entries).unwrap_err();
        let indices: Vec<Option<usize>> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indices, vec![Some(1), Some(2)]);
        let errors = EntryIndex::build(EntryType::Regex, &["(".to_string()]).unwrap_err();
        assert!(
            errors[0].message.starts_with("invalid regex"),
            "{}",
            errors[0].message
        );
    }
}
