#!/usr/bin/env bash
# Make this machine ready for one job, installing only what is missing, then start the services
# that job needs. The Makefile calls it before `demo`, `test` and `bench`; run twice, the second
# run installs nothing.
#
#   tools/bootstrap.sh demo    system packages for the local cloud, .venv with the `demo` group
#   tools/bootstrap.sh bench   as demo, plus the test runner (benchmarks reuse test harnesses)
#   tools/bootstrap.sh test    every check: adds shellcheck, linters, type checker, SAM CLI,
#                              checkov (in .venv-checkov) and a python3.12 for `sam build`
#   tools/bootstrap.sh mutation  mutation testing (`make mutation`): .venv-mutation with the
#                              `mutation` group (mutmut, the test runner, what the fast suites
#                              import); no system service, no Docker
#
# Python packages come only from uv.lock (hashes checked), through a pinned uv that is itself
# installed by hash from tools/uv-requirements.txt. On a machine where it cannot install (not
# root, no apt-get), it names what is missing in one line and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${1:-test}
TOOLS=.tools
UV=$TOOLS/uv/bin/uv

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# The interpreter the virtualenvs are made from: the first python3 on the PATH that is not one of
# ours (the Makefile puts .venv/bin first; a venv made from its own python would be recreated).
base_python() {
  local dir
  local IFS=:
  for dir in $PATH; do
    case "$dir" in "$PWD"/.venv*|"$PWD"/.tools*|"") continue ;; esac
    if [ -x "$dir/python3" ]; then
      # The interpreter itself, not a version manager's shim: uv recreates a venv whose
      # interpreter path differs from the one asked for.
      "$dir/python3" -c 'import sys; print(sys.executable)'
      return 0
    fi
  done
  return 1
}
die() { log "$*"; exit 1; }

case "$PROFILE" in
  demo) GROUPS_=(--group demo) ;;
  bench) GROUPS_=(--group demo --group test) ;;
  test) GROUPS_=(--group dev) ;;
  # mutmut needs a newer click than the SAM CLI pins (pyproject.toml): its own virtualenv.
  mutation) GROUPS_=(--group mutation) ;;
  *) die "unknown profile '$PROFILE' (demo, bench, test or mutation)" ;;
esac
# The virtualenv this profile's groups go into.
VENV=.venv
if [ "$PROFILE" = mutation ]; then
  VENV=.venv-mutation
fi

# Each entry: a command (or absolute path) that proves the Debian package after the colon.
SYSTEM=(docker:docker.io dockerd:docker.io nginx:nginx /usr/bin/docker-registry:docker-registry
  /bin/busybox:busybox-static nft:nftables conntrack:conntrack unshare:util-linux
  curl:curl)
if [ "$PROFILE" = test ]; then
  SYSTEM+=(shellcheck:shellcheck git:git make:make)
fi
# The real app server's image (Debian + gunicorn) is built with debootstrap by tests and benchmarks.
if [ "$PROFILE" = bench ] || [ "$PROFILE" = test ]; then
  SYSTEM+=(/usr/sbin/debootstrap:debootstrap)
fi
# Mutation testing runs the fast suites only: no engine, proxy or registry (just a python3 venv).
if [ "$PROFILE" = mutation ]; then
  SYSTEM=()
fi

# missing_packages: the Debian packages whose command is absent, one per line, deduplicated.
missing_packages() {
  local entry tool
  for entry in "${SYSTEM[@]}"; do
    tool=${entry%%:*}
    if [ "${tool#/}" != "$tool" ]; then
      [ -x "$tool" ] || echo "${entry#*:}"
    else
      command -v "$tool" >/dev/null 2>&1 || echo "${entry#*:}"
    fi
  done
  # A python3 that can make virtualenvs (Debian splits venv/ensurepip into python3-venv).
  "$(base_python || echo python3)" -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
}

install_system() {
  local missing
  missing=$(missing_packages | sort -u | tr '\n' ' ')
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "missing system packages: ${missing}(run as root on Debian/Ubuntu, or install them)"
  fi
  log "apt-get install ${missing}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  apt-get install -y -qq --no-install-recommends ca-certificates python3 python3-venv python3-pip \
    $missing >/dev/null
}

# install_uv: the pinned uv in its own small virtualenv, checked against its hashes.
install_uv() {
  if [ -x "$UV" ] && "$UV" --version 2>/dev/null | grep -q "^uv $(uv_pin) "; then
    return 0
  fi
  log "installing uv $(uv_pin) into $TOOLS/uv"
  rm -rf "$TOOLS/uv"
  "$(base_python)" -m venv "$TOOLS/uv"
  "$TOOLS/uv/bin/python" -m pip install -q --disable-pip-version-check --require-hashes \
    -r tools/uv-requirements.txt 2>&1 | { grep -v '^WARNING: Location' || true; } >&2
}

uv_pin() { sed -n 's/^uv==\([0-9.]*\).*/\1/p' tools/uv-requirements.txt; }

# install_python: the profile's virtualenv ($VENV) exactly as uv.lock says for its groups (the
# project itself editable, so the `deployer` command is there). --frozen: the lock is used, never rewritten;
# --inexact: packages of a larger profile installed earlier stay.
install_python() {
  local python
  python=$(base_python)
  UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$PWD/$VENV" "$UV" sync --quiet --frozen \
    --inexact --python "$python" --extra cli "${GROUPS_[@]}"
}

# install_checkov: the security scanner pins an older boto3, so it lives in a virtualenv of its
# own, from the same lock (the `checkov` group, which uv.lock resolves apart from the others).
install_checkov() {
  UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT="$PWD/.venv-checkov" "$UV" sync --quiet --frozen \
    --only-group checkov --python "$(base_python)"
}

# link_python312: `sam build` needs the Lambda runtime's python3.12 on the PATH. pyenv ships one
# on many machines, but its shim fails for a version that is not selected: link the real binary.
link_python312() {
  local cand
  mkdir -p "$TOOLS/py312"
  for cand in "$(command -v python3.12 2>/dev/null || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12 /usr/bin/python3.12 \
    /usr/local/bin/python3.12; do
    if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
    cand=$(readlink -f "$cand")
    if "$cand" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      ln -sf "$cand" "$TOOLS/py312/python3.12"
      return 0
    fi
  done
  die "missing python3.12, which sam build needs for the Lambda runtime (e.g. pyenv install 3.12)"
}

install_system
install_uv
install_python
if [ "$PROFILE" = test ]; then
  install_checkov
  link_python312
fi
if [ "$PROFILE" != mutation ]; then
  tools/services.sh start
fi
