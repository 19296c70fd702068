# Sourced by the scripts that test a live server (scripts/schemathesis,
# scripts/generated-clients): starts pb-backups on a free port of 127.0.0.1 with a fresh data
# dir and a known superuser, and stops it on exit.
#
#   start_test_server BIN WORK LOGDIR EMAIL PASSWORD
#
# sets `server` (its pid) and `base` (http://127.0.0.1:PORT); the server's stdout and log are
# in WORK, the log is copied to LOGDIR/server.log on exit for a failure's post-mortem, and WORK
# is removed. `server_panicked` and `server_healthy` are the checks to run at the end.

start_test_server() {
    local bin=$1 work=$2 logdir=$3 email=$4 password=$5
    server=
    mkdir -p "$logdir"
    trap "stop_test_server '$work' '$logdir'" EXIT
    PB_SUPERUSER_EMAIL="$email" PB_SUPERUSER_PASSWORD="$password" RUST_LOG=info \
        "$bin" serve --http 127.0.0.1:0 --dir "$work/data" >"$work/server.out" 2>"$work/server.log" &
    server=$!
    # The server prints its address once it listens.
    base=
    for _ in $(seq 300); do
        base="$(sed -n 's|^ *REST API: *\(http://[^ ]*\)/api/$|\1|p' "$work/server.out" | head -n1)"
        [[ -n $base ]] && break
        kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; echo "server exited" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n $base ]] || { echo "server printed no address within 30 s" >&2; exit 1; }
    echo "server at $base (data $work/data)"
}

stop_test_server() {
    local work=$1 logdir=$2
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    [[ -f $work/server.log ]] && cp "$work/server.log" "$logdir/server.log"
    rm -rf "$work"
}

# What a client cannot see: a panic answered as a dropped connection.
server_panicked() {
    grep -n 'panicked' "$1/server.log" >&2
}

server_healthy() {
    curl -sf "$base/api/health" >/dev/null
}
