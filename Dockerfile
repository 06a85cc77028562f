# Builds the parkd and parkd-sim binaries and ships them on Debian slim.
# Used by compose.yaml (image ghcr.io/parkd/parkd:latest); not built in CI here (no engine).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p parkd -p parkd-sim

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/parkd --create-home parkd
COPY --from=build /src/target/release/parkd /usr/local/bin/parkd
COPY --from=build /src/target/release/parkd-sim /usr/local/bin/parkd-sim
COPY parkd.example.toml /etc/parkd/parkd.example.toml
USER parkd
WORKDIR /var/lib/parkd
ENV PARKD__DATA_DIR=/var/lib/parkd
EXPOSE 8080 1883
ENTRYPOINT ["/usr/local/bin/parkd"]
CMD ["serve"]
