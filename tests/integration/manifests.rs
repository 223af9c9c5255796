//! The Istio manifests (README: Deploying on Istio), checked without a cluster: every document's
//! shape against the schemas of its kind (`tests/data/istio-schemas.yaml`, written from Istio's
//! CRDs), every EnvoyFilter patch against a real Envoy (`--mode validate`), and what the
//! manifests promise against the bundled gateway that the other tests run.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{TempDir, cli_command, envoy_command, repo};

/// The documents of every Istio manifest (the Helm values file and the Prometheus rules file
/// are not resources; promtool checks the rules, scripts/test).
fn manifests() -> Vec<(PathBuf, Value)> {
    let mut documents = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| !p.ends_with("egress-gateway-values.yaml"))
        .filter(|p| !p.ends_with("prometheus-alerts.yaml"))
        .collect();
    paths.sort();
    for path in paths {
        for document in yaml_documents(&path) {
            documents.push((path.clone(), document));
        }
    }
    documents
}

pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

fn of_kind(kind: &str) -> Vec<Value> {
    manifests()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == kind)
        .collect()
}

/// Every way `document` violates the schema of its kind; an unknown kind is one violation. The
/// kinds are Istio's (`tests/data/istio-schemas.yaml`) and Envoy Gateway's with the Gateway
/// API's (`tests/data/envoy-gateway-schemas.yaml`).
pub fn violations(document: &Value) -> Vec<String> {
    let mut schemas = Value::Null;
    for file in ["istio-schemas.yaml", "envoy-gateway-schemas.yaml"] {
        let part: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(repo().join("tests/data").join(file)).unwrap(),
        )
        .unwrap();
        if schemas.is_null() {
            schemas = part;
            continue;
        }
        for section in ["$defs", "kinds"] {
            for (name, schema) in part[section].as_object().unwrap() {
                assert!(schemas[section].get(name).is_none(), "{file}: {name} twice");
                schemas[section][name] = schema.clone();
            }
        }
    }
    let key = format!(
        "{}/{}",
        document["apiVersion"].as_str().unwrap_or("?"),
        document["kind"].as_str().unwrap_or("?")
    );
    let Some(kind) = schemas["kinds"].get(&key) else {
        return vec![format!("{key}: no schema for this kind")];
    };
    let mut schema = kind.clone();
    schema["$schema"] = schemas["$schema"].clone();
    schema["$defs"] = schemas["$defs"].clone();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    validator
        .iter_errors(document)
        .map(|error| format!("{key} {}: {error}", error.instance_path()))
        .collect()
}

#[test]
fn every_manifest_has_the_shape_its_kinds_crd_accepts() {
    let mut failures = Vec::new();
    let documents = manifests();
    assert!(documents.len() >= 20, "{} documents", documents.len());
    for (path, document) in &documents {
        for violation in violations(document) {
            failures.push(format!("{}: {violation}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The schemas bite: misspelt fields and values that Istio's CRDs refuse are refused here.
#[test]
fn misspelt_fields_and_values_are_refused() {
    let plugin = &of_kind("WasmPlugin")[0];
    for (edit, expected) in [
        (json!({"failStrategy": "FAIL_CLOSED"}), "FAIL_CLOSED"),
        (json!({"phase": "AUTHORIZATION"}), "AUTHORIZATION"),
        (json!({"sha256": "sha256:abc"}), "sha256:abc"),
        (json!({"pluginconfig": {}}), "pluginconfig"),
        (
            json!({"url": "registry.example.com/x"}),
            "registry.example.com/x",
        ),
    ] {
        let mut bad = plugin.clone();
        for (k, v) in edit.as_object().unwrap() {
            bad["spec"][k] = v.clone();
        }
        let found = violations(&bad);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "{edit}: {found:?}"
        );
    }
    let mut gateway = of_kind("Gateway")[0].clone();
    gateway["spec"]["servers"][0]["tls"]["mode"] = json!("ISTIO_MUTAL");
    assert!(!violations(&gateway).is_empty());
    let mut unknown = gateway.clone();
    unknown["kind"] = json!("PeerAuthentication");
    assert!(violations(&unknown)[0].contains("no schema for this kind"));
}

/// Istio enforces what the Security section relies on: every Gateway server requires the
/// sidecars' certificates, an AuthorizationPolicy on the gateway admits only mesh principals,
/// sidecars reach only registered hosts; nothing relies on a PeerAuthentication, which a
/// gateway ignores.
#[test]
fn the_gateway_requires_mesh_certificates_and_admits_only_mesh_principals() {
    let gateways = of_kind("Gateway");
    assert!(gateways.len() >= 4);
    for gateway in &gateways {
        assert_eq!(gateway["spec"]["selector"]["istio"], "egressgateway");
        for server in gateway["spec"]["servers"].as_array().unwrap() {
            assert_eq!(server["tls"]["mode"], "ISTIO_MUTUAL", "{gateway}");
        }
    }
    let policies = of_kind("AuthorizationPolicy");
    assert_eq!(policies.len(), 1);
    let policy = &policies[0];
    assert_eq!(policy["metadata"]["namespace"], "istio-system");
    assert_eq!(
        policy["spec"]["selector"]["matchLabels"]["istio"],
        "egressgateway"
    );
    assert_eq!(policy["spec"]["action"], "ALLOW");
    assert_eq!(
        policy["spec"]["rules"],
        json!([{"from": [{"source": {"principals": ["cluster.local/*"]}}]}])
    );
    let sidecar = &of_kind("Sidecar")[0];
    assert_eq!(sidecar["metadata"]["namespace"], "istio-system");
    assert!(sidecar["spec"].get("workloadSelector").is_none());
    assert_eq!(
        sidecar["spec"]["outboundTrafficPolicy"]["mode"],
        "REGISTRY_ONLY"
    );
    assert!(of_kind("PeerAuthentication").is_empty());
}

/// The HTTP connection manager settings of `envoy/gateway.yaml`, which the security tests run.
fn bundled_connection_manager() -> Value {
    let template = std::fs::read_to_string(repo().join("envoy/gateway.yaml")).unwrap();
    let rendered = regex::Regex::new(r"\$\{[A-Z_]+(:-[^}]*)?\}")
        .unwrap()
        .replace_all(&template, "0");
    let gateway: Value = serde_saphyr::from_str(&rendered).unwrap();
    gateway["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        .clone()
}

#[test]
fn the_istio_gateway_normalises_requests_as_the_bundled_gateway_does() {
    let filter = of_kind("EnvoyFilter")
        .into_iter()
        .find(|f| f["metadata"]["name"] == "egress-gateway-normalisation")
        .unwrap();
    let patch = &filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"];
    let bundled = bundled_connection_manager();
    for (field, value) in patch.as_object().unwrap() {
        assert_eq!(&bundled[field], value, "{field}");
    }
    for field in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "strip_any_host_port",
        "strip_trailing_host_dot",
        "common_http_protocol_options",
        "forward_client_cert_details",
    ] {
        assert!(patch.get(field).is_some(), "{field} is not set on Istio");
    }
}

/// Each EnvoyFilter patch applied to the kind of Envoy object it targets, and the result given
/// to the real Envoy in validate mode: a field Envoy does not know, or a value of the wrong
/// type, fails here as it would fail on the gateway.
#[test]
fn every_envoy_filter_patch_is_accepted_by_envoy() {
    let dir = TempDir::new("envoy-filter-patches");
    let mut checked = 0;
    for filter in of_kind("EnvoyFilter") {
        let name = filter["metadata"]["name"].as_str().unwrap().to_owned();
        for patch in filter["spec"]["configPatches"].as_array().unwrap() {
            assert_eq!(patch["applyTo"], "NETWORK_FILTER", "{name}");
            assert_eq!(patch["patch"]["operation"], "MERGE", "{name}");
            let target = patch["match"]["listener"]["filterChain"]["filter"]["name"]
                .as_str()
                .unwrap();
            let mut typed_config = match target {
                "envoy.filters.network.http_connection_manager" => json!({
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "istio",
                    "route_config": {"name": "r", "virtual_hosts": []},
                    "http_filters": [{"name": "envoy.filters.http.router", "typed_config":
                        {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                }),
                "envoy.filters.network.tcp_proxy" => json!({
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "istio",
                    "cluster": "out",
                }),
                other => panic!("{name}: a patch of {other} is not checked"),
            };
            let value = &patch["patch"]["value"]["typed_config"];
            assert_eq!(value["@type"], typed_config["@type"], "{name}");
            for (field, v) in value.as_object().unwrap() {
                typed_config[field] = v.clone();
            }
            let bootstrap = json!({
                "static_resources": {
                    "listeners": [{"name": "l", "address": {"socket_address":
                        {"address": "127.0.0.1", "port_value": 0}},
                        "filter_chains": [{"filters": [{"name": target, "typed_config": typed_config}]}]}],
                    "clusters": [{"name": "out", "type": "STATIC", "load_assignment":
                        {"cluster_name": "out", "endpoints": []}}],
                },
            });
            let path = dir.path(&format!("{name}-{checked}.json"));
            std::fs::write(&path, bootstrap.to_string()).unwrap();
            let output = envoy_command()
                .args(["--mode", "validate", "-c"])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "{name}: Envoy refuses the patched {target}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} patches");
}

/// The same policies whichever API installs the plugin: the TrafficExtensions (Istio 1.30+)
/// carry the configurations of the WasmPlugins (1.22+), each filter under its root id.
#[test]
fn traffic_extensions_carry_the_wasm_plugins_policies() {
    let example = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(repo().join("envoy/examples").join(name)).unwrap(),
        )
        .unwrap()
    };
    let extensions = of_kind("TrafficExtension");
    assert_eq!(extensions.len(), 2);
    for (extension, plugin_type, root_id, config) in [
        (&extensions[0], "HTTP", "egress-policy", "s3-listcheck.json"),
        (
            &extensions[1],
            "NETWORK",
            "egress-policy-tcp",
            "s6-sni.json",
        ),
    ] {
        let wasm = &extension["spec"]["wasm"];
        assert_eq!(wasm["type"], plugin_type);
        assert_eq!(wasm["pluginName"], root_id);
        assert_eq!(wasm["failStrategy"], "FAIL_RELOAD");
        assert_eq!(extension["spec"]["phase"], "AUTHZ");
        assert_eq!(wasm["pluginConfig"], example(config), "{root_id}");
    }
    let output = cli_command()
        .current_dir(repo())
        .args(["check", "manifests/trafficextension.yaml"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "manifests/trafficextension.yaml (TrafficExtension/egress-policy): valid (2 rules, 1 lists, 0 routes), policyVersion c512b6f5933afd90\n\
         manifests/trafficextension.yaml (TrafficExtension/egress-policy-tcp): valid (5 rules, 1 lists, 0 routes), policyVersion d36582b6273bd5cf\n"
    );
}

/// The native build's manifests (README: Which build?): Envoy Gateway's and Istio's, each in
/// its directory (Helm values files are not resources).
fn native_manifests(dir: &str) -> Vec<Value> {
    let mut documents = Vec::new();
    for entry in std::fs::read_dir(repo().join("manifests").join(dir)).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml")
            && !path.ends_with("egress-gateway-values.yaml")
        {
            documents.extend(yaml_documents(&path));
        }
    }
    assert!(!documents.is_empty(), "{dir}");
    documents
}

/// `egress-policy check FILE` accepts every configuration the manifest carries.
fn assert_cli_check_passes(manifest: &str) {
    let check = cli_command()
        .args(["check", manifest])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{manifest}: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

fn example(name: &str) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(repo().join("envoy/examples").join(name)).unwrap(),
    )
    .unwrap()
}

/// The version of Envoy the native module pins (scripts/lib.sh).
fn pinned_envoy() -> String {
    let lib = std::fs::read_to_string(repo().join("scripts/lib.sh")).unwrap();
    regex::Regex::new(r"PINNED_ENVOY_VERSION=([0-9.]+)")
        .unwrap()
        .captures(&lib)
        .unwrap()[1]
        .to_owned()
}

#[test]
fn the_native_builds_manifests_have_the_shape_their_kinds_crds_accept() {
    let mut failures = Vec::new();
    for dir in ["envoy-gateway", "istio-native"] {
        for document in native_manifests(dir) {
            failures.extend(
                violations(&document)
                    .into_iter()
                    .map(|v| format!("{dir}: {v}")),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The schemas bite: Envoy Gateway's CRDs refuse these.
    let policy = native_manifests("envoy-gateway")
        .into_iter()
        .find(|d| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap();
    let mut misspelt = policy.clone();
    misspelt["spec"]["dynamicModules"] = misspelt["spec"]["dynamicModule"].take();
    assert!(!violations(&misspelt).is_empty());
    let mut bad_name = policy;
    bad_name["spec"]["dynamicModule"][0]["name"] = json!("Egress_Policy");
    assert!(!violations(&bad_name).is_empty());
}

/// Envoy Gateway runs the module where the manifests say: the pinned Envoy, the `.so` from the
/// image volume at the path the EnvoyProxy registers, the policy's module registered, and the
/// configuration the source documents' list-check policy.
#[test]
fn envoy_gateway_runs_the_pinned_envoy_with_the_module_from_its_image_volume() {
    let documents = native_manifests("envoy-gateway");
    let of = |kind: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind)
            .unwrap()
            .clone()
    };
    let (class, gateway, proxy, policy) = (
        of("GatewayClass"),
        of("Gateway"),
        of("EnvoyProxy"),
        of("EnvoyExtensionPolicy"),
    );
    assert_eq!(
        class["spec"]["parametersRef"]["name"],
        proxy["metadata"]["name"]
    );
    assert_eq!(
        class["spec"]["parametersRef"]["namespace"],
        proxy["metadata"]["namespace"]
    );
    assert_eq!(
        gateway["spec"]["gatewayClassName"],
        class["metadata"]["name"]
    );
    assert_eq!(
        policy["spec"]["targetRefs"][0]["name"],
        gateway["metadata"]["name"]
    );
    assert_eq!(
        policy["metadata"]["namespace"],
        gateway["metadata"]["namespace"]
    );

    let deployment = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"];
    assert_eq!(
        deployment["container"]["image"],
        format!("docker.io/envoyproxy/envoy:distroless-v{}", pinned_envoy())
    );
    let module = &proxy["spec"]["dynamicModules"][0];
    let path = std::path::Path::new(module["source"]["local"]["path"].as_str().unwrap());
    assert_eq!(path.file_name().unwrap(), "libegress_policy_native.so");
    let mount = &deployment["container"]["volumeMounts"][0];
    assert_eq!(path.parent().unwrap().to_str(), mount["mountPath"].as_str());
    let volume = &deployment["pod"]["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert!(
        volume["image"]["reference"]
            .as_str()
            .unwrap()
            .contains("egress-policy-native")
    );

    let filter = &policy["spec"]["dynamicModule"][0];
    assert_eq!(filter["name"], module["name"]);
    assert_eq!(filter["config"], example("s3-listcheck.json"));
    assert_cli_check_passes("manifests/envoy-gateway/egress-policy-native.yaml");
}

/// Istio's EnvoyFilter inserts both native filters; Envoy accepts each where it is inserted (the
/// HTTP filter before the router, the network filter before tcp_proxy), loading the module; the
/// configurations are the source documents' list-check and SNI policies; the gateway pod gets
/// the module where the proxy searches for it.
#[test]
fn the_istio_envoy_filter_inserts_both_native_filters_and_envoy_loads_them() {
    let filter = native_manifests("istio-native")
        .into_iter()
        .find(|d| d["kind"] == "EnvoyFilter")
        .unwrap();
    let patches = filter["spec"]["configPatches"].as_array().unwrap();
    assert_eq!(patches.len(), 2);
    let http = &patches[0]["patch"]["value"];
    let network = &patches[1]["patch"]["value"];
    let config = |value: &Value| -> Value {
        serde_json::from_str(
            value["typed_config"]["filter_config"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(config(http), example("s3-listcheck.json"));
    assert_eq!(config(network), example("s6-sni.json"));

    let bootstrap = json!({
        "static_resources": {
            "listeners": [
                {"name": "http", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                 "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "istio",
                    "route_config": {"name": "r", "virtual_hosts": []},
                    "http_filters": [http.clone(), {"name": "envoy.filters.http.router", "typed_config":
                        {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]},
                {"name": "tls", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                 "filter_chains": [{"filters": [network.clone(), {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                    "stat_prefix": "istio", "cluster": "out"}}]}]}
            ],
            "clusters": [{"name": "out", "type": "STATIC", "load_assignment": {"cluster_name": "out", "endpoints": []}}],
        },
    });
    let dir = TempDir::new("istio-native");
    let path = dir.path("bootstrap.json");
    std::fs::write(&path, bootstrap.to_string()).unwrap();
    let output = envoy_command()
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .env(
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
            crate::support::native_module_dir(),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "Envoy refuses the inserted filters: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let (values, proxy_config) =
        helm_values_and_proxy_config("manifests/istio-native/egress-gateway-values.yaml");
    assert_eq!(
        proxy_config["proxyMetadata"]["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"],
        values["volumeMounts"][0]["mountPath"]
    );
    assert_eq!(
        values["volumeMounts"][0]["name"],
        values["volumes"][0]["name"]
    );
    assert_cli_check_passes("manifests/istio-native/egress-policy-native.yaml");
}

/// Helm values of Istio's `gateway` chart, and the ProxyConfig of their pod annotation.
pub fn helm_values_and_proxy_config(path: &str) -> (Value, Value) {
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap();
    let proxy_config: Value = serde_json::from_str(
        values["podAnnotations"]["proxy.istio.io/config"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    (values, proxy_config)
}
