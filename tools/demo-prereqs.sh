#!/usr/bin/env bash
# Install what `make demo` needs on a fresh Debian/Ubuntu machine, then start the Docker engine.
# Elsewhere (no apt-get) it only checks that the tools are there and uses the existing engine.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'demo-prereqs: %s\n' "$*" >&2; }

NEEDED=(docker nginx /usr/bin/docker-registry /bin/busybox nft unshare)

# missing: print the tools that are not installed.
missing() {
  local tool
  for tool in "${NEEDED[@]}"; do
    if [ "${tool#/}" != "$tool" ]; then
      [ -x "$tool" ] || echo "$tool"
    else
      command -v "$tool" >/dev/null 2>&1 || echo "$tool"
    fi
  done
}

if [ -n "$(missing)" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "installing: $(missing | tr '\n' ' ')"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
      docker.io nginx docker-registry busybox-static nftables util-linux python3 python3-venv \
      python3-pip ca-certificates >/dev/null
  else
    log "missing: $(missing | tr '\n' ' ') (install them, or run as root on Debian/Ubuntu)"
    exit 1
  fi
fi

PY=${PY:-python3}
if ! "$PY" -c 'import deployer, moto, boto3, aws_lambda_powertools, pydantic, yaml' >/dev/null 2>&1; then
  # A project virtualenv, as .ci/run makes; the Makefile picks .venv/bin/python when present.
  [ -x .venv/bin/python ] || python3 -m venv .venv
  log "installing the Python packages into .venv (requirements-dev.txt, deployer)"
  .venv/bin/python -m pip install -q -r requirements-dev.txt -e .
fi

tools/services.sh start
