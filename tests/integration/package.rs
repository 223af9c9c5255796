//! `scripts/package` for real (README: Deploying on Istio): the module is pushed as an OCI image
//! to a real registry (Debian's docker-registry, on loopback), pulled back by the digest the
//! pinned manifests carry, and the pulled module is what a running Envoy then decides with.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::manifests::{violations, yaml_documents};
use crate::support::{Gateway, Guard, TempDir, cli_command, http_get, repo, wait_until, wasm_path};

/// A registry on a free loopback port, its storage in `dir`.
fn start_registry(dir: &TempDir) -> (Guard, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{port}}}\n",
            dir.path("registry").display()
        ),
    )
    .unwrap();
    let mut registry = Guard(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (scripts/test installs Debian's package)"),
    );
    wait_until(
        "the registry to answer /v2/",
        Duration::from_secs(20),
        || {
            assert!(
                registry.0.try_wait().unwrap().is_none(),
                "the registry exited"
            );
            http_get(port, "/v2/").is_some_and(|(status, _)| status == 200)
        },
    );
    (registry, port)
}

fn sha256_hex(path: &std::path::Path) -> String {
    let output = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn the_packaged_module_round_trips_through_a_registry_into_envoy() {
    let dir = TempDir::new("package");
    let (_registry, port) = start_registry(&dir);
    let image = format!("127.0.0.1:{port}/egress-policy:e2e");
    let out = dir.path("out");
    let output = Command::new(repo().join("scripts/package"))
        .args(["--push", &image, "--insecure", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/package: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let digest = stdout.lines().last().unwrap().trim().to_owned();
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);

    // The pinned manifests: every plugin names the pushed image and its digest, and is still a
    // valid resource with a valid policy.
    let mut pinned = 0;
    for manifest in ["wasmplugin.yaml", "trafficextension.yaml"] {
        let path = out.join(manifest);
        for document in yaml_documents(&path) {
            assert_eq!(violations(&document), Vec::<String>::new(), "{manifest}");
            let module = match document["kind"].as_str().unwrap() {
                "WasmPlugin" => &document["spec"],
                "TrafficExtension" => &document["spec"]["wasm"],
                _ => continue,
            };
            assert_eq!(module["url"], format!("oci://{image}"), "{manifest}");
            assert_eq!(module["sha256"], hex, "{manifest}");
            pinned += 1;
        }
        let check = cli_command().arg("check").arg(&path).output().unwrap();
        assert!(check.status.success(), "{manifest}: {:?}", check);
    }
    assert_eq!(pinned, 4);

    // Pulled back by that digest, as Istio's agent does: the registry serves the manifest whose
    // digest is pinned, and its one layer holds plugin.wasm, byte for byte the built module.
    let pulled = dir.path("pulled");
    let copy = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://127.0.0.1:{port}/egress-policy@{digest}"))
        .arg(format!("oci:{}:pulled", pulled.display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "skopeo: {copy:?}");
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str());
    let manifest_path = pulled.join("blobs/sha256").join(hex);
    assert_eq!(sha256_hex(&manifest_path), hex);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = pulled.join("blobs/sha256").join(
        layers[0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap(),
    );
    let unpacked = dir.path("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(untar.success());
    let module = unpacked.join("plugin.wasm");
    assert_eq!(sha256_hex(&module), sha256_hex(&wasm_path()));

    // Envoy loads the pulled module and decides with it: the list-check policy.
    let gateway = Gateway::example("s3-listcheck.json");
    let s3 = repo().join("envoy/examples/s3-listcheck.json");
    assert!(
        gateway.reload_with_module(&s3, &module),
        "Envoy refused the pulled module"
    );
    assert_eq!(gateway.status("edition.cnn.com", "/politics"), 404);
    assert_eq!(gateway.status("edition.cnn.com", "/sport"), 200);

    // One module, one image: packaging again gives the same digest.
    let again = Command::new(repo().join("scripts/oci-image"))
        .arg(wasm_path())
        .arg(dir.path("again"))
        .arg("e2e")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&again.stdout).trim(), digest);
}

#[test]
fn package_refuses_what_it_cannot_push_with_a_clear_error() {
    let dir = TempDir::new("package-errors");
    for (args, expected) in [
        (vec!["--push", "egress-policy:1"], "name the registry"),
        (vec!["--push", "127.0.0.1:1/egress-policy"], "name the tag"),
        (vec!["--bogus"], "unknown argument: --bogus"),
    ] {
        let output = Command::new(repo().join("scripts/package"))
            .args(&args)
            .arg("--out")
            .arg(dir.path("out"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let not_wasm = dir.path("not.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let output = Command::new(repo().join("scripts/oci-image"))
        .arg(&not_wasm)
        .arg(dir.path("layout"))
        .arg("x")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a Wasm module"));
}

/// `scripts/package --native`: the native module as an OCI image, pushed, pulled back by its
/// digest, and the pulled `.so` is what a native gateway then decides with.
#[test]
fn the_native_module_round_trips_through_a_registry_into_envoy() {
    let dir = TempDir::new("package-native");
    let (_registry, port) = start_registry(&dir);
    let image = format!("127.0.0.1:{port}/egress-policy-native:e2e");
    let output = Command::new(repo().join("scripts/package"))
        .args(["--native", "--push", &image, "--insecure", "--out"])
        .arg(dir.path("out"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/package --native: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let digest = stdout.lines().last().unwrap().trim().to_owned();
    // What Envoy Gateway's and Istio's pods mount: the pinned manifests' image volume, by digest.
    let pinned =
        crate::manifests::yaml_documents(&dir.path("out/envoy-gateway/egress-policy-native.yaml"));
    let proxy = pinned.iter().find(|d| d["kind"] == "EnvoyProxy").unwrap();
    let reference = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["pod"]["volumes"][0]
        ["image"]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        reference,
        format!("127.0.0.1:{port}/egress-policy-native@{digest}")
    );
    let istio_values =
        std::fs::read_to_string(dir.path("out/istio-native/egress-gateway-values.yaml")).unwrap();
    assert!(
        istio_values.contains(&format!("reference: {reference}")),
        "{istio_values}"
    );
    let pulled = dir.path("pulled");
    let copy = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .arg(format!("oci:{}:pulled", pulled.display()))
        .output()
        .unwrap();
    assert!(copy.status.success(), "skopeo: {copy:?}");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(
            pulled
                .join("blobs/sha256")
                .join(digest.strip_prefix("sha256:").unwrap()),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let unpacked = dir.path("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    let untar = Command::new("tar")
        .arg("xzf")
        .arg(
            pulled
                .join("blobs/sha256")
                .join(layer.strip_prefix("sha256:").unwrap()),
        )
        .arg("-C")
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(untar.success());
    let module = unpacked.join("libegress_policy_native.so");
    assert_eq!(
        sha256_hex(&module),
        sha256_hex(&repo().join("target/module/libegress_policy_native.so"))
    );
    crate::support::Build::force_native_from(unpacked);
    let gateway = Gateway::example("s3-listcheck.json");
    assert_eq!(gateway.status("edition.cnn.com", "/politics"), 404);
    assert_eq!(gateway.status("edition.cnn.com", "/sport"), 200);
}
