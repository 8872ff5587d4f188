# The one como-saga binary, every role (`como-saga api`, `orchestrator`, `worker crm|sevenrooms`,
# `rotate-tokens`), as the ECS services run it: `docker build -t como-saga .`. CI builds it on a
# runner of the tasks' processor (ARM64 by default: infra/envs/prod, var.cpu_architecture).

# Build with the locked dependencies. rust-toolchain.toml is left out of the context
# (.dockerignore): it names the moving "stable" channel, which rustup would download; the
# image's own toolchain is pinned here and meets the workspace's rust-version.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p como-saga \
    && install -D -m 0755 target/release/como-saga /out/como-saga

# Run: glibc, libgcc and the CA certificates (the AWS SDK's and reqwest's rustls read the
# system's roots) and nothing else: no shell, no package manager, no curl (the container
# health check is `como-saga healthcheck URL`). Runs as the image's unprivileged user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/como-saga /usr/local/bin/como-saga
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/como-saga"]
CMD ["--help"]
