# Nova operator image: build with the Rust toolchain, run on distroless as a non-root user.
#   docker build -t ghcr.io/nova-infra/nova:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY operator operator
COPY tests/harness tests/harness
COPY tests/control-plane/go.mod tests/control-plane/go.mod
COPY migrations migrations
COPY crds crds
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p nova --bin nova && cp target/release/nova /nova

# scripts/image builds the same image without a registry (docker import of the release binary
# and its libraries); it reads USER, ENTRYPOINT, CMD, WORKDIR, VOLUME, EXPOSE and ENV from here.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /nova /usr/local/bin/nova
USER 65532:65532
WORKDIR /var/lib/nova
VOLUME /var/lib/nova
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/nova"]
CMD ["operator"]
