# Images for the Rinha de Backend 2025 entry: `rinha` (backend) and `rinha-lb` (load balancer)
# in one image, plus `rinha-bench` (processor emulator) in another. Both are `scratch` images
# holding static-pie binaries (`-C target-feature=+crt-static`, glibc), so nothing else is in
# the root: no shell, no libc, no CA store (we only speak plain HTTP to the processors).
#
# Two ways to fill them, sharing the same runtime stage (`runtime-base`):
#
#   Public path (any Docker with BuildKit, the default since Docker 23; needs the registry for
#   `rust:1-slim`): builds from source in a builder stage.
#       docker build -t rinha-2025 .                       # target `runtime` (last stage)
#       docker build --target bench -t rinha-bench .
#
#   Offline path (no registry at all: only `FROM scratch`): binaries built on the host first.
#       scripts/build-static
#       docker build --target offline -t rinha-2025:local .
#       docker build --target bench-offline -t rinha-bench:local .
#
# Stage order matters: the legacy builder (Docker without BuildKit, as on the test machine)
# runs every stage up to the target in file order, so the offline stages come before the
# builder stage that needs the registry. BuildKit only runs the stages the target needs, so
# the public path never touches `target/static/`.

# ---- shared runtime: what every deployed container looks like --------------------------------
FROM scratch AS runtime-base
# nobody:nogroup by number (scratch has no /etc/passwd). The unix sockets live on a tmpfs
# volume that compose mounts owned by this uid.
USER 65534:65534
ENV IO_DRIVER=auto
# The journal directory (DATA_DIR=/data in compose): scratch has no mkdir, so an (almost)
# empty directory is copied in with the owner a named volume then inherits.
COPY --chown=65534:65534 deploy/data/ /data/
ENTRYPOINT ["/usr/local/bin/rinha"]

# ---- offline: binaries from the host (scripts/build-static) ---------------------------------
FROM runtime-base AS offline
COPY target/static/rinha target/static/rinha-lb /usr/local/bin/

FROM scratch AS bench-offline
USER 65534:65534
COPY target/static/rinha-bench /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/rinha-bench"]
CMD ["processor", "--listen", "0.0.0.0:8080"]

# ---- public: build from source ------------------------------------------------------------------
FROM rust:1-slim AS builder
WORKDIR /src
COPY . .
# The same script as the offline path, so both paths produce the same binaries.
RUN rm -rf target/static && scripts/build-static

FROM scratch AS bench
USER 65534:65534
COPY --from=builder /src/target/static/rinha-bench /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/rinha-bench"]
CMD ["processor", "--listen", "0.0.0.0:8080"]

FROM runtime-base AS runtime
COPY --from=builder /src/target/static/rinha /src/target/static/rinha-lb /usr/local/bin/
