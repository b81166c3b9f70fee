#!/usr/bin/env bash
# Times a phased rollout over a simulated fleet on this machine, with the
# release build: a hub, `strata simulate` (one real edge agent per device,
# 5 % of them on a legacy pipeline), then two campaigns of a model release:
#   1. v2, which every device can run: all waves, time to the last commit;
#   2. v3, which the legacy devices cannot run: it aborts at its 3 %
#      failure threshold and rolls the devices that took it back to v2.
# Usage: scripts/bench-rollout.sh [devices] [health-window-ms]
# Needs the Python peers of scripts/test.sh (scikit-learn + skl2onnx) for
# the model; STRATA_PEERS_PYTHON points at that interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:-1000}
window=${2:-2000}
python=${STRATA_PEERS_PYTHON:-target/peers/bin/python}
cargo build --release -q --bin strata
strata=$PWD/target/release/strata
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=127.0.0.1:$(free_port)
http=127.0.0.1:$(free_port)
public=$("$strata" release keygen release.key 2>/dev/null)
printf '[ota]\nrelease_keys = ["%s"]\n[mqtt]\nlisten = "%s"\n[http]\nlisten = "%s"\n' "$public" "$mqtt" "$http" > hub.toml
STRATA_LOG=warn "$strata" hub --config hub.toml --data-dir hub > hub.log 2>&1 &
export STRATA_HUB=http://$http STRATA_DATA_DIR=hub
for _ in $(seq 50); do [ -s hub/admin.token ] && curl -sf "$STRATA_HUB/healthz" >/dev/null && break; sleep 0.2; done

"$python" "$OLDPWD/crates/strata-cli/tests/peers/models.py" train .
features=w.temperature.mean,w.temperature.max,w.current.mean,w.current.max
legacy='[[pipeline.windows]]
name = "w"
signals = ["temperature", "current"]
size_ms = 500
features = ["mean", "max"]
[[pipeline.vectors]]
name = "machine"
features = ["w.temperature.mean", "w.temperature.max", "w.current.mean", "w.current.max"]'
printf '%s\n' "$legacy" > legacy.toml
printf '%s\n[[pipeline.vectors]]\nname = "machine_v2"\nfeatures = ["w.temperature.mean", "w.temperature.max", "w.current.mean", "w.current.max"]\n' "$legacy" > pipeline.toml
"$strata" release sign --key release.key --kind model --name rul --version 2 --artifact rul.onnx --vector machine --features $features > v2.json
"$strata" release sign --key release.key --kind model --name rul --version 3 --min-version 2 --artifact rul.onnx --vector machine_v2 --features $features > v3.json
"$strata" release submit v2.json --artifact rul.onnx > /dev/null
"$strata" release submit v3.json --artifact rul.onnx > /dev/null

STRATA_LOG=warn "$strata" simulate --mqtt "$mqtt" --devices "$devices" --site plant \
    --pipeline pipeline.toml --legacy-share 0.05 --legacy-pipeline legacy.toml \
    --health-window-ms "$window" --interval-ms 1000 --state-dir sim > sim.log 2>&1 &
online=0
for _ in $(seq 300); do
    online=$(curl -sf -H "Authorization: Bearer $(cat hub/admin.token)" "$STRATA_HUB/api/v1/devices" \
        | python3 -c 'import json,sys; print(sum(1 for d in json.load(sys.stdin) if d["online"]))')
    [ "$online" = "$devices" ] && break
    sleep 1
done
echo "$online devices online"
sleep 5

start=$(date +%s.%N)
"$strata" campaign start model rul 2 --site plant --failure-threshold 3% --min-sample 30 --timeout-s 180 --follow | tail -7
end=$(date +%s.%N)
echo "rollout of v2 to $devices devices: $(python3 -c "print(f'{$end - $start:.1f}')") s"

start=$(date +%s.%N)
"$strata" campaign start model rul 3 --site plant --failure-threshold 3% --min-sample 30 --timeout-s 180 \
    --on-failure abort --rollback --follow | tail -9 || true  # it ends rolled back, as meant
end=$(date +%s.%N)
echo "v3: threshold, abort and rollback in $(python3 -c "print(f'{$end - $start:.1f}')") s"
