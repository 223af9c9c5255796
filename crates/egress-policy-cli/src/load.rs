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
    let plugins: Vec<Placed> = documents.iter().flat_map(plugin_configs).collect();
    if !plugins.is_empty() {
        return Ok(plugins);
    }
    match documents.len() {
        1 => Ok(vec![(String::new(), false, Ok(documents.swap_remove(0)))]),
        0 => Err(ConfigError::new("", "the file holds no configuration").into()),
        n => Err(ConfigError::new(
            "",
            format!(
                "{n} YAML documents and none is a WasmPlugin, TrafficExtension, EnvoyExtensionPolicy or EnvoyFilter of the filter; expected one configuration"
            ),
        )
        .into()),
    }
}

/// The plugin configurations a document carries: a WasmPlugin's (`spec.pluginConfig`), a
/// TrafficExtension's (`spec.wasm.pluginConfig`), an Envoy Gateway EnvoyExtensionPolicy's
/// (`spec.dynamicModule[i].config`, the native build) and an Istio EnvoyFilter's that inserts the
/// native module (`filter_config.value`, the configuration as a JSON string); none for any other
/// document.
fn plugin_configs(document: &serde_json::Value) -> Vec<Placed> {
    let Some(kind) = document.get("kind").and_then(|k| k.as_str()) else {
        return Vec::new();
    };
    let spec = document.get("spec");
    let name = document
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("?");
    let place = format!("{kind}/{name}");
    let missing = |path: &str, what: &str| -> Result<serde_json::Value, ConfigErrors> {
        Err(ConfigError::new(path, format!("the {kind} has no {what}")).into())
    };
    let items = |field: &str| {
        spec.and_then(|s| s.get(field))
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    match kind {
        "WasmPlugin" | "TrafficExtension" => {
            let (module, path) = if kind == "WasmPlugin" {
                (spec, "spec.pluginConfig")
            } else {
                (spec.and_then(|s| s.get("wasm")), "spec.wasm.pluginConfig")
            };
            let network =
                module.and_then(|m| m.get("type")).and_then(|t| t.as_str()) == Some("NETWORK");
            let config = module
                .and_then(|m| m.get("pluginConfig"))
                .cloned()
                .map_or_else(|| missing(path, "pluginConfig"), Ok);
            vec![(place, network, config)]
        }
        "EnvoyExtensionPolicy" => items("dynamicModule")
            .iter()
            .enumerate()
            .map(|(i, module)| {
                let path = format!("spec.dynamicModule[{i}].config");
                let config = module
                    .get("config")
                    .cloned()
                    .map_or_else(|| missing(&path, "config"), Ok);
                (format!("{place}.dynamicModule[{i}]"), false, config)
            })
            .collect(),
        "EnvoyFilter" => items("configPatches")
            .iter()
            .enumerate()
            .filter_map(|(i, patch)| {
                let typed = patch.pointer("/patch/value/typed_config")?;
                let kind = typed.get("@type")?.as_str()?;
                let network = kind.ends_with(".dynamic_modules.v3.DynamicModuleNetworkFilter");
                if !network && !kind.ends_with(".dynamic_modules.v3.DynamicModuleFilter") {
                    return None;
                }
                let path =
                    format!("spec.configPatches[{i}].patch.value.typed_config.filter_config.value");
                let config = match typed
                    .pointer("/filter_config/value")
                    .and_then(|v| v.as_str())
                {
                    None => missing(&path, "filter_config.value"),
                    Some(json) => serde_json::from_str(json).map_err(|e| {
                        ConfigError::new(path.as_str(), format!("not JSON: {e}")).into()
                    }),
                };
                Some((format!("{place}.configPatches[{i}]"), network, config))
            })
            .collect(),
        _ => Vec::new(),
    }
}
