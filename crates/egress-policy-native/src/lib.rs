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

    /// No panic can cross into Envoy: every hook the module exports runs its work inside the
    /// panic guard (`guard`, directly or through `data_hook` and `destroy_box`), or does
    /// nothing that can panic (an empty body, or a constant).
    #[test]
    fn every_exported_hook_runs_behind_the_panic_guard_or_does_nothing() {
        let mut checked = 0;
        for (file, source) in [
            ("ffi/mod.rs", include_str!("ffi/mod.rs")),
            ("ffi/http.rs", include_str!("ffi/http.rs")),
            ("ffi/network.rs", include_str!("ffi/network.rs")),
        ] {
            for (at, _) in source.match_indices("pub extern \"C\" fn ") {
                let rest = &source[at..];
                let name: String = rest["pub extern \"C\" fn ".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                    .collect();
                // The body: from the first `{` after the parameter list to its matching `}`.
                let params = rest.find('(').unwrap();
                let mut parens = 0;
                let mut signature_end = params;
                for (i, c) in rest[params..].char_indices() {
                    match c {
                        '(' => parens += 1,
                        ')' => {
                            parens -= 1;
                            if parens == 0 {
                                signature_end = params + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let open = signature_end + rest[signature_end..].find('{').unwrap();
                let mut depth = 0;
                let mut close = open;
                for (i, c) in rest[open..].char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                close = open + i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let body = rest[open + 1..close].trim();
                let guarded = ["guard(", "data_hook(", "destroy_box::<"]
                    .iter()
                    .any(|call| body.contains(call));
                let idle = body.is_empty() || body == "CONTINUE";
                assert!(
                    guarded || idle,
                    "{file}: {name} runs outside the panic guard: {body}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 20, "{checked} hooks: the scan did not find them");
    }
}
