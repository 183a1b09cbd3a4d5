# Sourced, from the repository's root, by every script that starts the services (run-local.sh,
# bench.sh, pgo.sh, bench/h2load.sh, bench/callgrind.sh): exports GLIBC_TUNABLES, glibc's
# allocator tunables, as the image sets them. The value is written once, in the Dockerfile's
# `ENV GLIBC_TUNABLES=` line (see it there for why), so that what make run and make bench
# measure is what the image runs. A GLIBC_TUNABLES already set wins, even empty
# (`GLIBC_TUNABLES= make bench`: glibc's defaults).
if [ -z "${GLIBC_TUNABLES+set}" ]; then
  GLIBC_TUNABLES=$(sed -n 's/^ENV GLIBC_TUNABLES=//p' Dockerfile 2>/dev/null || true)
  export GLIBC_TUNABLES
fi
