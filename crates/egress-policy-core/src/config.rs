//! Wire types of the plugin configuration (README: Configuration reference).
//!
//! These types only describe the JSON shape; every semantic check (expressions, regexes, list
//! names, host patterns) happens in [`crate::policy::Policy::compile`], which reports each problem
//! with the path of the field that holds it. Unknown fields are rejected everywhere so that a typo
//! (`blackList`, `mach`) cannot silently turn a rule off.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrors};

/// The plugin configuration: the object in Envoy's `configuration` or the WasmPlugin's
/// `pluginConfig`. Every field is optional (`Default`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginConfig {
    /// Status of the local reply to a denied request (200–599); the reply carries the deciding rule,
    /// list or route in Envoy's response code details, as the source documents' VirtualService and
    /// listchecker answered. Default: `404`.
    #[cfg_attr(test, schemars(range(min = 200, max = 599)))]
    pub deny_status: u16,
    /// Body of that reply. Default: empty.
    pub deny_body: Option<String>,
    /// Headers added to that reply (`{"x-egress-policy": "denied"}`). Default: none.
    pub deny_headers: BTreeMap<String, String>,
    /// How log entries are written (Mixer `logentry` and `stdio`). Default: the source documents'
    /// entry.
    pub log: LogConfig,
    /// A list (Mixer `listchecker` + `listentry`), referenced by `rules[].check`; NAME: letters,
    /// digits, `.`, `_`, `-`. Default: none.
    pub lists: BTreeMap<String, ListConfig>,
    /// Evaluated in order; every rule whose `match` holds fires (Mixer semantics). Default: `[]`.
    pub rules: Vec<RuleConfig>,
    /// VirtualService-style: a host named here reaches only what its routes allow. Default: `[]`.
    pub routes: Vec<RouteConfig>,
    /// Where the caller's identity comes from. Default: the mTLS peer certificate, in `cluster.local`.
    pub identity: IdentityConfig,
    /// Host names or wildcards (`*.es.example.com`) to which GET, HEAD, OPTIONS and TRACE may carry a
    /// body (Elasticsearch's `GET _search` needs it); to every other host such a request is refused
    /// with 400 (see [Security](security.md#security)): a destination that ignores the body would read it as a
    /// second request the policy never saw. Default: none.
    pub allow_safe_method_bodies: Vec<String>,
    /// The SSRF guard (see [Security](security.md#security)): the addresses the gateway never connects to,
    /// whatever name leads there. Default: the internal ranges (loopback, RFC 1918, link-local,
    /// CGNAT, unique-local, IPv4-mapped and -compatible IPv6, NAT64, multicast, broadcast,
    /// reserved) refused, no exception, IP literal hosts refused.
    pub address_guard: AddressGuardConfig,
}

/// What the SSRF guard refuses beyond its default ranges, and the exceptions an operator makes on
/// purpose.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AddressGuardConfig {
    /// More ranges to refuse (CIDR, or one address), such as the mesh's pod and service ranges;
    /// reason `configured`. Default: none.
    pub refuse: Vec<String>,
    /// Ranges (CIDR, or one address) the gateway may connect to for any name, even inside a
    /// refused range. Default: none.
    pub allow: Vec<String>,
    /// Host name or wildcard (`db.corp.example`, `*.corp.example`) → ranges that name alone may
    /// resolve to and be connected to: an internal destination allowed on purpose. Default: none.
    pub allow_names: BTreeMap<String, Vec<String>>,
    /// Hosts written as an IP address (`203.0.113.7`, `[2001:db8::1]`, and the decimal, octal and
    /// hexadecimal forms the C library reads) are decided and connected to; their address is still
    /// checked. Default: `false` (refused: a policy names destinations by name).
    pub allow_ip_literals: bool,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            deny_status: default_deny_status(),
            deny_body: None,
            deny_headers: BTreeMap::new(),
            log: LogConfig::default(),
            lists: BTreeMap::new(),
            rules: Vec::new(),
            routes: Vec::new(),
            identity: IdentityConfig::default(),
            allow_safe_method_bodies: Vec::new(),
            address_guard: AddressGuardConfig::default(),
        }
    }
}

/// Sources of `source.namespace`, `source.serviceAccount`, `source.principal`, `source.user`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IdentityConfig {
    /// The mesh's trust domain: a certificate's SPIFFE ID from another gives no identity. Default:
    /// `cluster.local`.
    #[serde(default = "default_trust_domain")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub trust_domain: String,
    /// A header trusted as the caller's SPIFFE ID when there is no client certificate; only for setups
    /// without a mesh, where a proxy in front sets it and strips it from clients; `egress-policy check`
    /// warns. Default: none.
    #[serde(default)]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub trusted_header: Option<String>,
}

impl Default for IdentityConfig {
    /// The mesh's certificates only, from Istio's default trust domain.
    fn default() -> Self {
        let trust_domain = default_trust_domain();
        Self {
            trust_domain,
            trusted_header: None,
        }
    }
}

fn default_trust_domain() -> String {
    "cluster.local".to_owned()
}

fn default_deny_status() -> u16 {
    404
}

/// The log entry every logging rule writes (Mixer `logentry` + `stdio` with `outputAsJson`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LogConfig {
    /// Value of every entry's `instance` field. Default: `egress-access`.
    #[serde(default = "default_instance")]
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub instance: String,
    /// Output field → expression (Mixer `variables`); written after `level`, `time`, `instance`, in
    /// name order; may use `response.*`; an absent value without a default is written as `null`.
    /// Default: the seven fields of the source documents (below).
    #[serde(default = "default_log_fields")]
    pub fields: BTreeMap<String, String>,
    /// A log stream writes a signed checkpoint after this many lines since its last one (README:
    /// Security, "Logs as evidence"). Default: 1000.
    #[serde(default = "default_checkpoint_lines")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub checkpoint_lines: u32,
    /// …or after the first line written this long after its last checkpoint. Default: `10s`.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            instance: default_instance(),
            fields: default_log_fields(),
            checkpoint_lines: default_checkpoint_lines(),
            checkpoint_interval: default_checkpoint_interval(),
        }
    }
}

fn default_checkpoint_lines() -> u32 {
    1_000
}

fn default_checkpoint_interval() -> String {
    "10s".to_owned()
}

fn default_instance() -> String {
    "egress-access".to_owned()
}

fn default_log_fields() -> BTreeMap<String, String> {
    [
        ("destination", r#"request.host | "unknown""#),
        ("path", r#"request.path | "unknown""#),
        (
            "source",
            r#"source.labels["app"] | source.serviceAccount | "unknown""#,
        ),
        ("sourceNamespace", r#"source.namespace | "unknown""#),
        ("user", r#"source.user | "unknown""#),
        ("responseCode", "response.code | 0"),
        ("responseSize", "response.size | 0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A list the rules can check a value against (Mixer `listchecker` with `overrides`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListConfig {
    /// String expression looked up in the list (Mixer `listentry.value`); must not use `response.*`.
    /// Required.
    pub value: String,
    /// The entries (Mixer `overrides`). Default: `[]`.
    #[serde(default)]
    pub entries: Vec<String>,
    /// `false`: the value must be listed; `true`: it must not be. Default: `false`.
    #[serde(default)]
    pub blacklist: bool,
    /// `STRINGS` (exact), `CASE_INSENSITIVE_STRINGS`, `REGEX` (must match the whole value), `GLOB` (`*`
    /// any run, `?` one character; `*.example.com` matches any subdomain, at least one label deep, as a
    /// route host does; `/sport*` is a raw string prefix), `IP_ADDRESSES` (addresses and CIDR ranges,
    /// IPv4 and IPv6), `PATH_PREFIXES` (whole segments: `/sport` matches `/sport` and `/sport/x`, not
    /// `/sports`; a trailing `/` changes nothing). Default: `STRINGS`.
    #[serde(default)]
    pub entry_type: EntryType,
    /// Remote entries (Mixer `providerUrl`), see [Remote lists](#remote-lists). Default: none.
    #[serde(default)]
    pub provider: Option<ProviderConfig>,
    /// A failed check of this list is logged and counted, not enforced (see [Rolling out a
    /// rule](#rolling-out-a-rule-dry-run-first)). Default: `false`.
    #[serde(default)]
    pub dry_run: bool,
}

/// A remote source of list entries: plain text (one entry per line, `#` comments) or a JSON array
/// of strings, fetched through an Envoy cluster when the plugin starts and every
/// `refreshInterval`. `entries` (the static overrides) always apply as well.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderConfig {
    /// The Envoy cluster that serves the list (`envoy/gateway.yaml` has `egress_policy_lists`, pointed
    /// at the local `scripts/list-server`). Required.
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub cluster: String,
    /// The path to GET. Required.
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub path: String,
    /// The request's `:authority`. Default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// How often to fetch (`500ms`, `30s`, `5m`, `1h`, `1m30s`, `1.5s`). Default: `60s`.
    #[serde(default = "default_refresh_interval")]
    #[cfg_attr(test, schemars(length(min = 2)))]
    pub refresh_interval: String,
    /// How long the last good list serves when fetches fail; at least `refreshInterval`. Default:
    /// `300s`.
    #[serde(default = "default_ttl")]
    #[cfg_attr(test, schemars(length(min = 2)))]
    pub ttl: String,
    /// Timeout of one fetch. Default: `5s`.
    #[serde(default = "default_fetch_timeout")]
    #[cfg_attr(test, schemars(length(min = 2)))]
    pub timeout: String,
    /// While no good list is available (before the first successful fetch, and after `ttl` without one)
    /// and the static entries do not decide: `deny` fails the check, `allow` passes it. Default:
    /// `deny`.
    #[serde(default)]
    pub on_error: OnError,
    /// Larger lists are refused. Default: `100000`.
    #[serde(default = "default_max_entries")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub max_entries: u32,
    /// Larger bodies are refused without being read. Default: `4194304`.
    #[serde(default = "default_max_bytes")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub max_bytes: u32,
    /// `false`: a body with no entries (empty, or only comments) is a failed fetch, since a provider
    /// that answers nothing is more likely broken than deliberate; `true`: it empties the remote part
    /// of the list. Default: `false`.
    #[serde(default)]
    pub allow_empty: bool,
}

/// What a list check does without a usable remote list.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Fail closed: the check fails.
    #[default]
    Deny,
    /// Fail open: the check passes.
    Allow,
}

fn default_refresh_interval() -> String {
    "60s".to_owned()
}

fn default_ttl() -> String {
    "300s".to_owned()
}

fn default_fetch_timeout() -> String {
    "5s".to_owned()
}

fn default_max_entries() -> u32 {
    100_000
}

fn default_max_bytes() -> u32 {
    4 * 1024 * 1024
}

/// A rule's own local reply, overriding `denyStatus`, `denyBody` and `denyHeaders` field by field.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DenyReplyConfig {
    /// Status (200..=599). Default: `denyStatus`.
    #[cfg_attr(test, schemars(range(min = 200, max = 599)))]
    pub status: Option<u16>,
    /// Headers, added to `denyHeaders` (a name given here wins). Default: none.
    pub headers: BTreeMap<String, String>,
    /// Body. Default: `denyBody`.
    pub body: Option<String>,
}

/// How list entries are compared with the looked-up value.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryType {
    /// Exact, case-sensitive string equality.
    #[default]
    Strings,
    /// String equality ignoring case.
    CaseInsensitiveStrings,
    /// Regular expressions (RE2 syntax) that must match the whole value.
    Regex,
    /// Shell-style globs: `*` any run of characters, `?` one character. `*.example.com` is
    /// indexed as a host suffix.
    Glob,
    /// IP addresses and CIDR ranges, IPv4 or IPv6.
    IpAddresses,
    /// Path prefixes that match whole segments: `/sport` matches `/sport` and `/sport/x`, not
    /// `/sports`; a trailing `/` is ignored and `/` matches every path. For a raw string prefix
    /// use a `GLOB` like `/sport*`.
    PathPrefixes,
}

/// Log level of a rule's entries (Mixer `stdio` `severity_levels`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Routine access.
    Info,
    /// Suspicious access.
    Warning,
    /// Forbidden access: what operators search for.
    Error,
}

impl LogLevel {
    /// The value of the `level` field.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

/// A Mixer-style rule: when `match` holds, write a log entry and/or check lists.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleConfig {
    /// Unique; letters, digits, `.`, `_`, `-`; appears in the deny details. Required.
    #[cfg_attr(test, schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$")))]
    pub name: String,
    /// Boolean expression over request and source attributes. Default: always.
    #[serde(default, rename = "match")]
    pub match_: Option<String>,
    /// `info`, `warning` or `error`: write an entry at that level. Default: none.
    #[serde(default)]
    pub log: Option<LogLevel>,
    /// Lists to check; the first failing check denies. Default: `[]`.
    #[serde(default)]
    pub check: Vec<String>,
    /// The rule's failed checks are logged (`wouldDeny`) and counted, not enforced. Default: `false`.
    #[serde(default)]
    pub dry_run: bool,
    /// `{"status", "body", "headers"}`: this rule's local reply, each field overriding `denyStatus`,
    /// `denyBody`, `denyHeaders` (headers are merged). Default: the global reply.
    #[serde(default)]
    pub deny: Option<DenyReplyConfig>,
}

/// A VirtualService-style route: requests for `hosts` must match one of `match`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteConfig {
    /// Used in the deny details. Default: `routes[N]`.
    #[serde(default)]
    #[cfg_attr(test, schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,128}$")))]
    pub name: Option<String>,
    /// Host names or wildcards (`*.cnn.com`, `*`); no ports. Required.
    #[cfg_attr(test, schemars(length(min = 1), inner(length(min = 1))))]
    pub hosts: Vec<String>,
    /// Any one matching admits; within one, all conditions must hold. Default: `[]` (allow all).
    #[serde(default, rename = "match")]
    pub match_: Vec<HttpMatchConfig>,
}

/// One VirtualService `HTTPMatchRequest`: all conditions given must hold.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpMatchConfig {
    /// `{"exact"\|"prefix"\|"rawPrefix"\|"regex": "..."}` on the decoded path without query; `prefix`
    /// matches whole segments (`/sport` admits `/sport/x`, not `/sports`) with the meaning of a
    /// `PATH_PREFIXES` entry, `rawPrefix` any string prefix; `regex` must match the whole path, as
    /// Envoy's `safe_regex`. Default: any.
    pub uri: Option<StringMatchConfig>,
    /// The same, on the method (`prefix` = `rawPrefix` there). Default: any.
    pub method: Option<StringMatchConfig>,
    /// The same, on a request header (name case-insensitive); an absent header fails. Default: none.
    pub headers: BTreeMap<String, StringMatchConfig>,
}

/// Exactly one of `exact`, `prefix`, `rawPrefix`, `regex` (VirtualService `StringMatch`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StringMatchConfig {
    /// The value must equal this string.
    pub exact: Option<String>,
    /// The value must start with this string. On `uri` the prefix matches whole path segments:
    /// `/sport` admits `/sport` and `/sport/football`, not `/sports` or `/sportpolitics`.
    pub prefix: Option<String>,
    /// The value must start with this string, segments or not (`/sport` admits `/sports`).
    pub raw_prefix: Option<String>,
    /// The value must match this regular expression in full (RE2 syntax, as Envoy's safe_regex).
    pub regex: Option<String>,
}

/// A fingerprint of configuration bytes (32-bit FNV-1a): the filter publishes the one of the
/// configuration in force as the gauge `egress_policy.config_fingerprint`, and `scripts/reload`
/// computes the same over a file to learn whether Envoy serves it.
pub fn fingerprint(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

impl PluginConfig {
    /// The configuration as JSON without what it leaves at its defaults (absent, `false`,
    /// empty, or a top-level section equal to its default): what a person would write, and
    /// what `egress-policy convert` prints.
    pub fn to_json_without_defaults(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        let defaults = serde_json::to_value(PluginConfig::default()).unwrap_or_default();
        if let (Some(fields), Some(defaults)) = (value.as_object_mut(), defaults.as_object()) {
            fields.retain(|name, field| defaults.get(name) != Some(field));
        }
        prune(&mut value);
        value
    }

    /// Parses plugin configuration JSON. Errors name the field path (`rules[1].mach`) and, for
    /// malformed JSON, the line and column.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigErrors> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(
                ConfigError::new("", "configuration is empty; expected a JSON object").into(),
            );
        }
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(b'[') => return Err(not_an_object("an array")),
            _ => {
                return Err(ConfigError::new("", "the configuration must be a JSON object").into());
            }
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let config: PluginConfig = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(path_or_root(&path), e.into_inner().to_string())
        })?;
        de.end()
            .map_err(|e| ConfigError::new("", format!("trailing data after the object: {e}")))?;
        Ok(config)
    }

    /// Parses an already decoded JSON value (YAML documents and WasmPlugin manifests arrive so).
    pub fn from_value(value: serde_json::Value) -> Result<Self, ConfigErrors> {
        let kind = match &value {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Array(_) => Some("an array"),
            serde_json::Value::Null => Some("nothing"),
            serde_json::Value::String(_) => Some("a string"),
            _ => Some("a scalar"),
        };
        if let Some(kind) = kind {
            return Err(not_an_object(kind));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::new(path_or_root(&path), e.into_inner().to_string()).into()
        })
    }
}

/// Removes every `null`, `false`, `[]` and `{}` field, inside out: the defaults of every field
/// that has no other.
fn prune(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(fields) => {
            for field in fields.values_mut() {
                prune(field);
            }
            fields.retain(|_, field| match field {
                Value::Null | Value::Bool(false) => false,
                Value::Array(items) => !items.is_empty(),
                Value::Object(inner) => !inner.is_empty(),
                _ => true,
            });
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn not_an_object(found: &str) -> ConfigErrors {
    ConfigError::new(
        "",
        format!("the configuration must be a JSON object, found {found}"),
    )
    .into()
}

fn path_or_root(path: &str) -> &str {
    if path == "." { "" } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_fnv1a_32() {
        assert_eq!(fingerprint(b""), 0x811c_9dc5);
        assert_eq!(fingerprint(b"a"), 0xe40c_292c);
        assert_eq!(fingerprint(b"foobar"), 0xbf9c_f968);
    }
}

#[cfg(test)]
mod schema_tests;
