#!/usr/bin/env bash
# Resident memory of the edge agent with three protocol sources (OPC UA from
# asyncua, Modbus from pymodbus, MQTT from a local Mosquitto), a pipeline and
# two models (scikit-learn via skl2onnx), sending to a real hub.
# Prints VmRSS and VmHWM of `strata edge` after it has run for SECONDS
# (default 60). Needs what scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
python=${STRATA_PEERS_PYTHON:-$PWD/target/peers/bin/python}
work=$(mktemp -d)
# The hub from the full build; the agent from the gateway build, which
# leaves the hub's code out of the binary.
cargo build --release --quiet --bin strata
cp target/release/strata "$work/strata"
# Non-PIE: no start-up relocations dirtying pages of the binary. Only the
# target is built so (proc macros, which run in the compiler, stay PIC).
RUSTFLAGS="-C relocation-model=static" cargo build --quiet --target x86_64-unknown-linux-gnu \
    --profile gateway -p strata-cli --no-default-features --features edge
cp target/x86_64-unknown-linux-gnu/gateway/strata "$work/strata-gateway"
strata=$work/strata
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mqtt=$(port); http=$(port); ua=$(port); mb=$(port); local_mqtt=$(port)

"$strata" hub --mqtt-listen 127.0.0.1:$mqtt --http-listen 127.0.0.1:$http --data-dir "$work/hub" >/dev/null 2>&1 &
pids+=($!)
"$python" crates/strata-cli/tests/peers/opcua_server.py $ua >/dev/null 2>&1 &
pids+=($!)
"$python" crates/strata-cli/tests/peers/modbus_server.py $mb >/dev/null 2>&1 &
pids+=($!)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest none\n' $local_mqtt > "$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" &
pids+=($!)
"$python" crates/strata-cli/tests/peers/models.py train "$work"
sleep 3

hub=(--hub http://127.0.0.1:$http --data-dir "$work/hub")
"$strata" site create plant --region eu "${hub[@]}" >/dev/null
token=$("$strata" device create gw --site plant "${hub[@]}" | "$python" -c 'import json,sys; print(json.load(sys.stdin)["enrollment_token"])')
"$strata" device enroll gw --token "$token" --hub http://127.0.0.1:$http \
  | "$python" -c 'import json,sys; print(json.load(sys.stdin)["credential"])' > "$work/credential"

cat > "$work/edge.toml" <<TOML
device = "gw"
data_dir = "$work/edge"
[hub]
mqtt = "127.0.0.1:$mqtt"
credential_file = "$work/credential"
[health]
interval_ms = 1000
[[sources]]
type = "opcua"
stream = "press"
endpoint = "opc.tcp://127.0.0.1:$ua/strata/"
sampling_ms = 50
publishing_ms = 100
[[sources.nodes]]
node = "ns=2;s=Line1.Temperature"
name = "temperature"
[[sources.nodes]]
node = "ns=2;s=Line1.Pressure"
name = "current"
scale = 0.01
[[sources]]
type = "modbus"
stream = "plc"
address = "127.0.0.1:$mb"
poll_ms = 50
[[sources.registers]]
name = "counter"
kind = "holding"
address = 7
[[sources.registers]]
name = "level"
kind = "holding"
address = 3
data_type = "f32"
word_order = "little"
[[sources]]
type = "mqtt"
stream = "floor"
broker = "127.0.0.1:$local_mqtt"
[[sources.topics]]
filter = "line/+/temp"
signal = "{1}.temp"
[pipeline]
[[pipeline.windows]]
name = "w"
signals = ["temperature", "current"]
size_ms = 1000
features = ["mean", "max"]
[[pipeline.vectors]]
name = "machine"
features = ["w.temperature.mean", "w.temperature.max", "w.current.mean", "w.current.max"]
[[models]]
name = "rul"
path = "$work/rul.onnx"
vector = "machine"
[[models]]
name = "anomaly"
path = "$work/anomaly.onnx"
vector = "machine"
TOML
STRATA_LOG=warn "$work/strata-gateway" edge --config "$work/edge.toml" >/dev/null 2>&1 &
edge=$!
pids+=($edge)
end=$((SECONDS + seconds))
while [ $SECONDS -lt $end ]; do
    mosquitto_pub -p $local_mqtt -t line/m1/temp -m $((RANDOM % 100)) || true
    sleep 0.2
done
echo "strata edge (gateway build, $(du -h "$work/strata-gateway" | cut -f1) binary):"
grep -E 'VmRSS|VmHWM' /proc/$edge/status
grep -E '^(Rss_Anon|Rss_File)|^Anonymous' /proc/$edge/smaps_rollup || true
echo "largest mappings (kB resident):"
awk '/^[0-9a-f]+-/{name=$6} /^Rss:/{r[name]+=$2} END{for (n in r) if (r[n] >= 256) printf "  %6d %s\n", r[n], (n == "" ? "[anonymous]" : n)}' /proc/$edge/smaps | sort -rn
curl -s "http://127.0.0.1:$http/metrics" | grep -E '^strata_readings_stored_total' || true
