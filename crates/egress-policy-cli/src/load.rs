//! Reading configurations the way users hold them: JSON, YAML, or Istio manifests that carry the
//! plugin configuration (`WasmPlugin` `spec.pluginConfig`, `TrafficExtension`
//! `spec.wasm.pluginConfig`).

use std::io::Read;

use egress_policy_core::config::PluginConfig;
use egress_policy_core::error::{ConfigError, ConfigErrors};
use egress_policy_core::policy::Policy;

/// One plugin configuration found in a file: where it is (empty for a bare configuration, else
/// `WasmPlugin/NAME`), and what compiling it gave.
pub struct Found {
    pub place: String,
    /// A plugin of `type: NETWORK` (the network filter, which decides connections).
    pub network: bool,
    pub policy: Result<Policy, ConfigErrors>,
}

/// Reads a configuration file (JSON, YAML, or manifests) and compiles every plugin configuration
/// in it. A file that holds none, or cannot be read or parsed, is one error.
pub fn load_all(file: &str) -> Vec<Found> {
    let text = match read(file) {
        Ok(text) => text,
        Err(e) => {
            return vec![Found {
                place: String::new(),
                network: false,
                policy: Err(ConfigError::new("", format!("cannot read: {e}")).into()),
            }];
        }
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        // The filter's own parser, so that a JSON error reads as it would in Envoy's log.
        return vec![Found {
            place: String::new(),
            network: false,
            policy: PluginConfig::from_json(text.as_bytes()).and_then(|c| Policy::compile(&c)),
        }];
    }
    let configs = match configurations(&text) {
        Ok(configs) => configs,
        Err(errors) => {
            return vec![Found {
                place: String::new(),
                network: false,
                policy: Err(errors),
            }];
        }
    };
    configs
        .into_iter()
        .map(|(place, network, value)| Found {
            place,
            network,
            policy: value.and_then(|value| Policy::compile(&PluginConfig::from_value(value)?)),
        })
        .collect()
}

/// Reads a file that must hold exactly one plugin configuration for the filter that decides
/// connections (`network`) or requests, and compiles it: a manifest with both filters
/// (`manifests/wasmplugin.yaml`) gives the one asked for.
pub fn load(file: &str, network: bool) -> Result<Policy, ConfigErrors> {
    let mut found = load_all(file);
    if found.len() > 1 {
        found.retain(|f| f.network == network);
    }
    match found.len() {
        1 => found.swap_remove(0).policy,
        n => {
            let places: Vec<String> = found.into_iter().map(|f| f.place).collect();
            Err(ConfigError::new(
                "",
                format!(
                    "{n} plugin configurations ({}); expected one: pass a file that holds one",
                    places.join(", ")
                ),
            )
            .into())
        }
    }
}

pub fn read(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// A configuration as found in a file: its place, whether it is the network filter's, and the
/// value (or why it has none).
type Placed = (String, bool, Result<serde_json::Value, ConfigErrors>);

/// The plugin configurations of a YAML file: a bare configuration, or the configuration of
/// every WasmPlugin and TrafficExtension among its documents.
fn configurations(text: &str) -> Result<Vec<Placed>, ConfigErrors> {
    let mut documents = crate::yaml::documents(text).map_err(|e| ConfigError::new("", e))?;
    let plugins: Vec<Placed> = documents.iter().filter_map(plugin_config).collect();
    if !plugins.is_empty() {
        return Ok(plugins);
    }
    match documents.len() {
        1 => Ok(vec![(String::new(), false, Ok(documents.swap_remove(0)))]),
        0 => Err(ConfigError::new("", "the file holds no configuration").into()),
        n => Err(ConfigError::new(
            "",
            format!(
                "{n} YAML documents and none is a WasmPlugin or TrafficExtension; expected one configuration"
            ),
        )
        .into()),
    }
}

/// The plugin configuration of a WasmPlugin (`spec.pluginConfig`) or a TrafficExtension
/// (`spec.wasm.pluginConfig`); None for any other document.
fn plugin_config(document: &serde_json::Value) -> Option<Placed> {
    let kind = document.get("kind").and_then(|k| k.as_str())?;
    let spec = document.get("spec");
    let (module, path) = match kind {
        "WasmPlugin" => (spec, "spec.pluginConfig"),
        "TrafficExtension" => (spec.and_then(|s| s.get("wasm")), "spec.wasm.pluginConfig"),
        _ => return None,
    };
    let config = module.and_then(|m| m.get("pluginConfig"));
    let network = module.and_then(|m| m.get("type")).and_then(|t| t.as_str()) == Some("NETWORK");
    let name = document
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("?");
    let place = format!("{kind}/{name}");
    let config = config
        .cloned()
        .ok_or_else(|| ConfigError::new(path, format!("the {kind} has no pluginConfig")).into());
    Some((place, network, config))
}
