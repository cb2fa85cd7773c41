#!/usr/bin/env bash
# Start, check or stop the local service the demo, the tests and the benchmarks use: the Docker
# engine. Registries, nginx instances and the moto server are started per test or per demo run,
# on their own loopback ports, and stopped by them.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

PIDFILE=/run/deployer-dockerd.pid

# docker_ready: true when the engine answers.
docker_ready() {
  docker info >/dev/null 2>&1
}

# start_docker: dockerd without a bridge or iptables rules; containers use --network host.
start_docker() {
  if docker_ready; then
    log "docker engine already running"
    return 0
  fi
  command -v dockerd >/dev/null || { log "dockerd is not installed (apt-get install docker.io)"; return 1; }
  log "starting dockerd"
  mkdir -p /var/log
  nohup dockerd --bridge=none --iptables=false --ip6tables=false \
    >/var/log/deployer-dockerd.log 2>&1 &
  echo $! >"$PIDFILE"
  local i
  for i in $(seq 1 60); do
    if docker_ready; then
      log "docker engine ready after ${i}s"
      return 0
    fi
    sleep 1
  done
  log "dockerd did not become ready; see /var/log/deployer-dockerd.log"
  tail -n 30 /var/log/deployer-dockerd.log >&2 || true
  return 1
}

# stop_docker: stop the engine this script started (an engine started otherwise is left alone).
stop_docker() {
  local pid i
  if [ ! -s "$PIDFILE" ]; then
    log "no docker engine started by this script"
    return 0
  fi
  pid=$(cat "$PIDFILE")
  if kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null; then
    log "stopping dockerd ($pid)"
    kill "$pid"
    for i in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
  fi
  rm -f "$PIDFILE"
}

case "${1:-start}" in
  start) start_docker ;;
  check) docker_ready ;;
  stop) stop_docker ;;
  *) log "usage: $0 start|check|stop"; exit 2 ;;
esac
