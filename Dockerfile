# syntax=docker/dockerfile:1
#
# ImageSwap: one static-ish binary for `imageswap serve` (the webhook) and
# `imageswap init` (certificate and webhook configuration), on a distroless
# non-root base. Build: docker build -t imageswap .

# --- build ---------------------------------------------------------------------
# The crate's rust-version; Debian 12, the same glibc as the runtime image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The exact command .ci/run runs, so CI tests this stage's build. --locked:
# the dependencies in Cargo.lock, nothing newer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
    && install -D -m 0755 target/release/imageswap /out/imageswap

# --- runtime -------------------------------------------------------------------
# glibc, libgcc and CA certificates, no shell, no package manager; runs as
# the unprivileged user 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/imageswap /usr/local/bin/imageswap
USER 65532:65532
# HTTPS: the admission webhook, /healthz, /readyz and /metrics.
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/imageswap"]
CMD ["serve"]
