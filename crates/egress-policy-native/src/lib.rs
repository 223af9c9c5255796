//! egress-policy as an Envoy dynamic module (`envoy.filters.http.dynamic_modules` and
//! `envoy.filters.network.dynamic_modules`): the same core as the proxy-wasm filter, loaded
//! natively (README: Which build?). `ffi/` is the C ABI of Envoy 1.40.0 (pinned in
//! `abi/envoy-1.40.0.tsv`) and the only `unsafe` here; `filter.rs` is the request flow,
//! `connection.rs` the network filter over the core's connection flow, `shared.rs` the one
//! compiled configuration and list refresher per gateway, and `host_abi.rs` the check that the
//! Envoy loading the module is the one it pins.

pub mod connection;
pub mod ffi;
pub mod filter;
pub mod host_abi;
pub mod shared;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    fn pinned(kind: &str) -> BTreeSet<String> {
        include_str!("../abi/envoy-1.40.0.tsv")
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let mut columns = line.split('\t');
                (columns.next()? == kind).then(|| columns.next().map(str::to_owned))?
            })
            .collect()
    }

    /// The identifiers of ffi.rs that start with `prefix`: declared, defined or listed in a
    /// hook macro.
    fn declared(prefix: &str) -> BTreeSet<String> {
        concat!(
            include_str!("ffi/mod.rs"),
            include_str!("ffi/http.rs"),
            include_str!("ffi/network.rs")
        )
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with(prefix))
        .map(str::to_owned)
        .collect()
    }

    #[test]
    fn ffi_declares_exactly_the_callbacks_and_hooks_the_pinned_abi_lists() {
        assert_eq!(
            declared("envoy_dynamic_module_callback_"),
            pinned("callback")
        );
        assert_eq!(declared("envoy_dynamic_module_on_"), pinned("hook"));
    }

    #[test]
    fn the_pinned_abi_is_envoy_1_40s() {
        assert_eq!(crate::ffi::ABI_VERSION, b"v0.2.0\0");
        assert!(include_str!("../abi/envoy-1.40.0.tsv").contains("\"v0.2.0\""));
    }
}
