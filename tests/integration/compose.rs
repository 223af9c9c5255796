//! `docker-compose.yaml` without a Docker engine (README: Local run with Docker Compose): the file
//! against the compose specification's JSON schema (as Debian's docker-compose package ships
//! it) and that tool's own `config` check; `scripts/compose` renders through scripts/run's code;
//! and the rendered gateway, with the containers' mounts emulated by rewriting their paths,
//! started in a real Envoy that loads both filters and decides.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{TempDir, curl, http_get, listener_port, repo, start_envoy};

/// Where Debian's docker-compose package (scripts/test installs it) keeps the compose
/// specification's schema.
const COMPOSE_SPEC: &str = "/usr/lib/python3/dist-packages/compose/config/compose_spec.json";

fn compose() -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(repo().join("docker-compose.yaml")).unwrap())
        .unwrap()
}

#[test]
fn the_compose_file_is_valid_under_the_compose_specification() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(COMPOSE_SPEC)
            .expect("Debian's docker-compose package (scripts/test installs it)"),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&compose())
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let config = Command::new("docker-compose")
        .current_dir(repo())
        .args(["-f", "docker-compose.yaml", "config", "-q"])
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "{}",
        String::from_utf8_lossy(&config.stderr)
    );
}

/// The Envoy image is the pinned version's official one (scripts/lib.sh).
#[test]
fn the_gateway_image_is_the_pinned_envoy() {
    let lib = std::fs::read_to_string(repo().join("scripts/lib.sh")).unwrap();
    let pinned = regex::Regex::new(r#"PINNED_ENVOY_VERSION=([0-9.]+)"#)
        .unwrap()
        .captures(&lib)
        .unwrap()[1]
        .to_owned();
    assert!(!pinned.is_empty());
    assert_eq!(
        compose()["services"]["gateway"]["image"],
        format!("envoyproxy/envoy:v{pinned}")
    );
}

/// The gateway service's bind mounts: container path → host path.
fn gateway_mounts() -> BTreeMap<String, PathBuf> {
    compose()["services"]["gateway"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mut parts = v.as_str().unwrap().split(':');
            let host = repo().join(parts.next().unwrap().trim_start_matches("./"));
            (parts.next().unwrap().to_owned(), host)
        })
        .collect()
}

/// Every file under `dir` (recursively), with container paths rewritten to host paths.
fn rewrite_tree(from: &Path, to: &Path, mounts: &[(String, String)]) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            rewrite_tree(&path, &target, mounts);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let mut text = std::fs::read_to_string(&path).unwrap();
            for (container, host) in mounts {
                text = text.replace(container.as_str(), host);
            }
            std::fs::write(target, text).unwrap();
        }
    }
}

/// Both builds, one after the other: they render into the same .cache/compose.
#[test]
fn the_rendered_compose_gateway_runs_in_envoy_with_the_mounts_it_declares() {
    the_rendered_compose_gateway_runs(false);
    the_rendered_compose_gateway_runs(true);
}

fn the_rendered_compose_gateway_runs(native: bool) {
    let mut command = Command::new(repo().join("scripts/compose"));
    command.arg("--render-only");
    if native {
        command.arg("--native");
        crate::support::Build::force_native();
    } else {
        // The default build, whatever build the suite runs on (scripts/test runs it twice).
        command.env_remove("EGRESS_BUILD");
        crate::support::Build::force_wasm();
    }
    let render = command.output().unwrap();
    assert!(
        render.status.success(),
        "{}",
        String::from_utf8_lossy(&render.stderr)
    );
    let run_dir = repo().join(".cache/compose");
    let rendered: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(run_dir.join("envoy.yaml")).unwrap())
            .unwrap();

    // What the containers reach is what the file declares: every listener's port is published,
    // every cluster address that is a name is a service, every mounted host path exists.
    let compose = compose();
    let published: Vec<u64> = compose["services"]["gateway"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    let listeners = rendered["static_resources"]["listeners"]
        .as_array()
        .unwrap();
    for listener in listeners {
        let address = &listener["address"]["socket_address"];
        assert_eq!(address["address"], "0.0.0.0");
        assert!(
            published.contains(&address["port_value"].as_u64().unwrap()),
            "{} is not published",
            listener["name"]
        );
    }
    assert!(
        published.contains(
            &rendered["admin"]["address"]["socket_address"]["port_value"]
                .as_u64()
                .unwrap()
        )
    );
    for cluster in rendered["static_resources"]["clusters"].as_array().unwrap() {
        // The dynamic forward proxy's clusters have no endpoints: their hosts are resolved.
        let Some(endpoints) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"].as_array()
        else {
            continue;
        };
        for endpoint in endpoints {
            let address = endpoint["endpoint"]["address"]["socket_address"]["address"]
                .as_str()
                .unwrap();
            // The stand-ins share the gateway's network namespace: its loopback is theirs.
            assert!(
                address == "127.0.0.1" || compose["services"].get(address).is_some(),
                "{}: {address} is neither loopback nor a service of docker-compose.yaml",
                cluster["name"]
            );
        }
    }
    for (name, service) in compose["services"].as_object().unwrap() {
        if name != "gateway" {
            assert_eq!(service["network_mode"], "service:gateway", "{name}");
        }
    }
    let mounts = gateway_mounts();
    for host in mounts.values() {
        assert!(host.exists(), "{} does not exist", host.display());
    }

    // The gateway as the container would see it, in a real Envoy: ports chosen by the kernel,
    // container paths rewritten to the host paths mounted there, service names to loopback.
    let dir = TempDir::new("compose");
    let run_copy = dir.path("run");
    let mut rewrites: Vec<(String, String)> = mounts
        .iter()
        .map(|(container, host)| {
            let host = if container == "/egress/run" {
                run_copy.clone()
            } else {
                host.clone()
            };
            (container.clone(), host.display().to_string())
        })
        .collect();
    // Longest first, so that no mount's path is rewritten as a prefix of another's.
    rewrites.sort_by_key(|(container, _)| std::cmp::Reverse(container.len()));
    rewrite_tree(&run_dir, &run_copy, &rewrites);
    let config_path = run_copy.join("envoy.yaml");
    let text = std::fs::read_to_string(&config_path).unwrap();
    let text = regex::Regex::new(r"port_value: (10000|10443|10444|10445|3128|9901)\b")
        .unwrap()
        .replace_all(&text, "port_value: 0");
    // The compose network resolves the services' names; here they are this machine.
    let services: Vec<String> = compose["services"]
        .as_object()
        .unwrap()
        .keys()
        .map(|name| regex::escape(name))
        .collect();
    let text = regex::Regex::new(&format!(r"address: ({})\b", services.join("|")))
        .unwrap()
        .replace_all(&text, "address: 127.0.0.1");
    std::fs::write(&config_path, text.as_ref()).unwrap();
    let (envoy, admin, _) = start_envoy(&dir, &config_path);
    let (_, stats) = http_get(admin, "/stats").unwrap();
    for filter in [
        "http_filter.egress-policy",
        "network_filter.egress-policy-tcp",
    ] {
        let line = format!("extension_config_discovery.{filter}.update_success: 1");
        assert!(stats.contains(&line), "{filter} did not load: {stats}");
    }
    let filter = std::fs::read_to_string(run_copy.join("filter/egress-policy.yaml")).unwrap();
    assert_eq!(
        filter.contains("DynamicModuleFilter"),
        native,
        "the HTTP filter of the build asked for"
    );
    // The HTTP listener decides: politics is denied by the list-check policy, locally.
    let http_port = listener_port(admin, "egress_http");
    let status = curl(
        http_port,
        &["-w", "%{http_code}", "-H", "Host: edition.cnn.com"],
        "/politics",
    );
    assert_eq!(String::from_utf8_lossy(&status.stdout), "404");
    drop(envoy);
}
