# syntax=docker/dockerfile:1
# The Portcullis images for users with Docker/BuildKit, with the same content as
# hack/build-images.sh writes without a daemon: one static binary, the CA bundle, user
# 65532:65532, no shell, no package manager.
#
#   docker buildx build --target gateway  -t portcullis/gateway:0.1.0 .
#   docker buildx build --target operator -t portcullis/operator:0.1.0 .
#
# The files are the same; the digests are not (BuildKit writes its own layer tar and config).
# Release images come from hack/build-images.sh (.github/workflows/release.yaml), whose
# digests are reproducible.

ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Static glibc binaries (`--target` keeps the flag off build scripts); paths of the build
# directory and the cargo home are remapped out of them, as in hack/build-images.sh.
ENV RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=/src=/src --remap-path-prefix=/usr/local/cargo=/cargo" \
    CFLAGS="-ffile-prefix-map=/src=/src -ffile-prefix-map=/usr/local/cargo=/cargo" \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-gnu \
      -p portcullis-gateway -p portcullis-operator \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-gnu/release/portcullis-gateway \
       target/x86_64-unknown-linux-gnu/release/portcullis-operator /out/ \
 && ! ldd /out/portcullis-gateway \
 && ! ldd /out/portcullis-operator

FROM scratch AS base
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
LABEL org.opencontainers.image.source="https://portcullis.dev/src" \
      org.opencontainers.image.url="https://portcullis.dev" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Portcullis"

FROM base AS operator
COPY --from=build /out/portcullis-operator /usr/local/bin/portcullis-operator
LABEL org.opencontainers.image.title="Portcullis operator"
ENTRYPOINT ["/usr/local/bin/portcullis-operator"]

FROM base AS gateway
COPY --from=build /out/portcullis-gateway /usr/local/bin/portcullis-gateway
LABEL org.opencontainers.image.title="Portcullis gateway"
ENTRYPOINT ["/usr/local/bin/portcullis-gateway"]
