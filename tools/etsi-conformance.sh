#!/usr/bin/env bash
# Run ETSI's NGSI-LD conformance test suite (Robot Framework) against a fresh CityOps hub.
#
#   ETSI_SUITE=/path/to/ngsi-ld-test-suite tools/etsi-conformance.sh [robot options] [test paths]
#
# The suite is ETSI's (https://forge.etsi.org/rep/cim/ngsi-ld-test-suite) and is not shipped
# with CityOps. Default test paths: Provision, Consumption and Subscription of
# TP/NGSI-LD/ContextInformation (entities, batch operations, queries, discovery, the temporal API,
# subscriptions).
# Environment:
#   ETSI_SUITE     the suite's checkout (required)
#   ETSI_VENV      a venv with the suite's requirements (default: $ETSI_SUITE/.venv, created if missing)
#   ETSI_CONTEXTS  a folder of extra @context files named after their URL's last path segment,
#                  preloaded for the forge.etsi.org context URLs (for machines without internet)
#   PORT           where the hub listens (default 1026, which the suite expects)
#   ETSI_DATABASE  the hub's store: a PostgreSQL URL to run the suite on PostgreSQL (its tables
#                  must be empty: a fresh database); default a throw-away SQLite file
#   CITYOPS_TEMPORAL_INSTANCE_LIMIT  instances an attribute per temporal answer (default here 19:
#                  the suite's pagination tests expect a server whose limit is below their 20+
#                  instances; the product's default is 10,000)
# The MQTT notification tests publish to a broker on localhost:1884; one is started there
# (mosquitto) when nothing listens on that port.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
suite=${ETSI_SUITE:?set ETSI_SUITE to the ETSI NGSI-LD test suite checkout}
venv=${ETSI_VENV:-$suite/.venv}
port=${PORT:-1026}
work=$(mktemp -d /tmp/cityops-etsi.XXXXXX)
forge=https://forge.etsi.org/rep/cim/ngsi-ld-test-suite/-/raw/develop/resources/jsonld-contexts

if [ ! -x "$venv/bin/robot" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$suite/requirements.txt"
fi

preloads=()
for folder in "$suite/resources/jsonld-contexts" ${ETSI_CONTEXTS:-}; do
    [ -d "$folder" ] || continue
    for file in "$folder"/*.jsonld; do
        [ -e "$file" ] && preloads+=(--preload-context "$forge/$(basename "$file")=$file")
    done
done

if ! (exec 3<>/dev/tcp/127.0.0.1/1884) 2>/dev/null && command -v mosquitto >/dev/null; then
    mosquitto -p 1884 -d
fi

CITYOPS_TEMPORAL_INSTANCE_LIMIT=${CITYOPS_TEMPORAL_INSTANCE_LIMIT:-19} "$here/.venv/bin/cityops" serve --port "$port" --database "${ETSI_DATABASE:-$work/hub.db}" --log-level warning "${preloads[@]}" \
    > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done

targets=()
options=()
for arg in "$@"; do
    if [[ "$arg" == -* ]]; then options+=("$arg"); else targets+=("$suite/$arg"); fi
done
[ ${#targets[@]} -gt 0 ] || targets=("$suite/TP/NGSI-LD/ContextInformation/Provision" "$suite/TP/NGSI-LD/ContextInformation/Consumption" "$suite/TP/NGSI-LD/ContextInformation/Subscription")

cd "$suite"
status=0
"$venv/bin/robot" --outputdir "$work/results" --variable "url:http://127.0.0.1:$port/ngsi-ld/v1" \
    --variable "temporal_api_url:http://127.0.0.1:$port/ngsi-ld/v1" "${options[@]}" "${targets[@]}" > "$work/robot.out" || status=$?
tail -n 5 "$work/robot.out"
echo "results: $work/results (server log: $work/server.log)"
exit "$status"  # robot's: the number of failed tests (0 when all passed)
