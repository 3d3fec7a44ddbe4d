#!/usr/bin/env bash
# The Agora test command: everything CI runs, in order.
#
#   a. install what is missing (apt, pip, npm's buf into ~/.cache/agora/tools)
#   b. buf lint (and buf breaking against the main branch, when there is one with proto/)
#   c. scripts/infra.sh up                          (private PostgreSQL, Redis, Kafka, Cassandra, S3, OpenSearch)
#   d. cargo build --workspace --all-targets       (CARGO_TARGET_DIR defaults to ~/.cache/agora/target)
#   e. cargo nextest run --workspace + doctests     (reads the AGORA_TEST_* variables)
#   f. the Mastodon.py end-to-end suite (crates/gateway/e2e) against three deployment shapes:
#      "dev" (agora dev, everything embedded), "services-postgres" (one process per service on the
#      real servers) and "services-cassandra" (the same with graph, feed and notification on Cassandra); between them, scripts/fuzz.sh (schemathesis from the served OpenAPI document)
#      against a fresh agora dev
#   g. scripts/check-deploy.sh, when present
#   h. a summary with the time of every step; non-zero exit if anything failed
#
# Every process it starts is stopped on exit, failure or Ctrl-C, and the servers are torn down.
# Knobs: CARGO_TARGET_DIR, AGORA_TOOLS_DIR, AGORA_E2E_READY_TIMEOUT (s, default 60), AGORA_TEST_KEEP=1
# (keep the temp dir with the logs).
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -un)" | cut -d: -f6)}"
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

export AGORA_TOOLS_DIR=${AGORA_TOOLS_DIR:-$HOME/.cache/agora/tools}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agora/target}
export PYTHONDONTWRITEBYTECODE=1 # keep __pycache__ out of the work tree
if [[ -n ${CI+x} ]]; then export CI; fi

BUF_VERSION=1.75.0
READY_TIMEOUT=${AGORA_E2E_READY_TIMEOUT:-60}
APT_BUILD=(build-essential ca-certificates pkg-config libssl-dev cmake libcurl4-openssl-dev protobuf-compiler git)
APT_INFRA=(postgresql redis-server)
PIP_TEST=("Mastodon.py==2.3.3|Mastodon.py|mastodon" "websocket-client==1.9.2|websocket-client|websocket" "cryptography==48.0.0|cryptography|cryptography" "http_ece==1.2.1|http_ece|http_ece" "pytest>=7|pytest|pytest" "schemathesis==4.32.5|schemathesis|schemathesis")
BUF=$AGORA_TOOLS_DIR/npm/node_modules/.bin/buf
BIN=$CARGO_TARGET_DIR/debug
INFRA=$REPO/scripts/infra.sh

WORK=$(mktemp -d /tmp/agora-test.XXXXXX)
chmod 755 "$WORK" # the postgres system user must reach the cluster under it
export AGORA_INFRA_DIR=$WORK/infra # a private set of servers, never a developer's running one
PY=""
PIDS=() # every process this script started and has not stopped yet

log() { printf '%s\n' "$*"; }
warn() { printf 'test.sh: %s\n' "$*" >&2; }

# --- process handling -------------------------------------------------------------------------

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid ignored SIGTERM for 10s; killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stop_pids() { # PID...: stops them and forgets them
    local pid keep=() p
    for pid in "$@"; do stop_pid "$pid"; done
    for p in "${PIDS[@]}"; do
        [[ " $* " == *" $p "* ]] || keep+=("$p")
    done
    PIDS=("${keep[@]}")
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    ((${#PIDS[@]} == 0)) || stop_pids "${PIDS[@]}"
    if [[ -d $AGORA_INFRA_DIR ]]; then
        "$INFRA" down || warn "infra.sh down failed"
    fi
    if [[ ${AGORA_TEST_KEEP:-0} == 1 ]]; then
        warn "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'warn "interrupted"; exit 130' INT
trap 'warn "terminated"; exit 143' TERM

free_ports() { # N -> N distinct free loopback ports
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# --- steps (each returns non-zero on failure; set -e does not reach inside them) --------------

apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    local sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo -n)
    if [[ ${AGORA_APT_UPDATED:-0} != 1 ]]; then
        log "apt-get update"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
        export AGORA_APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

step_deps() {
    local pkgs=("${APT_BUILD[@]}" "${APT_INFRA[@]}")
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3 python3-venv python3-pip)
    command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
    apt_install "${pkgs[@]}" || return 1

    PY=$("$INFRA" python) || return 1
    log "python: $PY"
    "$INFRA" deps || return 1
    "$INFRA" pip "${PIP_TEST[@]}" || return 1

    if [[ ! -x $BUF ]] || [[ $("$BUF" --version 2>/dev/null) != "$BUF_VERSION" ]]; then
        log "npm install @bufbuild/buf@$BUF_VERSION into $AGORA_TOOLS_DIR/npm"
        mkdir -p "$AGORA_TOOLS_DIR/npm" || return 1
        npm install --prefix "$AGORA_TOOLS_DIR/npm" --no-audit --no-fund --loglevel=error \
            "@bufbuild/buf@$BUF_VERSION" || return 1
    fi
    log "buf: $("$BUF" --version)"

    if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
        export PATH=$HOME/.cargo/bin:$PATH
    fi
    command -v cargo >/dev/null 2>&1 || { warn "cargo not found: install a Rust toolchain (rustup)"; return 1; }
    log "$(cargo --version)"
    if ! cargo nextest --version >/dev/null 2>&1; then
        log "cargo install cargo-nextest (the test runner; kills hung tests)"
        cargo install --locked cargo-nextest || return 1
    fi
    log "$(cargo nextest --version | head -1)"
}

step_proto() {
    [[ -f proto/buf.yaml ]] || { warn "proto/buf.yaml is missing"; return 1; }
    (cd proto && "$BUF" lint) || return 1
    log "buf lint: clean"
    if git -C "$REPO" rev-parse --verify -q refs/heads/main >/dev/null &&
        git -C "$REPO" cat-file -e main:proto 2>/dev/null; then
        (cd proto && "$BUF" breaking --against "$REPO/.git#branch=main,subdir=proto") || return 1
        log "buf breaking: no breaking change against main"
    else
        log "buf breaking: skipped (no branch main with proto/ in this repository yet)"
    fi
}

step_build() {
    cargo build --workspace --all-targets
}

step_infra() {
    "$INFRA" up || return 1
    # shellcheck disable=SC1091
    source "$AGORA_INFRA_DIR/env" || return 1
}

step_cargo_test() {
    # nextest: one process per test, each killed after the timeout in .config/nextest.toml.
    # Doctests are not run by nextest, so cargo runs them separately.
    timeout 1800 cargo nextest run --workspace --no-tests=warn || return 1
    timeout 600 cargo test --workspace --doc
}

# wait_ready URL PIDS: GET URL answers 200 within READY_TIMEOUT, while none of PIDS (comma list) dies.
wait_ready() {
    log "waiting (at most ${READY_TIMEOUT}s) for $1"
    "$INFRA" wait http "$1" "$READY_TIMEOUT" "$2"
}

show_logs() { # FILE...
    local f
    for f in "$@"; do
        [[ -f $f ]] || continue
        printf '\n----- last 100 lines of %s -----\n' "$f"
        tail -100 "$f"
    done
    echo "----- end of logs -----"
}

run_pytest() { # SHAPE URL
    log "pytest crates/gateway/e2e against $2 (shape $1)"
    AGORA_E2E_URL=$2 AGORA_E2E_SHAPE=$1 "$PY" -m pytest -q -p no:cacheprovider crates/gateway/e2e
}

# with_agora_dev NAME SETTINGS CMD...: a fresh agora dev on a free port (data and log under
# $WORK/NAME, SETTINGS a space-separated list of VAR=value), then CMD... with its URL appended;
# its log is shown when CMD fails.
with_agora_dev() {
    [[ -x $BIN/agora ]] || { warn "$BIN/agora was not built"; return 1; }
    local dir=$WORK/$1 port pid rc=0 settings
    read -ra settings <<<"$2"
    shift 2
    mkdir -p "$dir" || return 1
    port=$(free_ports 1) || return 1
    log "starting agora dev on 127.0.0.1:$port"
    env "${settings[@]}" AGORA_PUBLIC_URL="http://127.0.0.1:$port" \
        "$BIN/agora" dev --listen "127.0.0.1:$port" --data-dir "$dir/data" \
        </dev/null >"$dir/agora-dev.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    if wait_ready "http://127.0.0.1:$port/readyz" "$pid"; then
        "$@" "http://127.0.0.1:$port" || rc=$?
    else
        warn "agora dev did not become ready"
        rc=1
    fi
    stop_pids "$pid"
    ((rc == 0)) || show_logs "$dir/agora-dev.log"
    return "$rc"
}

step_e2e_dev() {
    with_agora_dev e2e-dev "AGORA_GATEWAY_TRUSTED_PROXIES=127.0.0.1/32 AGORA_PUSH_ALLOW_PRIVATE_ENDPOINTS=true" run_pytest dev
}

fuzz() { # URL
    AGORA_PYTHON=$PY bash scripts/fuzz.sh "$1" 30
}

# The public API fuzzed from its own OpenAPI document (scripts/fuzz.sh) against a fresh agora dev:
# any 5xx, or a response the document does not describe, fails the step.
step_fuzz() {
    with_agora_dev fuzz "AGORA_LOG=warn AGORA_GATEWAY_RATE_LIMIT_IP=off AGORA_GATEWAY_RATE_LIMIT_ACCOUNT=off \
AGORA_GATEWAY_RATE_LIMIT_REGISTRATION=off AGORA_GATEWAY_RATE_LIMIT_SIGN_IN=off" fuzz
}

# step_e2e_services [postgres|cassandra]: one process per service on the real servers; with
# cassandra, the graph, feed and notification stores are on the Cassandra node (ScyllaDB's protocol).
step_e2e_services() {
    local stores=${1:-postgres} b
    for b in agora agora-user agora-post agora-graph agora-feed agora-notification agora-gateway; do
        [[ -x $BIN/$b ]] || { warn "$BIN/$b was not built"; return 1; }
    done
    local dir=$WORK/e2e-services-$stores rc=0 svc base ports pids=() logs=() pid db
    mkdir -p "$dir" || return 1
    # gRPC + admin port for each of user, post, graph, feed, notification; HTTP + admin for the
    # gateway.
    read -r -a ports < <(free_ports 12) || return 1
    base=${AGORA_TEST_POSTGRES_URL%/*}
    for svc in user post graph feed notification; do
        db=agora_e2e_${stores}_$svc
        log "creating database $db"
        psql "$AGORA_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE $db" || return 1
    done
    local graph_db=$base/agora_e2e_${stores}_graph feed_db=$base/agora_e2e_${stores}_feed
    local notification_db=$base/agora_e2e_${stores}_notification
    if [[ $stores == cassandra ]]; then
        graph_db="$AGORA_TEST_SCYLLA_URL/agora_e2e_graph?replication_factor=1"
        feed_db="$AGORA_TEST_SCYLLA_URL/agora_e2e_feed?replication_factor=1"
        notification_db="$AGORA_TEST_SCYLLA_URL/agora_e2e_notification?replication_factor=1"
    fi
    local public=http://127.0.0.1:${ports[10]}
    # A Redis database of the shape's own: the two shapes run minutes apart on one Redis, and the
    # rate limiter's counters (5 sign-ups per address per 30 min) must not carry over from one to
    # the other (the fake client addresses are drawn from one pool in each run), nor hot sets or
    # epochs.
    local redis=$AGORA_TEST_REDIS_URL/1
    [[ $stores == cassandra ]] && redis=$AGORA_TEST_REDIS_URL/2
    # Everything the processes share; each then gets its own listen addresses.
    local common=(
        AGORA_BUS_URL="$AGORA_TEST_KAFKA_URL?session_timeout_ms=2000&namespace=e2e$stores"
        AGORA_PUBLIC_URL="$public"
        AGORA_USER_DATABASE_URL="$base/agora_e2e_${stores}_user"
        AGORA_POST_DATABASE_URL="$base/agora_e2e_${stores}_post"
        AGORA_GRAPH_DATABASE_URL="$graph_db"
        AGORA_FEED_DATABASE_URL="$feed_db"
        AGORA_NOTIFICATION_DATABASE_URL="$notification_db"
        AGORA_FEED_CACHE_URL="$redis"
        AGORA_GATEWAY_RATE_LIMIT_URL="$redis"
        AGORA_EPOCHS_URL="$redis"
        AGORA_LIVE_URL="$redis"
        AGORA_GATEWAY_TRUSTED_PROXIES=127.0.0.1/32
        # The Web Push e2e test's receiver listens on 127.0.0.1.
        AGORA_PUSH_ALLOW_PRIVATE_ENDPOINTS=true
    )
    local i=0
    for svc in USER POST GRAPH FEED NOTIFICATION; do
        common+=("AGORA_${svc}_LISTEN=127.0.0.1:${ports[$i]}" "AGORA_${svc}_ADMIN_LISTEN=127.0.0.1:${ports[$((i + 1))]}")
        i=$((i + 2))
    done
    local user_url=http://127.0.0.1:${ports[0]} post_url=http://127.0.0.1:${ports[2]}
    local graph_url=http://127.0.0.1:${ports[4]} feed_url=http://127.0.0.1:${ports[6]}
    local notification_url=http://127.0.0.1:${ports[8]}
    common+=(
        AGORA_POST_USER_URL="$user_url" AGORA_POST_GRAPH_URL="$graph_url"
        AGORA_GRAPH_USER_URL="$user_url"
        AGORA_FEED_USER_URL="$user_url" AGORA_FEED_GRAPH_URL="$graph_url" AGORA_FEED_POST_URL="$post_url"
        AGORA_GATEWAY_USER_URL="$user_url" AGORA_GATEWAY_POST_URL="$post_url"
        AGORA_NOTIFICATION_USER_URL="$user_url" AGORA_NOTIFICATION_POST_URL="$post_url"
        AGORA_NOTIFICATION_GRAPH_URL="$graph_url"
        AGORA_GATEWAY_GRAPH_URL="$graph_url" AGORA_GATEWAY_FEED_URL="$feed_url"
        AGORA_GATEWAY_NOTIFICATION_URL="$notification_url"
        AGORA_GATEWAY_LISTEN=127.0.0.1:${ports[10]} AGORA_GATEWAY_ADMIN_LISTEN=127.0.0.1:${ports[11]}
    )
    log "agora migrate (every store)"
    if ! env "${common[@]}" "$BIN/agora" migrate </dev/null >"$dir/migrate.log" 2>&1; then
        warn "agora migrate failed"
        show_logs "$dir/migrate.log"
        return 1
    fi
    for svc in user graph post feed notification gateway; do
        log "starting agora-$svc"
        env "${common[@]}" "$BIN/agora-$svc" </dev/null >"$dir/agora-$svc.log" 2>&1 &
        pid=$!
        pids+=("$pid")
        PIDS+=("$pid")
        logs+=("$dir/agora-$svc.log")
    done
    local ready=1
    for url in "http://127.0.0.1:${ports[11]}/readyz" "http://127.0.0.1:${ports[1]}/readyz" \
        "http://127.0.0.1:${ports[3]}/readyz" "http://127.0.0.1:${ports[5]}/readyz" "http://127.0.0.1:${ports[7]}/readyz" \
        "http://127.0.0.1:${ports[9]}/readyz"; do
        wait_ready "$url" "$(IFS=,; echo "${pids[*]}")" || { ready=0; break; }
    done
    if ((ready)); then
        run_pytest "services-$stores" "$public" || rc=$?
    else
        warn "the services shape did not become ready"
        rc=1
    fi
    stop_pids "${pids[@]}"
    ((rc == 0)) || show_logs "$dir/migrate.log" "${logs[@]}"
    return "$rc"
}

step_check_deploy() {
    if [[ -f scripts/check-deploy.sh ]]; then
        bash scripts/check-deploy.sh
    else
        log "skipped: no scripts/check-deploy.sh"
    fi
}

# --- driver -----------------------------------------------------------------------------------

STEP_NAMES=()
STEP_RESULTS=()
STEP_TIMES=()
T_START=${EPOCHREALTIME/[.,]/}

fmt_secs() { # microseconds -> "12.3s"
    local us=$1
    printf '%d.%ds' $((us / 1000000)) $((us / 100000 % 10))
}

run_step() { # TITLE FUNCTION [ARG...]
    local title=$1 fn=$2 t0 rc=0
    shift 2
    printf '\n==> %s\n' "$title"
    t0=${EPOCHREALTIME/[.,]/}
    "$fn" "$@" || rc=$?
    STEP_NAMES+=("$title")
    STEP_TIMES+=("$(fmt_secs $((${EPOCHREALTIME/[.,]/} - t0)))")
    if ((rc == 0)); then
        STEP_RESULTS+=(ok)
    else
        STEP_RESULTS+=(FAILED)
        warn "step failed: $title (exit $rc)"
    fi
    return "$rc"
}

skip_step() { # TITLE REASON
    printf '\n==> %s\n' "$1"
    log "skipped: $2"
    STEP_NAMES+=("$1")
    STEP_RESULTS+=(skipped)
    STEP_TIMES+=("-")
}

summary() {
    local i failed=0
    printf '\n==> summary\n'
    for i in "${!STEP_NAMES[@]}"; do
        printf '  %-8s %8s  %s\n' "${STEP_RESULTS[$i]}" "${STEP_TIMES[$i]}" "${STEP_NAMES[$i]}"
        [[ ${STEP_RESULTS[$i]} == FAILED ]] && failed=1
    done
    printf '  %-8s %8s\n' total "$(fmt_secs $((${EPOCHREALTIME/[.,]/} - T_START)))"
    if ((failed)); then
        printf 'RESULT: FAILED\n'
        return 1
    fi
    printf 'RESULT: all steps passed\n'
}

main() {
    local built=0 infra=0
    if ! run_step "install dependencies" step_deps; then
        summary || true
        exit 1
    fi
    run_step "proto: buf lint / buf breaking" step_proto || true
    # The servers first: the JVMs (Kafka, Cassandra) start while the build runs.
    run_step "infra: scripts/infra.sh up" step_infra && infra=1
    run_step "cargo build --workspace --all-targets" step_build && built=1
    if ((built && infra)); then
        run_step "cargo nextest run --workspace" step_cargo_test || true
        run_step "e2e: shape dev" step_e2e_dev || true
        run_step "fuzz: schemathesis against agora dev" step_fuzz || true
        run_step "e2e: shape services on PostgreSQL" step_e2e_services postgres || true
        run_step "e2e: shape services, graph and feed on Cassandra" step_e2e_services cassandra || true
    else
        skip_step "cargo nextest run --workspace" "the build or the servers failed"
        skip_step "e2e: shape dev" "the build or the servers failed"
        skip_step "fuzz: schemathesis against agora dev" "the build or the servers failed"
        skip_step "e2e: shape services on PostgreSQL" "the build or the servers failed"
        skip_step "e2e: shape services, graph and feed on Cassandra" "the build or the servers failed"
    fi
    run_step "deploy checks: scripts/check-deploy.sh" step_check_deploy || true
    summary
}

main "$@"
