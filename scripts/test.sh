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
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
# NATS with JetStream, through its MQTT listener (the upstream-broker tests).
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3 python3-venv)
# The dashboard's browser tests drive headless Chromium through chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing test peers: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# Python reference peers (asyncua OPC UA server, pymodbus simulator,
# scikit-learn + skl2onnx + onnxruntime for golden models, river and
# Evidently for drift, moto's S3 server and boto3 for artifacts) live in a
# virtualenv under target/; tests find it through STRATA_PEERS_PYTHON.
peers=target/peers
if ! "$peers/bin/python" -c 'import asyncua, pymodbus, sklearn, skl2onnx, onnxruntime, river, evidently, moto, boto3' 2>/dev/null \
    || ! cmp -s scripts/peers-requirements.txt "$peers/requirements.txt"; then
    echo "installing python test peers into $peers"
    python3 -m venv "$peers"
    "$peers/bin/pip" install -q --disable-pip-version-check -r scripts/peers-requirements.txt
    cp scripts/peers-requirements.txt "$peers/requirements.txt"
fi
export STRATA_PEERS_PYTHON="$PWD/$peers/bin/python"

# PostgreSQL for the scale-out telemetry store's tests: the server on
# 127.0.0.1:5432 (user postgres, trusted from localhost, database test),
# or, where none runs, one installed from Debian and started here.
# STRATA_TEST_POSTGRES names another (a libpq connection string).
if [ -z "${STRATA_TEST_POSTGRES:-}" ]; then
    if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
        echo "installing and starting PostgreSQL for the tests"
        sudo_if_needed apt-get update -qq
        sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            sudo_if_needed sed -i '1i host all postgres 127.0.0.1/32 trust' "$hba"
        done
        sudo_if_needed service postgresql restart
        for _ in $(seq 1 30); do
            (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break
            sleep 1
        done
    fi
    if command -v psql >/dev/null 2>&1 \
        && ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
        psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
    fi
    export STRATA_TEST_POSTGRES="host=127.0.0.1 port=5432 user=postgres dbname=test"
fi

cargo fmt --all --check
# The gateway build the README gives (the edge agent without the hub's
# code) must keep compiling: nothing else builds that feature set.
cargo check -p strata-cli --no-default-features --features edge --locked

# Doc tests are left out (the docs hold no runnable examples); the summary
# line at the end adds up every test binary's result.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] || exit "$status"

# The fuzz targets (MQTT decoder, device payloads, gateway config), briefly:
# STRATA_FUZZ_SECONDS each (default 10; 0 skips). A finding fails the run.
fuzz_seconds="${STRATA_FUZZ_SECONDS:-10}"
if [ "$fuzz_seconds" -gt 0 ]; then
    scripts/fuzz.sh "$fuzz_seconds"
fi
