#!/usr/bin/env bash
# Cube in one command: set the machine up, start a local cluster (one manager, two workers) in a
# temporary directory, run a sample web task, show it working, then tear everything down.
#   ./scripts/demo.sh          run the demo and clean up
#   ./scripts/demo.sh --keep   leave the cluster running and print how to use and stop it
# Ports: the manager's defaults 5555-5558 on 127.0.0.1 (override with CUBE_API_PORT,
# CUBE_WORKER_PORT, CUBE_METRICS_PORT, CUBE_EVENTS_PORT).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY="$ROOT/.venv/bin/python"
IMAGE=cube-busybox:latest
API_PORT=${CUBE_API_PORT:-5555}
WORKER_PORT=${CUBE_WORKER_PORT:-5556}
METRICS_PORT=${CUBE_METRICS_PORT:-5557}
EVENTS_PORT=${CUBE_EVENTS_PORT:-5558}
export CUBE_MANAGER="127.0.0.1:$API_PORT"

keep=0
for arg in "$@"; do
    case "$arg" in
        --keep) keep=1 ;;
        -h|--help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: unknown argument '$arg' (usage: $0 [--keep])" >&2; exit 2 ;;
    esac
done

say() { echo "[demo] $*"; }
cube() { "$PY" "$ROOT/bin/cube" "$@"; }

start=$(date +%s)
TMP=""
PIDS=()       # manager, worker-1, worker-2
NAMES=()
TASK_IDS=()
done_ok=0

show_logs() {
    local name
    for name in "${NAMES[@]}"; do
        if [ -s "$TMP/$name.log" ]; then
            echo "----- last lines of $TMP/$name.log -----" >&2
            tail -n 15 "$TMP/$name.log" >&2
        fi
    done
}

fail() {
    echo "[demo] FAILED: $*" >&2
    [ -n "$TMP" ] && show_logs
    exit 1
}

alive() { kill -0 "$1" 2>/dev/null; }

# Stop the demo's tasks, then the processes, then remove leftover containers and the temp dir.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ "$keep" -eq 1 ] && [ "$done_ok" -eq 1 ] && exit 0
    set +e
    [ "$rc" -ne 0 ] && [ "$done_ok" -eq 0 ] && say "cleaning up"
    if [ "${#PIDS[@]}" -gt 0 ] && alive "${PIDS[0]}"; then
        # Include tasks whose id we never saw (e.g. a start that timed out but was accepted).
        local ids
        ids=$(cube task ls --json 2>/dev/null | "$PY" -c \
            'import json, sys; print(" ".join(t["id"] for t in json.load(sys.stdin)))' 2>/dev/null)
        for id in $ids; do
            [[ " ${TASK_IDS[*]} " == *" $id "* ]] || TASK_IDS+=("$id")
        done
        for id in "${TASK_IDS[@]}"; do
            cube task stop "$id" >/dev/null 2>&1 && say "stopping task $id"
        done
        for _ in $(seq 40); do   # up to 10 s for the workers to stop the containers
            local left=0
            for id in "${TASK_IDS[@]}"; do
                [ -n "$(docker ps -q --filter "label=cube.task_id=$id" 2>/dev/null)" ] && left=1
            done
            [ "$left" -eq 0 ] && break
            sleep 0.25
        done
    fi
    if [ "${#PIDS[@]}" -gt 0 ]; then
        say "stopping the cluster"
        local i pid
        for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null; done
        for pid in "${PIDS[@]}"; do
            for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done   # up to 10 s each
            if alive "$pid"; then kill -KILL "$pid" 2>/dev/null; fi
            wait "$pid" 2>/dev/null
        done
    fi
    for id in "${TASK_IDS[@]}"; do
        local cids
        cids=$(docker ps -aq --filter "label=cube.task_id=$id" 2>/dev/null)
        [ -n "$cids" ] && docker rm -f $cids >/dev/null 2>&1
    done
    [ -n "$TMP" ] && rm -rf "$TMP"
    [ "$rc" -eq 0 ] && say "done in $(($(date +%s) - start)) s: task stopped, cluster stopped, $TMP removed"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM HUP

# 1. Machine setup (fast no-op when done before).
bash "$ROOT/scripts/setup.sh" || fail "scripts/setup.sh failed"

for port in "$API_PORT" "$WORKER_PORT" "$METRICS_PORT" "$EVENTS_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        fail "port $port on 127.0.0.1 is in use (another Cube manager running?); stop it or set CUBE_API_PORT etc."
    fi
done

# 2. A local cluster in a temporary directory.
TMP=$(mktemp -d "${TMPDIR:-/tmp}/cube-demo.XXXXXX")
# launch NAME PROGRAM ARGS...: in the background and in a session of its own, so that a Ctrl-C
# reaches only this script, whose trap then stops tasks and processes in order (and --keep
# leaves a cluster that outlives the terminal). No fork: $! is the python process.
launch() {
    local name=$1 prog=$2
    shift 2
    setsid nohup "$PY" "$ROOT/bin/$prog" "$@" >"$TMP/$name.log" 2>&1 </dev/null &
    PIDS+=($!)
    NAMES+=("$name")
}
say "starting cube-manager (data: $TMP/manager, log: $TMP/manager.log)"
launch manager cube-manager --host 127.0.0.1 --api-port "$API_PORT" --worker-port "$WORKER_PORT" \
    --metrics-port "$METRICS_PORT" --events-port "$EVENTS_PORT" --data-dir "$TMP/manager"
# Security is on (docs/security.md): the manager writes its admin credentials and a join token
# on first start; the CLI uses the credentials, the workers join with the token.
export CUBE_CREDENTIALS="$TMP/manager/admin.credentials"
for _ in $(seq 80); do
    [ -s "$TMP/manager/join-token" ] && [ -s "$CUBE_CREDENTIALS" ] && break
    alive "${PIDS[0]}" || fail "cube-manager exited (see $TMP/manager.log)"
    sleep 0.25
done
[ -s "$TMP/manager/join-token" ] || fail "cube-manager wrote no join token in 20 s (see $TMP/manager.log)"
say "admin credentials: $CUBE_CREDENTIALS; workers join with the token in $TMP/manager/join-token"
JOIN_TOKEN=$(cat "$TMP/manager/join-token")
for n in 1 2; do
    say "starting cube-worker worker-$n (data: $TMP/w$n, log: $TMP/worker-$n.log)"
    CUBE_WORKER_JOIN="$JOIN_TOKEN" launch "worker-$n" cube-worker --manager "127.0.0.1:$WORKER_PORT" \
        --name "worker-$n" --address 127.0.0.1 --data-dir "$TMP/w$n"
done

check_alive() {
    local i
    for i in "${!PIDS[@]}"; do
        alive "${PIDS[i]}" || fail "${NAMES[i]} exited (see $TMP/${NAMES[i]}.log)"
    done
}

# wait_for SECONDS WHAT COMMAND...: poll COMMAND every 0.25 s until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        check_alive
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${seconds}s waiting for $what"
        sleep 0.25
    done
}

ready_nodes() {
    local n
    n=$(cube node ls --json 2>/dev/null | "$PY" -c \
        'import json, sys; print(sum(1 for n in json.load(sys.stdin) if n.get("state") == "ready"))' 2>/dev/null) || return 1
    [ "${n:-0}" -ge 2 ]
}
say "waiting for 2 ready nodes"
wait_for 30 "2 ready nodes (cube node ls)" ready_nodes

# 3. A sample web task: busybox httpd serving /www on port 8080.
say "submitting the task hello-web ($IMAGE, httpd on port 8080)"
TASK_ID=$(cube task start --image "$IMAGE" --name hello-web --cmd "httpd -f -p 8080 -h /www" --port 8080) \
    || fail "cube task start failed"
TASK_ID=$(echo "$TASK_ID" | tail -n 1)
TASK_IDS+=("$TASK_ID")
say "task id: $TASK_ID"

task_field() {   # task_field FIELD: the task's field (host port for FIELD=port)
    cube task ls --json 2>/dev/null | "$PY" -c '
import json, sys
task_id, field = sys.argv[1], sys.argv[2]
for t in json.load(sys.stdin):
    if t["id"] == task_id:
        if field == "port":
            print((t.get("host_ports") or {}).get("8080/tcp", ""))
        else:
            print(t.get(field) or "")
' "$TASK_ID" "$1" 2>/dev/null
}
task_running() {
    local state
    state=$(task_field state) || return 1
    case "$state" in
        Running) return 0 ;;
        Failed|Completed) fail "task hello-web ended $state: $(task_field reason) $(task_field error)" ;;
        *) return 1 ;;
    esac
}
say "waiting for the task to be Running"
wait_for 60 "task hello-web to be Running (cube task ls)" task_running
HOST_PORT=$(task_field port)
WORKER=$(task_field worker)
[ -n "$HOST_PORT" ] || fail "task hello-web is Running but has no host port for 8080/tcp"

echo
echo "\$ cube task ls"
cube task ls || fail "cube task ls failed"
echo
echo "\$ cube node ls"
cube node ls || fail "cube node ls failed"
echo
echo "\$ curl http://127.0.0.1:$HOST_PORT/      (hello-web on $WORKER)"
answer=""
for _ in $(seq 40); do
    if answer=$(curl -fsS --max-time 2 "http://127.0.0.1:$HOST_PORT/" 2>/dev/null); then break; fi
    answer=""
    sleep 0.25
done
[ -n "$answer" ] || fail "no HTTP answer from http://127.0.0.1:$HOST_PORT/ within 10 s"
echo "$answer"
echo

if [ "$keep" -eq 1 ]; then
    cat >"$TMP/stop.sh" <<EOF
#!/usr/bin/env bash
# Stop the Cube demo cluster started by scripts/demo.sh --keep, its tasks, and remove $TMP.
export CUBE_MANAGER=$CUBE_MANAGER
export CUBE_CREDENTIALS=$CUBE_CREDENTIALS
ids=\$("$PY" "$ROOT/bin/cube" task ls --json 2>/dev/null | "$PY" -c 'import json, sys; print(" ".join(t["id"] for t in json.load(sys.stdin)))')
for id in \$ids; do "$PY" "$ROOT/bin/cube" task stop "\$id" >/dev/null; done
for _ in \$(seq 40); do
    left=0
    for id in \$ids; do [ -n "\$(docker ps -q --filter label=cube.task_id=\$id)" ] && left=1; done
    [ "\$left" -eq 0 ] && break
    sleep 0.25
done
kill -TERM ${PIDS[*]} 2>/dev/null
for pid in ${PIDS[*]}; do
    for _ in \$(seq 50); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "\$pid" 2>/dev/null
done
for id in \$ids; do
    cids=\$(docker ps -aq --filter label=cube.task_id=\$id)
    [ -n "\$cids" ] && docker rm -f \$cids >/dev/null
done
rm -rf "$TMP"
echo "Cube demo cluster stopped."
EOF
    chmod +x "$TMP/stop.sh"
    done_ok=1
    cat <<EOF
The cluster keeps running (manager pid ${PIDS[0]}, workers ${PIDS[1]} ${PIDS[2]}; logs in $TMP).
Use it (admin credentials in \$CUBE_CREDENTIALS; join more workers with \`cube join-token\`):
  export CUBE_MANAGER=$CUBE_MANAGER CUBE_CREDENTIALS=$CUBE_CREDENTIALS
  $ROOT/.venv/bin/cube task ls
  $ROOT/.venv/bin/cube task inspect $TASK_ID
  $ROOT/.venv/bin/cube task logs $TASK_ID
  $ROOT/.venv/bin/cube task start --image $IMAGE --name web2 --cmd "httpd -f -p 8080 -h /www" --port 8080
  $ROOT/.venv/bin/cube events
  curl http://127.0.0.1:$HOST_PORT/
Stop it (tasks, manager, workers, $TMP):
  $TMP/stop.sh
EOF
    exit 0
fi

done_ok=1   # the EXIT trap stops the task, then the cluster, and removes $TMP
