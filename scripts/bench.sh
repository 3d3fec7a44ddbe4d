#!/usr/bin/env bash
# Runs agora-bench's socialNetwork workloads against one deployment shape and keeps the results.
#
#   scripts/bench.sh dev       [USERS]   # agora dev (SQLite, in-process bus, in-memory hot set)
#   scripts/bench.sh services  [USERS]   # one process per service on PostgreSQL + Redis + Kafka
#   scripts/bench.sh services-scylla [USERS]  # the same with graph, feed and notification on ScyllaDB (Cassandra here)
#
# Release binaries are built first. Results (tables, JSON, SVG plots, server logs) go to
# bench-results/<shape>-<date>/. Rate limits are switched off for the run: the load generator
# registers thousands of accounts from one address. Environment knobs: DURATION (20s),
# CONNECTIONS (32), MIX_RATE (open-loop rate for the mix), CELEBRITY (followers of the one large
# account in the fan-out run; 0 skips that run), STATE (the agora-bench state file), DATA_DIR
# (agora dev's data directory) and PORT (the gateway's port): keep all three to reuse one large
# graph across runs (the state's tokens name the address that issued them, so a new port makes
# them invalid). A `floor` run (an
# axum handler reading 20 ids from Redis, same load generator) comes first, and summary.txt gives
# every workload as a fraction of it. AGORA_DEV_BIN runs another agora binary (a build from before a
# change) in the dev shape. STREAMS (0 skips it) adds a streaming run: that many SSE connections
# held while the open-loop mix runs, on a graph of its own with a 1,000-follower celebrity
# (STREAM_FOLLOWERS), reporting connections held, the gateway's RSS per 1,000 connections and the
# delivery latency of the celebrity's statuses to its followers' streams.
set -uo pipefail

SHAPE=${1:-dev}
USERS=${2:-1000}
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-32}
MIX_RATE=${MIX_RATE:-500}
CELEBRITY=${CELEBRITY:-0}
STREAMS=${STREAMS:-0}
STREAM_FOLLOWERS=${STREAM_FOLLOWERS:-1000}
REPO=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agora/target}
BIN=$CARGO_TARGET_DIR/release
OUT=$REPO/bench-results/$SHAPE-$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d /tmp/agora-bench.XXXXXX)
PIDS=()
declare -A grpc admin
STARTED_INFRA=0

log() { printf 'bench: %s\n' "$*" >&2; }

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if ((STARTED_INFRA)); then "$REPO/scripts/infra.sh" down >/dev/null 2>&1; fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # URL
    local i
    for i in $(seq 1 300); do
        curl -fsS "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "not ready: $1"
    return 1
}

log "building release binaries"
(cd "$REPO" && cargo build --release -p agora -p agora-bench -p agora-user -p agora-post -p agora-graph -p agora-feed \
    -p agora-notification -p agora-gateway) || exit 1
mkdir -p "$OUT"

NO_LIMITS=(AGORA_LOG=warn AGORA_GATEWAY_RATE_LIMIT_IP=off AGORA_GATEWAY_RATE_LIMIT_ACCOUNT=off
    AGORA_GATEWAY_RATE_LIMIT_REGISTRATION=off AGORA_GATEWAY_RATE_LIMIT_SIGN_IN=off
    # The streaming run holds thousands of connections from this one address.
    AGORA_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS=200000 AGORA_GATEWAY_STREAMS_PER_ACCOUNT=1000)
PORT=${PORT:-$(free_port)}
URL=http://127.0.0.1:$PORT

case $SHAPE in
dev)
    admin[dev]=$(free_port)
    env "${NO_LIMITS[@]}" AGORA_DEV_ADMIN_LISTEN="127.0.0.1:${admin[dev]}" "${AGORA_DEV_BIN:-$BIN/agora}" dev --listen "127.0.0.1:$PORT" --data-dir "${DATA_DIR:-$WORK/data}" >"$OUT/agora-dev.log" 2>&1 &
    PIDS+=($!)
    DEV_PID=$!
    wait_ready "$URL/readyz" || exit 1
    ;;
services | services-scylla)
    # Servers already named by AGORA_TEST_* (e.g. from `scripts/infra.sh up`) are reused.
    if [[ -z ${AGORA_TEST_POSTGRES_URL:-} ]]; then
        "$REPO/scripts/infra.sh" up >"$OUT/infra.log" 2>&1 || { log "infra failed"; exit 1; }
        STARTED_INFRA=1
        # shellcheck disable=SC1091
        source "${AGORA_INFRA_DIR:-/tmp/agora-infra}/env"
    fi
    base=${AGORA_TEST_POSTGRES_URL%/*}
    suffix=$(date +%s)
    common=("${NO_LIMITS[@]}" AGORA_BUS_URL="$AGORA_TEST_KAFKA_URL?session_timeout_ms=6000&partitions=6"
        AGORA_PUBLIC_URL="$URL" AGORA_FEED_CACHE_URL="$AGORA_TEST_REDIS_URL"
        AGORA_GATEWAY_RATE_LIMIT_URL="$AGORA_TEST_REDIS_URL" AGORA_EPOCHS_URL="$AGORA_TEST_REDIS_URL" AGORA_LIVE_URL="$AGORA_TEST_REDIS_URL"
        AGORA_GATEWAY_LISTEN="127.0.0.1:$PORT")
    for svc in user post graph feed notification; do
        up=${svc^^}
        if [[ $SHAPE == services-scylla && ($svc == graph || $svc == feed || $svc == notification) ]]; then
            common+=("AGORA_${up}_DATABASE_URL=$AGORA_TEST_SCYLLA_URL/bench_${svc}_$suffix?replication_factor=1")
            continue
        fi
        psql "$AGORA_TEST_POSTGRES_URL" -q -c "CREATE DATABASE bench_${svc}_$suffix" || exit 1
        common+=("AGORA_${up}_DATABASE_URL=$base/bench_${svc}_$suffix")
    done
    for svc in user post graph feed notification gateway; do
        up=${svc^^}
        [[ $svc == gateway ]] || { grpc[$svc]=$(free_port); common+=("AGORA_${up}_LISTEN=127.0.0.1:${grpc[$svc]}"); }
        admin[$svc]=$(free_port)
        common+=("AGORA_${up}_ADMIN_LISTEN=127.0.0.1:${admin[$svc]}")
    done
    for svc in post graph feed notification gateway; do
        for peer in user post graph feed notification; do
            [[ $svc == "$peer" ]] || common+=("AGORA_${svc^^}_${peer^^}_URL=http://127.0.0.1:${grpc[$peer]}")
        done
    done
    for svc in user graph post feed notification gateway; do
        env "${common[@]}" "$BIN/agora-$svc" >"$OUT/agora-$svc.log" 2>&1 &
        PIDS+=($!)
    done
    for svc in user graph post feed notification gateway; do
        wait_ready "http://127.0.0.1:${admin[$svc]}/readyz" || exit 1
    done
    ;;
*)
    echo "usage: $0 dev|services|services-scylla [USERS]" >&2
    exit 2
    ;;
esac

# The social graph is built once (by the first workload) and reused by the others. With STATE and
# DATA_DIR (dev shape) and PORT kept, later runs reuse it too.
STATE=${STATE:-$WORK/state.json}

run() { # NAME ARGS...
    local name=$1
    shift
    log "$name"
    "$BIN/agora-bench" --url "$URL" --users "$USERS" --graph power-law --seed 7 --state "${RUN_STATE:-$STATE}" \
        --json "$OUT/$name.json" "$@" 2> >(grep -v '^\[' >&2) | tee "$OUT/$name.txt"
}

# The floor: an axum handler reading 20 ids from Redis, driven by the same load generator.
FLOOR_REDIS=${AGORA_TEST_REDIS_URL:-}
if [[ -z $FLOOR_REDIS ]]; then
    rport=$(free_port)
    redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
    PIDS+=($!)
    FLOOR_REDIS=redis://127.0.0.1:$rport
fi
FLOOR_PORT=$(free_port)
"$BIN/agora-bench" --serve-floor "127.0.0.1:$FLOOR_PORT" --floor-redis "$FLOOR_REDIS" >"$OUT/floor.log" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$FLOOR_PORT/floor" || exit 1

C=(--mode closed --connections "$CONNECTIONS" --duration "$DURATION")
log floor
"$BIN/agora-bench" --url "http://127.0.0.1:$FLOOR_PORT" --workload floor "${C[@]}" --json "$OUT/floor.json" \
    2> >(grep -v '^\[' >&2) | tee "$OUT/floor.txt"
run read-home-timeline --workload read-home-timeline "${C[@]}" --plot "$OUT/read-home-timeline.svg"
run read-user-timeline --workload read-user-timeline "${C[@]}" --plot "$OUT/read-user-timeline.svg"
run compose-post --workload compose-post "${C[@]}" --plot "$OUT/compose-post.svg"
run mix-closed --workload mix "${C[@]}" --plot "$OUT/mix-closed.svg"
run mix-open --workload mix --mode open --rate "$MIX_RATE" --duration "$DURATION" --plot "$OUT/mix-open.svg"
run fanout --fanout-lag 20 --plot "$OUT/fanout.svg"
if ((CELEBRITY > 0)); then
    USERS=$((CELEBRITY + 1)) run fanout-celebrity --celebrity-followers "$CELEBRITY" --fanout-lag 10 \
        --plot "$OUT/fanout-celebrity.svg"
fi
if ((STREAMS > 0)); then
    # The gateway's process: agora dev itself, or agora-gateway in the services shapes.
    gw_pid=${DEV_PID:-$(pgrep -n -f "$BIN/agora-gateway" || true)}
    USERS=$((STREAM_FOLLOWERS + 1)) RUN_STATE=$WORK/state-streams.json run streams \
        --celebrity-followers "$STREAM_FOLLOWERS" --workload mix --mode open --rate "$MIX_RATE" \
        --duration "$DURATION" --streams "$STREAMS" ${gw_pid:+--rss-pid "$gw_pid"}
fi
# Each service's metrics as the run left them (where the time went: gRPC durations by method,
# fan-out seconds, stream renders shared and made).
for svc in "${!admin[@]}"; do
    curl -fsS "http://127.0.0.1:${admin[$svc]}/metrics" >"$OUT/metrics-$svc.txt" 2>/dev/null
done
# One table for the whole run, each workload also as a fraction of the floor measured with it.
python3 - "$OUT" "$SHAPE" "$USERS" <<'PY' | tee "$OUT/summary.txt"
import json, pathlib, sys
out, shape, users = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = ["floor", "read-home-timeline", "read-user-timeline", "compose-post", "mix-closed", "mix-open"]
data = {r: json.loads((out / f"{r}.json").read_text()) for r in rows if (out / f"{r}.json").exists()}
floor = data.get("floor", {}).get("success_throughput_rps") or 0
print(f"shape {shape}, {users} users")
print(f"{'workload':<20} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'of floor':>9}")
for r, d in data.items():
    rps, lat = d["success_throughput_rps"], d["latency_ms"]
    frac = f"{rps / floor:.3f}" if floor else "-"
    print(f"{r:<20} {rps:>9.1f} {lat['p50']:>8.2f} {lat['p99']:>8.2f} {d['errors']:>7} {frac:>9}")
for r, d in data.items():
    drain = d.get("fanout_drain_s")
    if drain is not None:
        print(f"fan-out caught up {drain:.2f} s after {r}" if isinstance(drain, float) else f"fan-out: {drain} after {r}")
PY
if [[ -f $OUT/fanout.txt ]]; then sed -n '2,$p' "$OUT/fanout.txt" | tee -a "$OUT/summary.txt"; fi
if [[ -n ${DEV_PID:-} ]]; then
    echo "agora dev RSS after the run: $(($(ps -o rss= -p "$DEV_PID") / 1024)) MiB" | tee -a "$OUT/summary.txt"
fi
log "results in $OUT"
