# syntax=docker/dockerfile:1
# Builds both wsgate images from one workspace build:
#   docker build --target gateway  -t ghcr.io/wsgate/wsgate:0.1.0 .
#   docker build --target operator -t ghcr.io/wsgate/wsgate-operator:0.1.0 .
# The tags match the chart's appVersion and the operator's default gateway
# image (ghcr.io/wsgate/wsgate:<operator version>).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wsgate -p wsgate-operator \
    && mkdir -p /out \
    && cp target/release/wsgate target/release/wsgate-operator /out/

# Small runtime: glibc and CA certificates only, no shell; uid 65532 matches
# the pods' securityContext.
# The default configuration listens on 0.0.0.0:8080 (public) and 0.0.0.0:9090
# (admin), where EXPOSE says; `--config FILE` or WSGATE_CONFIG replaces it (the
# operator passes --config with its ConfigMap).
FROM gcr.io/distroless/cc-debian12:nonroot AS gateway
COPY --from=build /out/wsgate /usr/local/bin/wsgate
COPY gateway/image/wsgate.toml /etc/wsgate/wsgate.toml
ENV WSGATE_CONFIG=/etc/wsgate/wsgate.toml
USER 65532:65532
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/wsgate"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/wsgate-operator /usr/local/bin/wsgate-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wsgate-operator"]
CMD ["run"]
