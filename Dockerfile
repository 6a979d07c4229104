# syntax=docker/dockerfile:1
#
# herdgate in a container: one image, one binary; the command picks the job.
#
#   docker build -t herdgate .
#   docker run --rm herdgate --help
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e REDIS_URL=... -e AMQP_URL=... herdgate gateway
#
# The Lua scripts (lua/), the SQL migrations (migrations/) and the seed data (seed/) are
# compiled into the binary (include_str!, refinery's embed_migrations!), so the runtime
# image holds the binary and nothing else of ours. Needs BuildKit (the default builder
# since Docker 23) for the cache mounts.

# Keep at or above Cargo.toml's rust-version (tests/it/compose.rs checks it).
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# jemalloc, the server's allocator, is built from C with make.
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads: a change to tests, docs or scripts does not rebuild.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY lua lua
COPY migrations migrations
COPY seed seed
COPY openapi.json openapi.json
# A member of the cargo workspace: cargo reads its manifest, and builds `herdgate load`.
COPY load-testing/herdgate-load load-testing/herdgate-load
# The registry and target/ live in BuildKit cache mounts, so a source change recompiles
# herdgate alone, not its dependencies. --locked: exactly the versions in Cargo.lock.
# target/ is a cache mount, gone after this step: copy the binary out of it.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins \
    && cp target/release/herdgate target/release/herdgate-load /usr/local/bin/

# The same Debian release as the build stage, so the binary finds the glibc it linked
# against. No TLS library or CA certificates: herdgate is built without TLS (plain
# postgres://, redis://, amqp://). bash stays (it is in the base image): the compose
# healthchecks use it.
FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 herdgate \
    && useradd --system --uid 10001 --gid herdgate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin herdgate
COPY --from=build /usr/local/bin/herdgate /usr/local/bin/herdgate-load /usr/local/bin/
# Numeric, so an orchestrator can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
# HERDGATE_ADDR defaults to 0.0.0.0:8080.
EXPOSE 8080
ENTRYPOINT ["herdgate"]
CMD ["serve"]
