#!/usr/bin/env bash
# A throwaway Spark standalone cluster on loopback, for testing the JNI library in real executor
# JVMs (one master + two 1-core workers, so a job gets two executors in two different processes).
#
#   scripts/spark-cluster.sh start    # master spark://127.0.0.1:7077, workers with 1 core / 2g each
#   scripts/spark-cluster.sh status   # pids + the master's view (alive workers, apps)
#   scripts/spark-cluster.sh stop     # kills workers, their executor JVMs, and the master
#
# Then, e.g.:
#   "$SPARK_HOME"/bin/spark-submit --master spark://127.0.0.1:7077 \
#     --total-executor-cores 2 --executor-cores 1 --executor-memory 1g ...
#
# Everything lives under target/spark-cluster/: *.log (daemon logs), *.pid, worker-N/ (each
# worker's work dir: executor stdout/stderr are in worker-N/<app-id>/<executor-id>/{stdout,stderr}),
# local/ (scratch), master-webui-port.
# Binds only to 127.0.0.1. Environment overrides:
#   SPARK_HOME                  default: the pyspark package dir of .venv/bin/python (PYTHON=...)
#   SPARK_CLUSTER_TIMEOUT       seconds to wait for both workers to register (default 90)
#   SPARK_WORKER_CORES / SPARK_WORKER_MEMORY   per worker (default 1 / 2g)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="$ROOT/target/spark-cluster"
HOST=127.0.0.1
MASTER_PORT=7077
MASTER_URL="spark://$HOST:$MASTER_PORT"
NWORKERS=2
TIMEOUT="${SPARK_CLUSTER_TIMEOUT:-90}"
WORKER_CORES="${SPARK_WORKER_CORES:-1}"
WORKER_MEMORY="${SPARK_WORKER_MEMORY:-2g}"

die() { echo "spark-cluster.sh: error: $*" >&2; exit 1; }
log() { echo "spark-cluster.sh: $*"; }

# Only loopback, ever: daemons, executors and the driver all bind and advertise 127.0.0.1.
export SPARK_LOCAL_IP=$HOST
export SPARK_LOCAL_HOSTNAME=$HOST   # advertised host name (otherwise `hostname`, which may not be loopback)
unset SPARK_MASTER_HOST SPARK_PUBLIC_DNS

find_spark_home() {
  if [[ -z "${SPARK_HOME:-}" ]]; then
    local py="${PYTHON:-$ROOT/.venv/bin/python}"
    SPARK_HOME="$("$py" -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)" ||
      die "cannot import pyspark with $py; run: python3 -m venv .venv && .venv/bin/pip install -r jvm-bindings/requirements.txt (or set SPARK_HOME)"
  fi
  [[ -x "$SPARK_HOME/bin/spark-class" ]] || die "$SPARK_HOME/bin/spark-class not found (SPARK_HOME=$SPARK_HOME)"
  export SPARK_HOME
}

listening() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
free_port() { # first port from $1 up that nothing listens on
  local p=$1
  while listening "$p"; do p=$((p + 1)); (( p < $1 + 100 )) || die "no free port in $1..$((p - 1))"; done
  echo "$p"
}
alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
pidfile_pid() { [[ -f "$1" ]] && cat "$1" || true; }

# Processes of this cluster: the daemons (one process group each, via setsid) and every process
# whose cwd is under our work dirs (the executor JVMs a worker forks run in worker-N/<app>/<exec>/).
# Zombies are left out (spark-class leaves an unreaped <defunct> bash under each daemon JVM; it
# goes when the JVM does).
cluster_pids() {
  local f pid pgid
  {
    for f in "$STATE"/*.pid; do
      [[ -e "$f" ]] || continue
      pid=$(cat "$f")
      alive "$pid" || continue
      echo "$pid"
      pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || true
      [[ "$pgid" == "$pid" ]] && pgrep -g "$pgid" || true
    done
    for f in /proc/[0-9]*/cwd; do
      case "$(readlink "$f" 2>/dev/null)" in "$STATE"/worker-*) pid=${f#/proc/}; echo "${pid%/cwd}";; esac
    done
  } | sort -un | while read -r pid; do
    [[ "$(ps -o stat= -p "$pid" 2>/dev/null)" == Z* || -z "$(ps -o stat= -p "$pid" 2>/dev/null)" ]] || echo "$pid"
  done
}

master_json() { curl -fsS --max-time 3 "http://$HOST:$(cat "$STATE/master-webui-port")/json/" 2>/dev/null; }
json_field() { python3 -c "import json,sys; print(json.load(sys.stdin).get('$1', ''))"; }

tails() {
  local f
  for f in "$STATE"/master.log "$STATE"/worker-*.log; do
    [[ -f "$f" ]] || continue
    echo "----- tail of $f" >&2; tail -n 25 "$f" >&2
  done
}

# start_daemon <name> <class> <args...>: runs spark-class in its own session (so its process group
# contains it and the executor JVMs it forks); spark-class execs java, so the pid is the JVM's.
start_daemon() {
  local name=$1; shift
  nohup setsid "$SPARK_HOME/bin/spark-class" "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

cmd_start() {
  find_spark_home
  mkdir -p "$STATE"
  if alive "$(pidfile_pid "$STATE/master.pid")"; then
    die "already running (master pid $(cat "$STATE/master.pid")); run '$0 stop' first"
  fi
  listening "$MASTER_PORT" && die "port $HOST:$MASTER_PORT is already in use (another Spark master?)"
  rm -rf "$STATE"/*.log "$STATE"/*.pid "$STATE"/worker-* "$STATE"/local
  mkdir -p "$STATE/local"
  export SPARK_LOCAL_DIRS="$STATE/local"
  export SPARK_WORKER_DIR="$STATE"   # overridden per worker with --work-dir below

  local t0=$SECONDS ui ports=() i
  ui=$(free_port 8080); echo "$ui" >"$STATE/master-webui-port"
  start_daemon master org.apache.spark.deploy.master.Master \
    --host "$HOST" --port "$MASTER_PORT" --webui-port "$ui"
  local next=$((ui + 1))
  for i in $(seq 1 "$NWORKERS"); do
    ports[i]=$(free_port "$next"); next=$((ports[i] + 1))
    mkdir -p "$STATE/worker-$i"
    start_daemon "worker-$i" org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --cores "$WORKER_CORES" --memory "$WORKER_MEMORY" \
      --webui-port "${ports[i]}" --work-dir "$STATE/worker-$i" "$MASTER_URL"
  done

  local n=""
  while (( SECONDS - t0 < TIMEOUT )); do
    for f in "$STATE"/*.pid; do
      alive "$(cat "$f")" || { tails; cmd_stop >/dev/null; die "$(basename "$f" .pid) exited during startup (logs above)"; }
    done
    n=$(master_json | json_field aliveworkers 2>/dev/null || true)
    [[ "$n" == "$NWORKERS" ]] && break
    sleep 1
  done
  if [[ "$n" != "$NWORKERS" ]]; then
    tails
    cmd_stop >/dev/null
    die "only '${n:-0}' of $NWORKERS workers registered with $MASTER_URL after ${TIMEOUT}s (logs above; cluster stopped)"
  fi
  log "up in $((SECONDS - t0))s: $MASTER_URL (web UI http://$HOST:$ui), $NWORKERS workers x $WORKER_CORES core/$WORKER_MEMORY (UIs ${ports[*]})"
  log "pids: master $(cat "$STATE/master.pid"), workers $(cat "$STATE"/worker-*.pid | tr '\n' ' ')"
  log "logs: $STATE/*.log; executor stdout/stderr: $STATE/worker-N/<app-id>/<executor-id>/"
}

cmd_stop() {
  [[ -d "$STATE" ]] || { log "not running (no $STATE)"; return 0; }
  local pids f pid pgid apps
  # A driver (spark-submit) is not part of the cluster: it would wait forever for executors.
  apps=$(master_json | python3 -c 'import json,sys; print(" ".join(a["id"] + " (" + a["name"] + ")" for a in json.load(sys.stdin).get("activeapps", [])))' 2>/dev/null || true)
  [[ -z "$apps" ]] || log "warning: apps still running, their drivers will hang until killed: $apps"
  # Workers first (they also kill their executors on shutdown), then the master; TERM whole
  # process groups so executor JVMs go too, then anything left by cwd, then KILL what lingers.
  for f in "$STATE"/worker-*.pid "$STATE"/master.pid; do
    [[ -e "$f" ]] || continue
    pid=$(cat "$f")
    alive "$pid" || continue
    pgid=$(ps -o pgid= -p "$pid" | tr -d ' ') || true
    if [[ "$pgid" == "$pid" ]]; then kill -TERM -- "-$pgid" 2>/dev/null || true
    else kill -TERM "$pid" 2>/dev/null || true; fi
  done
  pids=$(cluster_pids | sort -un | tr '\n' ' ')
  [[ -n "${pids// }" ]] && kill -TERM $pids 2>/dev/null || true
  local i
  for i in $(seq 1 20); do
    pids=$(cluster_pids | sort -un | tr '\n' ' ')
    [[ -z "${pids// }" ]] && break
    sleep 0.5
  done
  if [[ -n "${pids// }" ]]; then
    log "still alive after 10s, sending KILL: $pids"
    kill -KILL $pids 2>/dev/null || true
    sleep 1
    pids=$(cluster_pids | sort -un | tr '\n' ' ')
    [[ -z "${pids// }" ]] || die "could not stop: $pids"
  fi
  # Wait (briefly) until the daemon pids are reaped, so a `pgrep java` right after sees nothing.
  for i in $(seq 1 10); do
    pids=""; for f in "$STATE"/*.pid; do [[ -e "$f" ]] && alive "$(cat "$f")" && pids+=" $(cat "$f")"; done
    [[ -z "$pids" ]] && break
    sleep 0.5
  done
  rm -f "$STATE"/*.pid
  log "stopped (no master, worker or executor processes left)"
}

cmd_status() {
  local f pid any=0
  for f in "$STATE"/*.pid; do
    [[ -e "$f" ]] || continue
    pid=$(cat "$f")
    if alive "$pid"; then echo "$(basename "$f" .pid): pid $pid running"; any=1
    else echo "$(basename "$f" .pid): pid $pid DEAD"; fi
  done
  (( any )) || { echo "not running"; return 1; }
  local pids; pids=$(cluster_pids | sort -un | tr '\n' ' ')
  echo "all cluster pids (incl. executors): $pids"
  master_json | python3 -c '
import json, sys
j = json.load(sys.stdin)
print("master", j["url"], j["status"], "aliveworkers=%s cores=%s/%s" % (j["aliveworkers"], j["coresused"], j["cores"]))
for a in j.get("activeapps", []): print("  active app", a["id"], a["name"], "cores", a["cores"])
for a in j.get("completedapps", [])[-3:]: print("  completed app", a["id"], a["name"], a["state"])
' || echo "master web UI not answering"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
