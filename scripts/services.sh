#!/usr/bin/env bash
# Prints the services of the workspace, one binary name a line: the package name of every
# services/*/Cargo.toml (services/user builds user-service). The one list of services: the
# Makefile, run-local.sh and the Dockerfile call this; the e2e kit (e2e/src/binaries.rs) and
# the manifest checks (k8s/tests) read the same files. A new service is a new folder there.
set -euo pipefail
cd "$(dirname "$0")/.."

# The `name` of each manifest's [package] table (not of [workspace] or a dependency table).
awk -F'"' '
  FNR == 1 { in_package = 0 }
  /^\[/ { in_package = ($0 ~ /^\[package\][[:space:]]*$/) }
  in_package && /^name[[:space:]]*=/ { print $2; in_package = 0 }
' services/*/Cargo.toml
