//! VirtualService URI routes at the gateway as the configuration's routes.

use egress_policy_core::config::{HttpMatchConfig, RouteConfig};
use serde_json::{Map, Value};

use super::Report;
use super::resources::Resources;

/// VirtualService HTTP routes at a gateway that match by URI: the only hosts' requests that
/// reach the destination are those the matches admit, as `routes` does. Matches at the
/// sidecars (`mesh`) route to the gateway and decide nothing.
pub(super) fn virtual_service_routes(
    resources: &Resources,
    report: &mut Report,
) -> Vec<RouteConfig> {
    let mut routes = Vec::new();
    for service in resources.all().filter(|r| r.kind == "VirtualService") {
        let at = service.at();
        let mut matches = Vec::new();
        let mut unrestricted = false;
        for http in service.spec["http"].as_array().into_iter().flatten() {
            for m in http["match"].as_array().into_iter().flatten() {
                let at_gateway = m["gateways"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g != "mesh"));
                if !at_gateway {
                    continue;
                }
                let mut converted = Map::new();
                for (key, value) in m.as_object().into_iter().flatten() {
                    match key.as_str() {
                        "uri" | "method" | "headers" => {
                            converted.insert(key.clone(), value.clone());
                        }
                        // Where the match applies, not what it admits.
                        "gateways" | "port" | "name" => {}
                        other => report.errors.push(format!(
                            "{at}: a gateway match on {other} is not translated: a route without it would admit more than the VirtualService did"
                        )),
                    }
                }
                if converted.is_empty() {
                    unrestricted = true;
                } else {
                    match serde_json::from_value::<HttpMatchConfig>(Value::Object(converted)) {
                        Ok(converted) => matches.push(converted),
                        Err(e) => report.errors.push(format!(
                            "{at}: a gateway match is not translated ({e}): a route without it would admit more than the VirtualService did"
                        )),
                    }
                }
            }
        }
        if unrestricted {
            report.notes.push(format!(
                "{at}: a gateway route admits every request: no route is written for {}",
                service.spec["hosts"]
            ));
        } else if !matches.is_empty() {
            match serde_json::from_value::<Vec<String>>(service.spec["hosts"].clone()) {
                Ok(hosts) => routes.push(RouteConfig {
                    name: Some(service.name.clone()),
                    hosts,
                    match_: matches,
                }),
                Err(_) => report.errors.push(format!(
                    "{at}: hosts must be a list of host names: the route is not translated, and without it the hosts would admit every request"
                )),
            }
        } else {
            report.notes.push(format!(
                "{at}: no gateway route: routing only, nothing to translate"
            ));
        }
    }
    routes
}
