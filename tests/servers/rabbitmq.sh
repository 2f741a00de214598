#!/usr/bin/env bash
# Starts (or stops, or restarts) the RabbitMQ broker the job queue's tests talk to: one node
# on 127.0.0.1:$RABBITMQ_PORT (default 26672; user guest, password guest, vhost /), its
# state (quorum queues survive a restart) and logs under DIR, no plugins.
#   bash tests/servers/rabbitmq.sh start DIR
#   bash tests/servers/rabbitmq.sh stop DIR
#   bash tests/servers/rabbitmq.sh restart DIR    (the same node and data: a broker restart)
#   bash tests/servers/rabbitmq.sh kill DIR       (SIGKILL, as a crash; `start-again` after)
#   bash tests/servers/rabbitmq.sh start-again DIR
set -euo pipefail
cmd=${1:?start|stop|restart|kill|start-again}
dir=$(realpath -m "${2:?directory}")
port=${RABBITMQ_PORT:-26672}
bin=/usr/lib/rabbitmq/bin

# Everything the node and rabbitmqctl read, in DIR: a node of its own beside any system one.
export HOME="$dir/home"  # the Erlang cookie
export RABBITMQ_NODENAME="kiln-test-$port@localhost"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$((port + 20000))
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_PID_FILE="$dir/rabbitmq.pid"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
# An Erlang VM that fails (rabbitmqctl with no node to talk to) writes erl_crash.dump to its
# working directory unless told otherwise: DIR's, never the caller's.
export ERL_CRASH_DUMP="$dir/erl_crash.dump"

ctl() { "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"; }

launch() {
  mkdir -p "$HOME" "$dir/log"
  rm -f "$RABBITMQ_PID_FILE"  # a killed node's: await_startup would ask a dead process
  # A session of its own: it outlives the process that started it (a test restarting it).
  setsid nohup "$bin/rabbitmq-server" >"$dir/log/stdout.log" 2>&1 </dev/null &
  # await_startup needs the node to exist first: wait for its pid file, then for the boot.
  for _ in $(seq 600); do
    [[ -s $RABBITMQ_PID_FILE ]] && break
    sleep 0.05
  done
  if ! timeout 120 "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q await_startup --timeout 110 >/dev/null 2>&1; then
    echo "rabbitmq on port $port did not start; its log:" >&2
    tail -30 "$dir/log/stdout.log" >&2
    exit 1
  fi
}

halt() {
  [[ -s $RABBITMQ_PID_FILE ]] || return 0  # no node here
  ctl -q stop >/dev/null 2>&1 || true
  for _ in $(seq 400); do
    pid=$(cat "$RABBITMQ_PID_FILE" 2>/dev/null || true)
    [[ -z $pid ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.05
  done
  kill -9 "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null || true
}

case "$cmd" in
  start)
    halt  # a leftover of an interrupted run
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$port
loopback_users = none
log.console = false
log.file.level = warning
EOF
    echo '[].' >"$dir/enabled_plugins"
    echo '[].' >"$dir/advanced.config"
    launch
    # Every test makes queues of its own (kiln.test.*, kiln.fault.*, kiln.e2e.*): unused for
    # two minutes, they go, so a broker that restarts mid-suite has few quorum queues to recover.
    ctl -q set_policy --apply-to queues kiln-tests '^kiln\.(test|fault|e2e)\.' \
      '{"expires":120000}' >/dev/null
    ;;
  stop)
    halt
    ;;
  restart)
    halt
    launch
    ;;
  kill)
    kill -9 "$(cat "$RABBITMQ_PID_FILE")"
    for _ in $(seq 200); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || exit 0
      sleep 0.05
    done
    ;;
  start-again)
    launch
    ;;
  *)
    echo "usage: $0 start|stop|restart|kill|start-again DIR" >&2
    exit 2
    ;;
esac
