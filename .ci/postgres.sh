#!/usr/bin/env bash
# A throwaway PostgreSQL server for the sweep tests (tests/study/test_study_sweep.py, marked "postgres").
#
#   url=$(bash .ci/postgres.sh start)   # prints postgresql://postgres@127.0.0.1:PORT/cifarbench
#   CIFARBENCH_TEST_POSTGRES="$url" pytest tests/study
#   bash .ci/postgres.sh stop
#
# A new cluster in a temporary folder, owned by the `postgres` user when run as root (PostgreSQL refuses
# to run as root), listening on 127.0.0.1 only, on a free port, with trust authentication and fsync off
# (the data is thrown away). Debian's `postgresql` package is installed with apt-get when missing.
# Only the URL goes to stdout; progress goes to stderr. The state (folder) is kept in $STATE for `stop`.
set -euo pipefail

STATE="${CIFARBENCH_PG_STATE:-${TMPDIR:-/tmp}/cifarbench-postgres.state}"
say() { echo "postgres: $*" >&2; }

find_bin() {
    local d
    for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
    done
    return 1
}

as_owner() {  # run a command as the cluster's owner: `postgres` when we are root, else ourselves
    if [ "$(id -u)" = "0" ]; then
        if command -v runuser >/dev/null 2>&1; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$(printf '%q ' "$@")"; fi
    else
        "$@"
    fi
}

start() {
    local bin
    if ! bin=$(find_bin); then
        [ "$(id -u)" = "0" ] || { say "PostgreSQL is not installed and I am not root"; exit 1; }
        say "installing Debian's postgresql with apt-get"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
        bin=$(find_bin) || { say "postgresql installed but no initdb found under /usr/lib/postgresql"; exit 1; }
    fi
    if [ -f "$STATE" ]; then
        say "a cluster from an earlier start is still recorded in $STATE; stopping it first"
        stop || true
    fi
    local dir port
    dir=$(mktemp -d "${TMPDIR:-/tmp}/cifarbench-pg.XXXXXX")
    chmod 755 "$dir"
    if [ "$(id -u)" = "0" ]; then chown postgres: "$dir"; fi
    echo "$dir" > "$STATE"
    # A free port: bind port 0 and read what the kernel chose (a tiny race, fine for CI).
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    say "initdb in $dir/data ($("$bin/postgres" --version))"
    as_owner "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >&2 \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "$port" > "$dir/port"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres cifarbench >&2
    say "running on 127.0.0.1:$port (stop with: bash .ci/postgres.sh stop)"
    echo "postgresql://postgres@127.0.0.1:$port/cifarbench"
}

stop() {
    local bin dir
    [ -f "$STATE" ] || { say "nothing to stop (no $STATE)"; return 0; }
    dir=$(cat "$STATE")
    if [ -d "$dir/data" ] && bin=$(find_bin); then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    fi
    case "$dir" in  # remove only what start made
        "${TMPDIR:-/tmp}"/cifarbench-pg.*) rm -rf "$dir" ;;
    esac
    rm -f "$STATE"
    say "stopped and removed $dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
