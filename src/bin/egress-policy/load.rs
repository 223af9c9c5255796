//! Reading configurations the way users hold them: JSON, YAML, or an Istio WasmPlugin manifest.

use std::io::Read;

use egress_policy::core::config::PluginConfig;
use egress_policy::core::error::{ConfigError, ConfigErrors};
use egress_policy::core::policy::Policy;

/// Reads a configuration file (JSON, YAML or a WasmPlugin manifest) and compiles it.
pub fn load(file: &str) -> Result<Policy, ConfigErrors> {
    let text = read(file).map_err(|e| ConfigError::new("", format!("cannot read: {e}")))?;
    let looks_like_json = text.trim_start().starts_with('{') || text.trim_start().starts_with('[');
    let config = if looks_like_json {
        PluginConfig::from_json(text.as_bytes())?
    } else {
        PluginConfig::from_value(from_yaml(&text)?)?
    };
    Policy::compile(&config)
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

/// Parses YAML; from a WasmPlugin manifest (possibly among other documents) takes
/// `spec.pluginConfig`.
fn from_yaml(text: &str) -> Result<serde_json::Value, ConfigErrors> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let value: serde_json::Value = serde::Deserialize::deserialize(document)
            .map_err(|e| ConfigError::new("", format!("invalid YAML: {e}")))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let is_wasm_plugin =
        |v: &serde_json::Value| v.get("kind").and_then(|k| k.as_str()) == Some("WasmPlugin");
    if let Some(plugin) = documents.iter().find(|v| is_wasm_plugin(v)) {
        return plugin
            .get("spec")
            .and_then(|spec| spec.get("pluginConfig"))
            .cloned()
            .ok_or_else(|| {
                ConfigError::new("spec.pluginConfig", "the WasmPlugin has no pluginConfig").into()
            });
    }
    match documents.len() {
        1 => Ok(documents.swap_remove(0)),
        0 => Err(ConfigError::new("", "the file holds no configuration").into()),
        n => Err(ConfigError::new(
            "",
            format!("{n} YAML documents and none is a WasmPlugin; expected one configuration"),
        )
        .into()),
    }
}
