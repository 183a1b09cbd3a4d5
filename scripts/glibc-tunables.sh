#!/usr/bin/env bash
# Prints the glibc allocator tunables the services run with: the Dockerfile's
# `ENV GLIBC_TUNABLES=` line, the one place the value is written (see it there for why).
# make run and make bench start the services with it, so that what they measure is what the
# image runs:   export GLIBC_TUNABLES=${GLIBC_TUNABLES-$(bash scripts/glibc-tunables.sh)}
set -euo pipefail
cd "$(dirname "$0")/.."
value=$(sed -n 's/^ENV GLIBC_TUNABLES=//p' Dockerfile)
[ -n "$value" ] || { echo "no ENV GLIBC_TUNABLES= line in the Dockerfile" >&2; exit 1; }
echo "$value"
