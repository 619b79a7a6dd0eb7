# weir, laid out like the Fluentd image: the configuration at /fluentd/etc/fluent.conf
# ($FLUENTD_CONF picks another file there), buffers under /fluentd/buffer, a non-root user
# (uid/gid 999, as the Fluentd image's `fluent`), ports 24224/tcp+udp (forward) and 8888/tcp
# (http). A drop-in for
#   docker run -v $(pwd)/fluent.conf:/fluentd/etc/fluent.conf ... fluent/fluentd
# as
#   docker run -v $(pwd)/fluent.conf:/fluentd/etc/fluent.conf ... weir
# Build from the repository root: docker build -t weir .
# Without Docker or a registry: podman and scripts/image-base.sh (README.md, "The container
# image"); test/integration/test_image.py builds and runs this file that way in CI.

FROM debian:12-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libuv1-dev libmsgpack-dev libcurl4-openssl-dev \
      libssl-dev libjansson-dev zlib1g-dev libzstd-dev libhttp-parser-dev libpcre2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# only what the weir target needs (CMakeLists.txt always configures bench/)
COPY CMakeLists.txt ./
COPY include include
COPY src src
COPY bench bench
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DWEIR_TESTS=OFF \
 && cmake --build build -j"$(nproc)" --target weir \
 && strip build/weir

FROM debian:12-slim
# Runtime libraries (Debian 12 package names) plus CA certificates for S3 over HTTPS and
# tzdata for named time zones (timekey_zone, <inject> timezone). bash, used by the health
# check, is part of every Debian image. apt's caches (the downloaded .debs, pkgcache.bin) and
# package lists are removed here, in this layer, rather than trusted to the base image's apt
# settings (debian:12-slim's docker-clean hook; a base without it would ship them).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libmsgpackc2 libcurl4 libssl3 libjansson4 zlib1g libzstd1 libhttp-parser2.9 libpcre2-8-0 \
      ca-certificates tzdata \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 999 fluent \
 && useradd --system --uid 999 --gid fluent --home-dir /home/fluent --create-home fluent \
 && mkdir -p /fluentd/etc /fluentd/buffer /fluentd/log \
 && chown -R fluent:fluent /fluentd
COPY --from=build /src/build/weir /usr/local/bin/weir
COPY docker/fluent.conf /fluentd/etc/fluent.conf
COPY docker/entrypoint.sh /bin/entrypoint.sh
# The mode is set here rather than trusted from the build context (a checkout without the
# executable bit would otherwise give "permission denied" at `docker run`). Running the binary
# on the default configuration proves every shared library it needs is in this image.
RUN chmod 0755 /bin/entrypoint.sh \
 && weir --version \
 && weir --dry-run -q -c /fluentd/etc/fluent.conf
ENV FLUENTD_CONF=fluent.conf
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 999:999
WORKDIR /home/fluent
EXPOSE 24224/tcp 24224/udp 8888/tcp
# The forward protocol's UDP heartbeat on 24224, answered by weir's event loop (see
# docker/entrypoint.sh). For a configuration without a forward input set WEIR_HEALTHCHECK,
# e.g. http://127.0.0.1:24231/healthz, or none.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/bin/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/bin/entrypoint.sh"]
CMD ["weir"]
