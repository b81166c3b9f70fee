#!/usr/bin/env bash
# Runs every test of the workspace. Installs what the tests need beyond the
# Rust toolchain first (third-party peers such as mosquitto's clients), so it
# works the same on a fresh Debian machine, a developer's laptop and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing test peers: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

cargo fmt --all --check
cargo test --workspace --locked "$@"
