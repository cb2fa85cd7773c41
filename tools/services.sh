#!/usr/bin/env bash
# Start (or check) the local services the integration and e2e tests use: the Docker engine.
# Registries and nginx instances are started per test, on their own loopback ports.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

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

case "${1:-start}" in
  start) start_docker ;;
  check) docker_ready ;;
  *) log "usage: $0 start|check"; exit 2 ;;
esac
