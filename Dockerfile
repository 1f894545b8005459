# One image for every `erp` subcommand (processor, run, setup, sink, generate, check, …),
# used by docker-compose.yml and deploy/k8s. Built by the GitHub workflow; these
# machines have no Docker engine (scripts/stack.sh runs the same services from jars).
#
# Stages: chef (cargo-chef) → planner (the dependency recipe) → build (dependencies
# cooked in their own cached layer, rebuilt only when Cargo.toml/Cargo.lock change; then
# the workspace, release) → a slim runtime as a non-root user.
FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
# rocksdb's bindgen wants libclang; librdkafka links OpenSSL (SASL SCRAM, TLS).
RUN apt-get update && apt-get install -y --no-install-recommends \
      clang libclang-dev cmake pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --recipe-path recipe.json --bin erp
COPY . .
RUN cargo build --release --bin erp

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 erp \
    && useradd --system --uid 10001 --gid erp --home /var/lib/erp erp \
    && mkdir -p /var/lib/erp/state && chown -R erp:erp /var/lib/erp
COPY --from=build /src/target/release/erp /usr/local/bin/erp
USER 10001:10001
ENV ERP_STATE_DIR=/var/lib/erp/state ERP_HTTP_ADDR=0.0.0.0:8080 ERP_LOG_FORMAT=json
VOLUME /var/lib/erp
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["curl", "-fs", "http://127.0.0.1:8080/health/live"]
ENTRYPOINT ["erp"]
CMD ["run"]
