#!/usr/bin/env bash
# Starts Agora the newcomer's way: installs the C toolchain bits the build needs if they are
# missing (cmake and curl headers for the bundled librdkafka), then runs `agora dev` — the whole
# platform in one process on embedded stores. Arguments go to `agora dev` (e.g. --listen, --data-dir).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
[[ -e /usr/include/curl/curl.h || -e /usr/include/x86_64-linux-gnu/curl/curl.h ]] || need+=(libcurl4-openssl-dev)
if ((${#need[@]})); then
    echo "dev.sh: installing ${need[*]}" >&2
    sudo_=""
    [[ $(id -u) == 0 ]] || sudo_=sudo
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/agora/target}
exec cargo run -q -p agora -- dev "$@"
