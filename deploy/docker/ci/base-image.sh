#!/usr/bin/env bash
# Builds the Python base image locally, for machines that reach package registries but no image
# registry: a minimal Debian bookworm made by mmdebstrap, with Python 3.11 where the official
# image has it (/usr/local/bin/python), pip and venv, and the host's extra certificate
# authorities (pip and the npm fetch inside builds must trust what the host trusts). `docker
# import` tags it with the name the Dockerfiles start FROM.
#
#   deploy/docker/ci/base-image.sh [TAG]     (DOCKER_HOST selects the daemon)
set -euo pipefail
TAG="${1:-python:3.11.14-slim-bookworm}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG: already there"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ca"
cp /usr/local/share/ca-certificates/*.crt "$work/ca/" 2>/dev/null || true

# The host's apt sources (the mirror this machine reaches) become the image's.
mmdebstrap --variant=minbase --quiet \
  --include=python3,python3-venv,python3-pip,ca-certificates \
  --customize-hook="mkdir -p \"\$1/usr/local/share/ca-certificates\"" \
  --customize-hook="sync-in $work/ca /usr/local/share/ca-certificates" \
  --customize-hook='chroot "$1" update-ca-certificates >/dev/null' \
  --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"' \
  --customize-hook='ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  bookworm "$work/root.tar"

docker import \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt PIP_BREAK_SYSTEM_PACKAGES=1' \
  --change 'CMD ["python3"]' \
  "$work/root.tar" "$TAG" >/dev/null
echo "base image $TAG: built"
