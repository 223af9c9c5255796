//! Mixer's listcheckers and listentries as the configuration's lists.

use egress_policy_core::config::{EntryType, ListConfig};
use serde_json::Value;

use super::resources::Component;
use super::{Report, rename_attributes};

/// A listentry's value, with `request.path` as `request.url_path`: Mixer's `request.path`
/// carries the query string, so a blacklisted `/politics` was reached as `/politics?x`, and a
/// whitelisted `/sport` refused as `/sport?x`. The list is about the path (README: The
/// reference scenario).
pub(super) fn listentry_value(instance: &Component) -> String {
    let value = instance.params["value"].as_str().unwrap_or_default();
    rename_attributes(value, &[("request.path", "request.url_path")])
}

/// A listchecker as a list; `None` (with an error) when its parameters are not what Mixer
/// accepted.
pub(super) fn list_config(
    handler: &Component,
    instance: &Component,
    report: &mut Report,
) -> Option<ListConfig> {
    let at = handler.resource.at();
    let params = handler.params;
    let value = listentry_value(instance);
    let written = instance.params["value"].as_str().unwrap_or_default();
    if value != written {
        report.notes.push(format!(
            "{at}: value {written} is checked as {value}: Mixer's request.path carries the query, which let /politics?x past a blacklist of /politics"
        ));
    }
    let mut invalid = |field: &str, expected: &str| {
        report.errors.push(format!(
            "{at}: {field} must be {expected}: the list is not translated"
        ));
    };
    let entries = match params.get("overrides") {
        None => Vec::new(),
        Some(overrides) => match serde_json::from_value(overrides.clone()) {
            Ok(entries) => entries,
            Err(_) => {
                invalid("overrides", "a list of strings");
                return None;
            }
        },
    };
    let blacklist = match params.get("blacklist") {
        None => false,
        Some(Value::Bool(blacklist)) => *blacklist,
        Some(_) => {
            invalid("blacklist", "true or false");
            return None;
        }
    };
    let entry_type = params
        .get("entryType")
        .or_else(|| params.get("entry_type"))
        .cloned()
        .map_or(Ok(EntryType::default()), serde_json::from_value);
    let Ok(entry_type) = entry_type else {
        invalid(
            "entryType",
            "STRINGS, CASE_INSENSITIVE_STRINGS, REGEX, GLOB, IP_ADDRESSES or PATH_PREFIXES",
        );
        return None;
    };
    note_provider_params(handler, report);
    Some(ListConfig {
        value,
        entries,
        blacklist,
        entry_type,
        provider: None,
        dry_run: false,
    })
}

/// A listchecker's remote provider: an error for its URL (the list would hold only the
/// overrides without it), notes for its timing.
fn note_provider_params(handler: &Component, report: &mut Report) {
    let at = handler.resource.at();
    let params = handler.params;
    if let Some(url) = params
        .get("providerUrl")
        .or_else(|| params.get("provider_url"))
        .and_then(Value::as_str)
    {
        // Without its provider the list would hold only the overrides: a remote blacklist would
        // let everything through.
        report.errors.push(format!(
            "{at}: providerUrl {url} is not translated: a remote list is fetched through an Envoy cluster of the gateway; write lists.{}.provider (cluster, path: README, Remote lists on Istio) in the converted configuration, and remove providerUrl here",
            handler.resource.name
        ));
    }
    for ignored in [
        "refreshInterval",
        "ttl",
        "cachingInterval",
        "cachingUseCount",
    ] {
        if params.get(ignored).is_some() {
            report.notes.push(format!(
                "{at}: {ignored} is not translated: it belongs to the remote provider (lists.NAME.provider)"
            ));
        }
    }
}
