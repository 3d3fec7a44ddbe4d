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
#   scripts/infra.sh kafka-broker DIR PORT
#                             run one Apache Kafka node (KRaft: broker + controller) in the foreground,
#                             its log directory in DIR (formatted on first use), listening on PORT; tests
#                             that stop and restart a broker run this ($AGORA_TEST_KAFKA_BROKER)
#   scripts/infra.sh cassandra-node DIR PORT
#                             the same for one Apache Cassandra node (CQL on PORT; $AGORA_TEST_CASSANDRA_NODE)
#
# Servers (all on 127.0.0.1): PostgreSQL 15, Redis 7, Apache Kafka 4 (KRaft, one node) and Apache
# Cassandra 5.0 (one node; speaks ScyllaDB's CQL protocol) — both from Maven Central, run on the
# installed Java 17 — moto (S3), osmem-server (OpenSearch REST).
# State lives in ${AGORA_INFRA_DIR:-/tmp/agora-infra}; fetched jars in $AGORA_TOOLS_DIR.
# Then: source "$AGORA_INFRA_DIR/env" (or eval "$(scripts/infra.sh env)").
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -un)" | cut -d: -f6)}"
INFRA_DIR=${AGORA_INFRA_DIR:-/tmp/agora-infra}
TOOLS_DIR=${AGORA_TOOLS_DIR:-$HOME/.cache/agora/tools}
READY_TIMEOUT=${AGORA_INFRA_READY_TIMEOUT:-60}
MARKER=.agora-infra
KAFKA_VERSION=4.4.0
KAFKA_HEAP=${AGORA_KAFKA_HEAP:-384m}
CASSANDRA_VERSION=5.0.6
# Every table costs heap (about 1 MiB each); the conformance suites create a keyspace per case.
CASSANDRA_HEAP=${AGORA_CASSANDRA_HEAP:-2g}

APT_PACKAGES=(postgresql redis-server)
# "pip spec|distribution|modules that must import"
PIP_PACKAGES=(
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
    kafka_libs >/dev/null
    cassandra_libs >/dev/null
}

# maven_fetch DIR NAME EXCLUDES GROUP:ARTIFACT:VERSION...: the jars of those artifacts and their
# runtime dependencies, copied from Maven Central into DIR/libs (once per machine: DIR/.complete).
maven_fetch() {
    local dir=$1 name=$2 excludes=$3 deps="" coord g a v
    shift 3
    [[ -f $dir/.complete ]] && return 0
    command -v java >/dev/null 2>&1 || apt_install openjdk-17-jre-headless
    command -v mvn >/dev/null 2>&1 || apt_install maven
    log "fetching $name from Maven Central into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    for coord in "$@"; do
        IFS=: read -r g a v <<<"$coord"
        deps+="<dependency><groupId>$g</groupId><artifactId>$a</artifactId><version>$v</version></dependency>"
    done
    printf '%s\n' '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>' \
        '<groupId>agora.tools</groupId><artifactId>server</artifactId><version>1</version><packaging>pom</packaging>' \
        "<dependencies>$deps</dependencies></project>" >"$dir/pom.xml"
    (cd "$dir" && mvn -q -B dependency:copy-dependencies -DoutputDirectory=libs -DincludeScope=runtime \
        "-DexcludeArtifactIds=$excludes") >&2 || die "could not fetch $name from Maven Central"
}

# kafka_libs: prints the directory holding Apache Kafka's jars and logging configuration.
kafka_libs() {
    local dir=$TOOLS_DIR/kafka-$KAFKA_VERSION
    if [[ ! -f $dir/.complete ]]; then
        maven_fetch "$dir" "Apache Kafka $KAFKA_VERSION" slf4j-reload4j,reload4j \
            "org.apache.kafka:kafka_2.13:$KAFKA_VERSION" org.apache.logging.log4j:log4j-slf4j-impl:2.25.5
        cat >"$dir/log4j2.properties" <<'EOF'
status = error
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
EOF
        touch "$dir/.complete"
    fi
    echo "$dir"
}

# kafka_broker DIR PORT: one KRaft node (broker + controller) in the foreground; formats DIR on
# first use, so a restart on the same DIR keeps topics, messages and committed offsets.
# kept_port FILE: the port written in FILE, or a free one, written there, so that a server
# restarted on the same directory comes back on the same port.
kept_port() {
    local port
    if [[ ! -f $1 ]]; then
        PY=${PY:-$(python_bin)}
        port=$(free_ports 1) || return 1
        echo "$port" >"$1"
    fi
    cat "$1"
}

kafka_broker() {
    local dir=$1 port=$2 libs cport
    libs=$(kafka_libs)
    mkdir -p "$dir"
    cport=$(kept_port "$dir/controller.port")
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests use short sessions (2 s) so that a killed consumer's partitions move on quickly.
group.min.session.timeout.ms=1000
group.initial.rebalance.delay.ms=0
EOF
    local java=(java "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1
        "-Dlog4j2.configurationFile=$libs/log4j2.properties" -cp "$libs/libs/*")
    if [[ ! -f $dir/data/meta.properties ]]; then
        local cluster
        cluster=$("${java[@]}" kafka.tools.StorageTool random-uuid) || die "kafka random-uuid failed"
        "${java[@]}" kafka.tools.StorageTool format -t "$cluster" -c "$dir/server.properties" \
            >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "kafka storage format failed"; }
    fi
    exec "${java[@]}" kafka.Kafka "$dir/server.properties"
}

# cassandra_libs: prints the directory holding Apache Cassandra's jars and logging configuration.
cassandra_libs() {
    local dir=$TOOLS_DIR/cassandra-$CASSANDRA_VERSION
    if [[ ! -f $dir/.complete ]]; then
        maven_fetch "$dir" "Apache Cassandra $CASSANDRA_VERSION" none \
            "org.apache.cassandra:cassandra-all:$CASSANDRA_VERSION"
        cat >"$dir/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="WARN"><appender-ref ref="STDOUT"/></root>
  <logger name="org.apache.cassandra.service.StorageService" level="INFO"/>
  <logger name="org.apache.cassandra.transport" level="INFO"/>
</configuration>
EOF
        touch "$dir/.complete"
    fi
    echo "$dir"
}

# The --add-exports/--add-opens Cassandra 5.0 needs on Java 17 (as its jvm17-server.options lists).
CASSANDRA_JAVA17_OPTS=(
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
    --add-exports java.base/sun.nio.ch=ALL-UNNAMED --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED --add-opens java.base/java.nio=ALL-UNNAMED
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED
    --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.math=ALL-UNNAMED --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens java.base/java.net=ALL-UNNAMED
)

# cassandra_node DIR CQL_PORT: one Cassandra node in the foreground, its data in DIR, from our own
# minimal cassandra.yaml (loopback only, small memtables, no bootstrap, no auth).
cassandra_node() {
    local dir=$1 port=$2 libs storage
    libs=$(cassandra_libs)
    mkdir -p "$dir"
    storage=$(kept_port "$dir/storage.port")
    cat >"$dir/cassandra.yaml" <<EOF
cluster_name: agora-test
num_tokens: 1
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
auto_bootstrap: false
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
commitlog_directory: $dir/data/commitlog
data_file_directories: [$dir/data/data]
saved_caches_directory: $dir/data/saved_caches
hints_directory: $dir/data/hints
cdc_raw_directory: $dir/data/cdc
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$storage"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage
native_transport_port: $port
start_native_transport: true
endpoint_snitch: SimpleSnitch
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
memtable_heap_space: 64MiB
memtable_offheap_space: 64MiB
concurrent_reads: 8
concurrent_writes: 8
concurrent_counter_writes: 8
concurrent_compactors: 1
key_cache_size: 8MiB
disk_access_mode: mmap_index_only
read_request_timeout: 10000ms
write_request_timeout: 5000ms
cas_contention_timeout: 5000ms
counter_write_request_timeout: 5000ms
request_timeout: 10000ms
# Tests create and drop many small keyspaces; snapshots of dropped tables only fill the disk.
auto_snapshot: false
EOF
    exec java "-Xms$CASSANDRA_HEAP" "-Xmx$CASSANDRA_HEAP" -Xss512k -XX:+UseG1GC -XX:ParallelGCThreads=2 -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError \
        "${CASSANDRA_JAVA17_OPTS[@]}" -Djdk.attach.allowAttachSelf=true -Dcassandra-foreground=yes \
        "-Dcassandra.config=file://$dir/cassandra.yaml" "-Dlogback.configurationFile=$libs/logback.xml" \
        "-Dcassandra.storagedir=$dir/data" -Dcassandra.ring_delay_ms=0 -Dcassandra.skip_wait_for_gossip_to_settle=0 \
        -Dcassandra.superuser_setup_delay_ms=0 -cp "$libs/libs/*" org.apache.cassandra.service.CassandraDaemon
}

# cassandra_ready PORT PID: the node answers a CQL OPTIONS request with SUPPORTED.
cassandra_ready() {
    "$PY" - "$1" "$2" "$READY_TIMEOUT" <<'EOF'
import socket, struct, sys, time
port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) * 3
start = time.monotonic()
while time.monotonic() - start < timeout:
    try:
        open(f"/proc/{pid}/stat").close()
    except OSError:
        sys.exit(2)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(struct.pack(">BBhBi", 0x04, 0, 1, 0x05, 0))  # v4 OPTIONS
            head = s.recv(9)
            if len(head) == 9 and head[4] == 0x06:  # SUPPORTED
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}

# kafka_ready PORT PID: the broker answers the Kafka protocol (ApiVersions), not only TCP.
kafka_ready() {
    "$PY" - "$1" "$2" "$READY_TIMEOUT" <<'EOF'
import socket, struct, sys, time
port, pid, timeout = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
# ApiVersions v0: api_key 18, api_version 0, correlation id 1, client id "infra".
body = struct.pack(">hhih", 18, 0, 1, 5) + b"infra"
start = time.monotonic()
while time.monotonic() - start < timeout:
    try:
        open(f"/proc/{pid}/stat").close()
    except OSError:
        sys.exit(2)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", s.recv(4))[0]
            data = b""
            while len(data) < size:
                chunk = s.recv(size - len(data))
                if not chunk:
                    break
                data += chunk
            if len(data) >= 6 and struct.unpack(">ih", data[:6])[1] == 0:
                sys.exit(0)
    except Exception:
        pass
    time.sleep(0.1)
sys.exit(1)
EOF
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

osmem_bin() {
    "$PY" -c 'import osmem_server; print(osmem_server.resolve_binary())'
}

cmd_up() {
    if [[ -f $INFRA_DIR/env ]]; then
        local all=1 n
        for n in postgres redis kafka cassandra s3 opensearch; do is_ours "$n" || all=0; done
        if ((all)); then
            log "already running in $INFRA_DIR"
            cat "$INFRA_DIR/env"
            return 0
        fi
        log "stale state in $INFRA_DIR: cleaning up first"
    fi
    [[ -e $INFRA_DIR ]] && cmd_down
    ensure_deps

    local osmem
    osmem=$(osmem_bin)
    [[ -x $osmem ]] || die "osmem-server binary missing at $osmem"

    mkdir -p "$INFRA_DIR"/{logs,run,redis,bin}
    touch "$INFRA_DIR/$MARKER"
    chmod 755 "$INFRA_DIR" "$INFRA_DIR/logs"
    # From here on a failure stops whatever was started.
    trap 'rc=$?; if ((rc != 0)); then log "up failed: stopping what was started"; cmd_down || true; fi' EXIT

    local pg redis kafka s3 os cql t0=$SECONDS
    read -r pg redis kafka s3 os cql < <(free_ports 6)

    # Cassandra takes the longest to come up: start it first, check on it last.
    log "cassandra $CASSANDRA_VERSION on 127.0.0.1:$cql"
    start_bg cassandra "$0" cassandra-node "$INFRA_DIR/cassandra" "$cql"

    log "postgres on 127.0.0.1:$pg"
    start_postgres "$pg"

    log "redis on 127.0.0.1:$redis"
    start_bg redis redis-server --port "$redis" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --dir "$INFRA_DIR/redis"
    wait_for redis "127.0.0.1:$redis" "$READY_TIMEOUT" "$(pid_of redis)" || fail_with_log redis "no PONG"

    log "kafka $KAFKA_VERSION on 127.0.0.1:$kafka"
    start_bg kafka "$0" kafka-broker "$INFRA_DIR/kafka" "$kafka"

    log "moto (s3) on 127.0.0.1:$s3"
    start_bg s3 "$PY" -m moto.server -H 127.0.0.1 -p "$s3"

    log "osmem-server (opensearch) on 127.0.0.1:$os"
    start_bg opensearch "$osmem" -addr "127.0.0.1:$os" -no-stdin-watch -no-ja

    kafka_ready "$kafka" "$(pid_of kafka)" || fail_with_log kafka "no answer to ApiVersions"
    log "kafka ready after $((SECONDS - t0))s"
    wait_for http "http://127.0.0.1:$s3/" "$READY_TIMEOUT" "$(pid_of s3)" || fail_with_log s3 "no HTTP 200"
    wait_for http "http://127.0.0.1:$os/" "$READY_TIMEOUT" "$(pid_of opensearch)" || fail_with_log opensearch "no HTTP 200"
    cassandra_ready "$cql" "$(pid_of cassandra)" || fail_with_log cassandra "no answer to a CQL OPTIONS request"
    log "cassandra ready after $((SECONDS - t0))s"

    # Tests that stop and restart a broker of their own run this (arguments: DIR PORT).
    mkdir -p "$INFRA_DIR/bin"
    printf '#!/usr/bin/env bash\nexec %q kafka-broker "$@"\n' "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" \
        >"$INFRA_DIR/bin/kafka-broker"
    printf '#!/usr/bin/env bash\nexec %q cassandra-node "$@"\n' "$(cd "$(dirname "$0")" && pwd)/$(basename "$0")" \
        >"$INFRA_DIR/bin/cassandra-node"
    chmod +x "$INFRA_DIR/bin/kafka-broker" "$INFRA_DIR/bin/cassandra-node"

    cat >"$INFRA_DIR/env.tmp" <<EOF
# Agora test servers started by scripts/infra.sh (state: $INFRA_DIR)
export AGORA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg/postgres
export AGORA_TEST_REDIS_URL=redis://127.0.0.1:$redis
export AGORA_TEST_KAFKA_URL=kafka://127.0.0.1:$kafka
export AGORA_TEST_KAFKA_BROKER=$INFRA_DIR/bin/kafka-broker
export AGORA_TEST_SCYLLA_URL=scylla://127.0.0.1:$cql
export AGORA_TEST_CASSANDRA_NODE=$INFRA_DIR/bin/cassandra-node
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
    for n in opensearch s3 cassandra kafka redis; do
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
    kafka-broker)
        (($# == 2)) || die "usage: $0 kafka-broker DIR PORT"
        kafka_broker "$@"
        ;;
    cassandra-node)
        (($# == 2)) || die "usage: $0 cassandra-node DIR CQL_PORT"
        cassandra_node "$@"
        ;;
    wait)
        (($# >= 3)) || die "usage: $0 wait tcp|http|redis TARGET TIMEOUT [PID,PID...]"
        PY=$(python_bin)
        wait_for "$@"
        ;;
    *)
        echo "usage: $0 up|down|env|deps|python|pip|wait|kafka-broker|cassandra-node" >&2
        exit 2
        ;;
    esac
}

main "$@"
