#!/usr/bin/env bash
# `make compose-test`: the compose deployment, for real. As root on a Debian machine that reaches
# the package registries but no image registry:
#   1. installs docker.io, docker-compose (1.29) and mmdebstrap when missing;
#   2. starts a Docker daemon of its own (own socket and data root), stopped by its pid at the end;
#   3. makes the Python base image (base-image.sh) and the stand-ins, builds every image;
#   4. starts docker-compose.yml with deploy/docker/ci/docker-compose.ci.yml, waits for health;
#   5. drives the product through the gateway (compose_flow.py seed), checks that no container
#      restarted, then `down` + `up` and that the data survived (compose_flow.py check), and the
#      delete cascade (compose_flow.py delete);
#   6. removes everything it made: containers, volumes, images, the daemon's data root.
# Image sizes and build times go to $COMPOSE_TEST_REPORT (default compose-test-report.md).
# KEEP_DOCKER=1 keeps the daemon's data root (its build cache: a second run builds in seconds).
set -euo pipefail
cd "$(dirname "$0")/../../.."
REPO="$PWD"
PY="${PY:-$REPO/.venv/bin/python}"
REPORT="${COMPOSE_TEST_REPORT:-$REPO/compose-test-report.md}"
export DOCKER_HOST=unix:///run/mlstudio-docker.sock
DATA_ROOT=/var/lib/mlstudio-docker
PIDFILE=/run/mlstudio-docker.pid
# Debian's docker client (BuildKit built in, no buildx needed), before any other on PATH.
export PATH=/usr/bin:/usr/sbin:$PATH DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
export COMPOSE_PROJECT_NAME=mlstudio-ci MLSTUDIO_TAG=ci GATEWAY_PORT="${GATEWAY_PORT:-18000}"
COMPOSE=(docker-compose -f docker-compose.yml -f deploy/docker/ci/docker-compose.ci.yml)
URL="http://127.0.0.1:$GATEWAY_PORT"
began=$SECONDS
say() { echo "[compose-test] $(date -u +%T) $*"; }

[ "$(id -u)" = 0 ] || { echo "compose-test runs Docker itself: run it as root" >&2; exit 1; }
# The daemon's data root holds every image and its build cache: about 22 GB at the peak.
need_gb="${COMPOSE_TEST_DISK_GB:-25}"
free_gb=$(( $(df --output=avail -k "$(dirname "$DATA_ROOT")" | tail -1) / 1048576 ))
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "compose-test needs about $need_gb GB free under $(dirname "$DATA_ROOT") for Docker's images and build cache; $free_gb GB are free" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null || ! command -v mmdebstrap >/dev/null; then
  say "installing docker.io docker-compose mmdebstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io docker-compose mmdebstrap >/dev/null
fi

started_daemon=""
cleanup() {
  rc=$?
  if [ "$rc" != 0 ] && docker info >/dev/null 2>&1; then
    "${COMPOSE[@]}" ps || true
    "${COMPOSE[@]}" logs --no-color --tail=60 || true
  fi
  "${COMPOSE[@]}" down --volumes --remove-orphans --rmi all >/dev/null 2>&1 || true
  if [ -n "$started_daemon" ]; then
    kill "$started_daemon" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$started_daemon" 2>/dev/null || break; sleep 1; done
    [ -n "${KEEP_DOCKER:-}" ] || rm -rf "$DATA_ROOT"
  fi
  rm -f "$REPO/.compose-test-state.json"
  say "finished (rc $rc) after $((SECONDS - began)) s"
  exit "$rc"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  mkdir -p "$DATA_ROOT"
  dockerd -H "$DOCKER_HOST" --data-root "$DATA_ROOT" --exec-root /run/mlstudio-docker-exec \
    --pidfile "$PIDFILE" >/tmp/mlstudio-dockerd.log 2>&1 &
  started_daemon=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
  say "dockerd started (pid $started_daemon)"
fi

timed() {  # timed NAME COMMAND...: runs it and records its seconds
  # Logged as each step ends, so that a run that fails later still shows what the builds cost.
  local t0=$SECONDS; "${@:2}"; times+=("$1|$((SECONDS - t0))"); say "$1: $((SECONDS - t0)) s"
}
times=()
timed "base image (mmdebstrap + docker import)" deploy/docker/ci/base-image.sh
timed "envoy stand-in" docker build -q -f deploy/docker/ci/Dockerfile.standins --target envoy -t "mlstudio-ci/envoy:$MLSTUDIO_TAG" . >/dev/null
timed "all images (docker-compose build)" "${COMPOSE[@]}" build
say "built in $((SECONDS - began)) s"

wait_healthy() {
  local deadline=$((SECONDS + 900)) unhealthy
  while :; do
    unhealthy=$(docker ps -a --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
      --format '{{.Names}} {{.Status}}' | grep -v -E 'Up .*\(healthy\)|Exited \(0\)' || true)
    [ -z "$unhealthy" ] && return 0
    if [ $SECONDS -gt $deadline ]; then echo "not healthy: $unhealthy" >&2; return 1; fi
    sleep 5
  done
}
timed "up until healthy" bash -c "$(declare -f wait_healthy); ${COMPOSE[*]} up -d && wait_healthy"
say "stack healthy"

timed "product flow" "$PY" -m deploy.docker.ci.compose_flow seed "$URL" "$REPO/.compose-test-state.json"

restarts=$(docker ps -aq --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
  | xargs docker inspect --format '{{.Name}} {{.RestartCount}}' | awk '$2 != 0')
[ -z "$restarts" ] || { echo "containers restarted: $restarts" >&2; exit 1; }
say "no container restarted"

timed "down + up until healthy" bash -c "$(declare -f wait_healthy); ${COMPOSE[*]} down && ${COMPOSE[*]} up -d && wait_healthy"
"$PY" -m deploy.docker.ci.compose_flow check "$URL" "$REPO/.compose-test-state.json"
"$PY" -m deploy.docker.ci.compose_flow delete "$URL" "$REPO/.compose-test-state.json"

{
  echo "| image | size |"; echo "| --- | --- |"
  docker images --format '{{.Repository}}:{{.Tag}}|{{.Size}}' | grep -E ":$MLSTUDIO_TAG\||python:" | sort \
    | awk -F'|' '{print "| " $1 " | " $2 " |"}'
  echo; echo "| step | seconds |"; echo "| --- | --- |"
  for t in "${times[@]}"; do echo "| ${t%%|*} | ${t##*|} |"; done
  echo "| whole run | $((SECONDS - began)) |"
} > "$REPORT"
cat "$REPORT"
echo "1 passed, 0 failed"
