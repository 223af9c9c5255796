//! The SSRF guard's rules (README: Security): which addresses the gateway never connects to,
//! whatever name led there, and how a host written as an IP address is read.
//!
//! The policy decides on names; a name can resolve anywhere, including the gateway's own network
//! (the cloud's metadata service at 169.254.169.254, a database at 10.0.0.5). So the address
//! actually connected to is checked too, after resolution and before connecting, and refused
//! when it is internal. Refused by default: loopback, RFC 1918, link-local (the metadata
//! services), CGNAT, unique-local, unspecified, multicast, broadcast and reserved addresses, and
//! IPv6 forms that carry an IPv4 address (mapped, compatible, NAT64), which would otherwise let an
//! internal IPv4 address through in IPv6 clothing. A configuration adds ranges (the mesh's pod
//! and service ranges) and allows exceptions (a destination that really is internal).
//!
//! Hosts written as IP addresses are read as the C library reads them (`inet_aton`: `127.1`,
//! `0x7f.0.0.1`, `0177.0.0.1`, `2130706433`), because a client or a resolver downstream of the
//! policy may: a form the policy did not recognise as an address must not pass as a name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::AddressGuardConfig;
use crate::error::ConfigError;
use crate::policy::matchers::{HostPattern, HostTable};

/// An IP network: an address and a prefix length, the address masked to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Network {
    pub addr: IpAddr,
    pub len: u8,
}

impl Network {
    /// `10.0.0.0/8`, `fc00::/7`, or an address alone (the whole address). Errors say what is
    /// wrong with the entry.
    pub fn parse(entry: &str) -> Result<Network, String> {
        let (addr, len) = match entry.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (entry, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{entry}' is not an IP address or CIDR range"))?;
        let max = max_len(addr);
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("'{entry}' has an invalid prefix length (0..={max})"))?,
        };
        Ok(Network::new(addr, len))
    }

    /// The network of `addr` with `len` bits (at most the address's width), masked.
    pub fn new(addr: IpAddr, len: u8) -> Network {
        let len = len.min(max_len(addr));
        let addr = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_v4(u32::from(v4), len))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_v6(u128::from(v6), len))),
        };
        Network { addr, len }
    }

    /// `addr` is in this network (an IPv4 address is never in an IPv6 network, nor the reverse).
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => mask_v4(u32::from(a), self.len) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => mask_v6(u128::from(a), self.len) == u128::from(net),
            _ => false,
        }
    }

    /// This network without `hole`: the networks that cover the rest, as few as the split needs
    /// (one per bit of prefix between them). Whole when they do not overlap; nothing when `hole`
    /// covers it.
    pub fn without(&self, hole: &Network) -> Vec<Network> {
        if hole.len <= self.len {
            return if hole.contains(self.addr) && same_family(self.addr, hole.addr) {
                Vec::new()
            } else {
                vec![*self]
            };
        }
        if !self.contains(hole.addr) {
            return vec![*self];
        }
        // Walk from this network down to the hole, keeping at each level the half the hole is
        // not in.
        let mut rest = Vec::new();
        for len in self.len + 1..=hole.len {
            let toward_hole = Network::new(hole.addr, len);
            rest.push(sibling(&toward_hole));
        }
        rest
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The other half of `network`'s parent.
fn sibling(network: &Network) -> Network {
    let bit = max_len(network.addr) - network.len;
    let addr = match network.addr {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) ^ (1u32 << bit))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) ^ (1u128 << bit))),
    };
    Network::new(addr, network.len)
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 32 } else { 128 }
}

pub fn mask_v4(addr: u32, len: u8) -> u32 {
    match len {
        0 => 0,
        len => addr & (u32::MAX << (32 - u32::from(len.min(32)))),
    }
}

pub fn mask_v6(addr: u128, len: u8) -> u128 {
    match len {
        0 => 0,
        len => addr & (u128::MAX << (128 - u32::from(len.min(128)))),
    }
}

/// Why an address is refused: the word the log line and the counter carry.
pub type Reason = &'static str;

/// The ranges refused by default, each with its reason; the order is the check's (the first
/// that holds names the reason).
pub const DEFAULT_REFUSED: &[(&str, Reason)] = &[
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("169.254.0.0/16", "link_local"),
    ("100.64.0.0/10", "cgnat"),
    ("192.0.0.0/24", "reserved"),
    ("198.18.0.0/15", "reserved"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "ipv4_mapped"),
    ("::/96", "ipv4_compatible"),
    ("64:ff9b::/96", "nat64"),
    ("64:ff9b:1::/48", "nat64"),
    ("fe80::/10", "link_local"),
    ("fc00::/7", "unique_local"),
    ("ff00::/8", "multicast"),
];

/// The rules of one configuration: the default ranges, the configured ones, and the exceptions.
#[derive(Debug, Clone)]
pub struct AddressRules {
    refused: Vec<(Network, Reason)>,
    allowed: Vec<Network>,
    /// A host written as an IP address may be connected to (its address is still checked).
    pub allow_ip_literals: bool,
}

/// What the rules say of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Refused(Reason),
}

impl AddressRules {
    /// The default ranges plus `refuse` (reason `configured`), with the exceptions `allow`.
    /// Errors name the entry that is wrong, by its place (`refuse[2]`).
    pub fn compile(
        refuse: &[String],
        allow: &[String],
        allow_ip_literals: bool,
    ) -> Result<AddressRules, Vec<String>> {
        let mut errors = Vec::new();
        let mut refused: Vec<(Network, Reason)> = DEFAULT_REFUSED
            .iter()
            .filter_map(|(cidr, reason)| Some((Network::parse(cidr).ok()?, *reason)))
            .collect();
        for (i, entry) in refuse.iter().enumerate() {
            match Network::parse(entry) {
                Ok(network) => refused.push((network, "configured")),
                Err(why) => errors.push(format!("refuse[{i}]: {why}")),
            }
        }
        let mut allowed = Vec::new();
        for (i, entry) in allow.iter().enumerate() {
            match Network::parse(entry) {
                Ok(network) => allowed.push(network),
                Err(why) => errors.push(format!("allow[{i}]: {why}")),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(AddressRules {
            refused,
            allowed,
            allow_ip_literals,
        })
    }

    /// The defaults alone.
    pub fn defaults() -> AddressRules {
        AddressRules::compile(&[], &[], false).unwrap_or(AddressRules {
            refused: Vec::new(),
            allowed: Vec::new(),
            allow_ip_literals: false,
        })
    }

    /// Whether the gateway may connect to `addr`. An exception allows an address within it,
    /// however it is refused; without one, the first refused range that holds it names why.
    pub fn check(&self, addr: IpAddr) -> Verdict {
        if self.allowed.iter().any(|network| network.contains(addr)) {
            return Verdict::Allowed;
        }
        self.refused
            .iter()
            .find(|(network, _)| network.contains(addr))
            .map_or(Verdict::Allowed, |(_, reason)| Verdict::Refused(reason))
    }

    /// These rules with more exceptions (a deployment's own, such as a local run's stand-ins).
    pub fn with_exceptions(&self, more: &[Network]) -> AddressRules {
        let mut rules = self.clone();
        rules.allowed.extend_from_slice(more);
        rules
    }

    /// Every refused range minus the exceptions, as CIDR ranges: the set a resolver filter (Envoy's
    /// `resolved_address_filter`, which takes ranges and no exceptions) drops, so that the proxy
    /// refuses exactly what [`AddressRules::check`] refuses.
    pub fn refused_ranges(&self) -> Vec<Network> {
        let mut ranges: Vec<Network> = self.refused.iter().map(|(network, _)| *network).collect();
        for hole in &self.allowed {
            ranges = ranges
                .iter()
                .flat_map(|network| network.without(hole))
                .collect();
        }
        ranges.sort();
        ranges.dedup();
        // Drop ranges inside another.
        let all = ranges.clone();
        ranges.retain(|inner| {
            !all.iter()
                .any(|outer| outer != inner && outer.len < inner.len && outer.contains(inner.addr))
        });
        ranges
    }
}

/// The guard of one configuration (`addressGuard`): the rules for every name, and the rules of
/// the names allowed into internal ranges on purpose (`allowNames`), each the general rules plus
/// its own exceptions.
#[derive(Debug, Clone)]
pub struct AddressGuard {
    rules: AddressRules,
    by_name: HostTable<AddressRules>,
    /// Every range some name is allowed into (`allowNames`), together.
    name_exceptions: Vec<Network>,
}

impl Default for AddressGuard {
    fn default() -> Self {
        AddressGuard {
            rules: AddressRules::defaults(),
            by_name: HostTable::default(),
            name_exceptions: Vec::new(),
        }
    }
}

impl AddressGuard {
    /// Compiles `addressGuard`; every problem names its field (`addressGuard.refuse[2]`,
    /// `addressGuard.allowNames["db.corp.example"][0]`).
    pub fn compile(config: &AddressGuardConfig) -> Result<AddressGuard, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let rules =
            match AddressRules::compile(&config.refuse, &config.allow, config.allow_ip_literals) {
                Ok(rules) => rules,
                Err(problems) => {
                    errors.extend(problems.into_iter().map(|problem| {
                        let (field, message) = problem.split_once(": ").unwrap_or(("", &problem));
                        ConfigError::new(format!("addressGuard.{field}"), message)
                    }));
                    AddressRules::defaults()
                }
            };
        let mut by_name = HostTable::default();
        let mut name_exceptions = Vec::new();
        for (name, ranges) in &config.allow_names {
            let path = format!("addressGuard.allowNames[\"{name}\"]");
            let pattern = match HostPattern::parse(name) {
                Ok(pattern) => pattern,
                Err(message) => {
                    errors.push(ConfigError::new(path, message));
                    continue;
                }
            };
            if ranges.is_empty() {
                errors.push(ConfigError::new(
                    path,
                    "names no range: list the addresses this name may reach",
                ));
                continue;
            }
            let mut own = rules.clone();
            for (i, entry) in ranges.iter().enumerate() {
                match Network::parse(entry) {
                    Ok(network) => {
                        own.allowed.push(network);
                        name_exceptions.push(network);
                    }
                    Err(message) => errors.push(ConfigError::new(format!("{path}[{i}]"), message)),
                }
            }
            by_name.entry(pattern, || own);
        }
        if errors.is_empty() {
            Ok(AddressGuard {
                rules,
                by_name,
                name_exceptions,
            })
        } else {
            Err(errors)
        }
    }

    /// Whether the gateway may connect to `addr` for `host` (canonical, lower case): the host's
    /// own exceptions if it has some, the general rules otherwise.
    pub fn check(&self, host: Option<&str>, addr: IpAddr) -> Verdict {
        host.and_then(|host| self.by_name.lookup(host))
            .unwrap_or(&self.rules)
            .check(addr)
    }

    /// Hosts written as an IP address may be decided on (`allowIpLiterals`).
    pub fn allows_ip_literals(&self) -> bool {
        self.rules.allow_ip_literals
    }

    /// Some names have exceptions of their own (`allowNames`).
    pub fn has_name_exceptions(&self) -> bool {
        !self.by_name.is_empty()
    }

    /// The general rules.
    pub fn rules(&self) -> &AddressRules {
        &self.rules
    }

    /// What a resolver filter that sees no names can refuse (Envoy's DNS cache): the general
    /// rules with a deployment's exceptions `more` and every range some name is allowed into,
    /// which the DNS guard refuses for the other names ([`AddressGuard::check`]).
    pub fn nameless_rules(&self, more: &[Network]) -> AddressRules {
        let mut exceptions = more.to_vec();
        exceptions.extend_from_slice(&self.name_exceptions);
        self.rules.with_exceptions(&exceptions)
    }
}

/// The address a host names when it is written as one, in any form the C library accepts:
/// IPv6 in brackets (or bare), IPv4 dotted with one to four parts, each decimal, octal (a leading
/// `0`) or hexadecimal (`0x`), the last part filling the remaining bytes; one trailing dot is
/// ignored. `None` for a name.
pub fn ip_literal(host: &str) -> Option<IpAddr> {
    // Checked for every request: a name with a letter no address form has (nearly every name)
    // is refused here, without the parsing below and its allocations.
    if !host
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || matches!(b, b'.' | b':' | b'[' | b']' | b'x' | b'X'))
    {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if host.contains(':') {
        return host.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    inet_aton(host).map(IpAddr::V4)
}

/// IPv4 as `inet_aton` reads it.
fn inet_aton(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let numbers: Vec<u64> = parts.iter().map(|p| c_number(p)).collect::<Option<_>>()?;
    let (last, first) = numbers.split_last()?;
    if first.iter().any(|&n| n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - first.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    let mut value: u64 = 0;
    for &n in first {
        value = (value << 8) | n;
    }
    value = (value << rest_bits) | last;
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

/// One part of an `inet_aton` address: decimal, octal with a leading `0`, hex with `0x`.
fn c_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is 0 for inet_aton.
        return (radix == 16).then_some(0);
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix)
        .ok()
        .filter(|n| *n <= u64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/data/addresses.json`: what the default rules say of each address, how each host
    /// reads as an address, and what ranges remain when exceptions are cut out.
    #[test]
    fn the_address_table_holds() {
        let table: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/data/addresses.json")).unwrap();
        let rules = AddressRules::defaults();
        for case in table["verdicts"].as_array().unwrap() {
            let addr: IpAddr = case["address"].as_str().unwrap().parse().unwrap();
            let expected = match case["refused"].as_str() {
                Some(reason) => Verdict::Refused(Box::leak(reason.to_owned().into_boxed_str())),
                None => Verdict::Allowed,
            };
            assert_eq!(rules.check(addr), expected, "{case}");
        }
        for case in table["literals"].as_array().unwrap() {
            let host = case["host"].as_str().unwrap();
            let expected = case["address"]
                .as_str()
                .map(|a| a.parse::<IpAddr>().unwrap());
            assert_eq!(ip_literal(host), expected, "{case}");
        }
        for case in table["exceptions"].as_array().unwrap() {
            let strings = |key: &str| -> Vec<String> {
                case[key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            };
            let rules =
                AddressRules::compile(&strings("refuse"), &strings("allow"), false).unwrap();
            for addr in strings("allowed") {
                assert_eq!(
                    rules.check(addr.parse().unwrap()),
                    Verdict::Allowed,
                    "{addr} in {case}"
                );
            }
            for addr in strings("refused") {
                let addr: IpAddr = addr.parse().unwrap();
                assert_ne!(rules.check(addr), Verdict::Allowed, "{addr} in {case}");
            }
            // The ranges a resolver filter gets refuse exactly the same addresses.
            let ranges = rules.refused_ranges();
            for addr in strings("allowed").iter().chain(&strings("refused")) {
                let addr: IpAddr = addr.parse().unwrap();
                assert_eq!(
                    ranges.iter().any(|r| r.contains(addr)),
                    rules.check(addr) != Verdict::Allowed,
                    "{addr}: {:?}",
                    ranges.iter().map(Network::to_string).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn bad_entries_are_named_by_their_place() {
        let errors = AddressRules::compile(
            &["10.96.0.0/12".into(), "10.0.0.0/33".into()],
            &["not-an-address".into()],
            false,
        )
        .unwrap_err();
        assert_eq!(
            errors,
            [
                "refuse[1]: '10.0.0.0/33' has an invalid prefix length (0..=32)",
                "allow[0]: 'not-an-address' is not an IP address or CIDR range"
            ]
        );
    }

    #[test]
    fn cutting_an_exception_out_of_a_range_leaves_one_range_per_bit() {
        let range = Network::parse("127.0.0.0/8").unwrap();
        let rest = range.without(&Network::parse("127.0.0.1").unwrap());
        assert_eq!(rest.len(), 24);
        assert!(
            rest.iter()
                .all(|r| !r.contains("127.0.0.1".parse().unwrap()))
        );
        assert!(
            rest.iter()
                .any(|r| r.contains("127.0.0.2".parse().unwrap()))
        );
        assert!(
            rest.iter()
                .any(|r| r.contains("127.255.255.255".parse().unwrap()))
        );
        assert!(
            rest.iter()
                .any(|r| r.contains("127.0.0.0".parse().unwrap()))
        );
    }

    #[test]
    fn a_name_allowed_into_an_internal_range_reaches_it_and_no_other_name_does() {
        let config: AddressGuardConfig = serde_json::from_str(
            r#"{"refuse": ["203.0.113.0/24"], "allow": ["127.0.0.1"],
                "allowNames": {"db.corp.example": ["10.1.2.0/24"], "*.lab.example": ["192.168.7.7"]}}"#,
        )
        .unwrap();
        let guard = AddressGuard::compile(&config).unwrap();
        let at = |host: &str, address: &str| guard.check(Some(host), address.parse().unwrap());
        assert_eq!(at("db.corp.example", "10.1.2.3"), Verdict::Allowed);
        assert_eq!(
            at("db.corp.example", "10.1.3.3"),
            Verdict::Refused("private")
        );
        assert_eq!(
            at("other.corp.example", "10.1.2.3"),
            Verdict::Refused("private")
        );
        assert_eq!(at("x.lab.example", "192.168.7.7"), Verdict::Allowed);
        assert_eq!(
            at("lab.example", "192.168.7.7"),
            Verdict::Refused("private")
        );
        // The general exception and the configured range hold for every name.
        assert_eq!(at("db.corp.example", "127.0.0.1"), Verdict::Allowed);
        assert_eq!(at("anything.example", "127.0.0.1"), Verdict::Allowed);
        assert_eq!(
            at("db.corp.example", "203.0.113.9"),
            Verdict::Refused("configured")
        );
        assert_eq!(
            guard.check(None, "169.254.169.254".parse().unwrap()),
            Verdict::Refused("link_local")
        );
    }

    /// The README's table of what the guard refuses is this table.
    #[test]
    fn the_readme_lists_the_refused_ranges() {
        let rows: Vec<String> = DEFAULT_REFUSED
            .iter()
            .map(|(range, reason)| format!("| `{range}` | `{reason}` |"))
            .collect();
        assert_eq!(
            crate::stripped::readme_table_rows("### The SSRF guard"),
            rows
        );
    }
}
