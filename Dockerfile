# syntax=docker/dockerfile:1.7
# One image holding every service; each Deployment picks its binary with `command`.
# Why one image: one build, one thing to scan, sign and promote per release, and the
# binaries share almost all of their code, so the image is barely larger than one of them.
# The services are the packages under services/ (scripts/services.sh): a new service needs
# no edit here.

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# protox compiles the protos in Rust: no protoc. The C compiler that SQLite needs is in
# the rust image already.
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds, so a
# change to our code rebuilds our crates only.
# The build is profile-guided (scripts/pgo.sh): an instrumented build, a few seconds of
# benchmark calls to each service on loopback, then the release build with that profile,
# 1.4-1.7x the calls per core of a plain release build (docs/performance-log.md). It needs
# rustup's llvm-tools (the script adds it) and twice the build time; `--build-arg PGO=0`
# builds plainly.
# The binaries are copied by name (not `target/release/*-service`): the cached target folder
# may still hold one of a service that no longer exists.
ARG PGO=1
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    services=$(bash scripts/services.sh) \
    && for service in $services; do set -- "$@" -p "$service"; done \
    && if [ "$PGO" = 0 ]; then cargo build --release --locked "$@" && out=target/release; \
       else bash scripts/pgo.sh "$@" && out=target/pgo/release; fi \
    && mkdir -p /out/bin /out/data \
    && for service in $services; do cp "$out/$service" /out/bin/; done

# distroless/cc: glibc and libgcc, no shell, no package manager; "nonroot" is UID 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="meshwork" \
      org.opencontainers.image.description="Meshwork gRPC services, one binary each in /usr/local/bin" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/meshwork/meshwork"
COPY --from=builder /out/bin/ /usr/local/bin/
# The embedded SQLite default writes under ./data; give the non-root user a place for it.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/meshwork
WORKDIR /var/lib/meshwork
USER 65532:65532
# glibc keeps up to 7 freed blocks of each size per thread for reuse without locking (its
# tcache); 64 here. A CreateOrder frees and allocates some 29 blocks of 1 KiB at once (SQLite's
# savepoint journal) and tonic, h2 and tokio free blocks in bursts too: with 7, most took
# malloc's slow path. Measured with callgrind (docs/performance-log.md): CreateOrder -6.7%
# instructions, SayHello -2.3%. make run and make bench read this line
# (scripts/glibc-tunables.sh); a value set for the container wins.
ENV GLIBC_TUNABLES=glibc.malloc.tcache_count=64
# Documentation only (each Deployment declares its ports): service N of the mesh listens
# on 5005N for gRPC and 910N for /metrics.
EXPOSE 50051-50059 9101-9109
ENTRYPOINT ["/usr/local/bin/hello-service"]
