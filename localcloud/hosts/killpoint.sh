#!/bin/sh
# Runs one host command for the agent (docker, nft) and, when it is the armed kill point, holds
# the agent there so the host fault suite can SIGKILL the agent's process group at that point.
#
# usage: killpoint.sh DIR COMMAND [ARGS...]
# DIR/armed (absent: run the command unchanged), four lines:
#   when   before (hold without running it) | during (run it, hold while it runs) |
#          after (run it, then hold) | notify (run it, then carry on)
#   nth    the matching command that is the kill point (1: the first)
#   match  a shell pattern over the command line, e.g. "docker stop *"
#   since  a pattern that must have run first (empty: none), e.g. "nft -f *"
# The suite waits for DIR/reached (the command line), then kills the process group.
set -u
dir=$1
shift
if [ ! -f "$dir/armed" ]; then
  exec "$@"
fi
when='' nth='' match='' since=''
{ read -r when; read -r nth; read -r match; read -r since; } <"$dir/armed" || true
line=$*
if [ -n "$since" ] && [ ! -f "$dir/since-seen" ]; then
  # shellcheck disable=SC2254 # the pattern is meant to glob
  case $line in $since) : >"$dir/since-seen" ;; esac
  exec "$@"
fi
# shellcheck disable=SC2254
case $line in
  $match) ;;
  *) exec "$@" ;;
esac
count=$(($(cat "$dir/count" 2>/dev/null || echo 0) + 1))
echo "$count" >"$dir/count"
if [ "$count" -ne "$nth" ]; then
  exec "$@"
fi
hold() {
  while :; do sleep 1; done
}
case $when in
  before)
    echo "$line" >"$dir/reached"
    hold
    ;;
  during)
    "$@" 0<&0 &
    echo "$line" >"$dir/reached"
    wait
    hold
    ;;
  after)
    "$@"
    echo "$line" >"$dir/reached"
    hold
    ;;
  *)
    "$@"
    rc=$?
    echo "$line" >"$dir/reached"
    exit "$rc"
    ;;
esac
