# The `erp` binary in a container (docker-compose.yml). This project's own machines have
# no Docker engine: scripts/stack.sh runs the same services from Maven jars and Debian
# packages, and that is what the tests use. This file is not exercised by CI.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang libclang-dev cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin erp

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/erp erp \
    && mkdir -p /var/lib/erp && chown erp /var/lib/erp
COPY --from=build /src/target/release/erp /usr/local/bin/erp
USER erp
ENV ERP_STATE_DIR=/var/lib/erp/state ERP_HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK CMD curl -fs http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["erp"]
CMD ["run"]
