# syntax=docker/dockerfile:1
# The operator image the Helm chart runs (charts/embedding-index-controller).
#
#   docker build -t ghcr.io/indexops/embedding-index-controller:0.1.0 .
#
# Two stages: the build stage installs the package and its `operator` extra into a
# virtualenv; the runtime stage copies only that virtualenv onto a slim Python base.
# tests/operator/test_image.py keeps the chart's command, uid/gid and ports equal to
# this file, and lints it with hadolint.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY controller ./controller
# A regular (non-editable) install: the runtime stage has no source tree.
RUN /opt/venv/bin/pip install ".[operator]"

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="embedding-index-controller" \
      org.opencontainers.image.description="EmbeddingIndex operator: vector-search index lifecycles under embedding drift" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/indexops/embedding-index-controller"
# uid/gid 65532 = the chart's podSecurityContext runAsUser/runAsGroup/fsGroup.
RUN groupadd --system --gid 65532 controller \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin controller \
 && mkdir -p /var/lib/embedding-index-controller /data \
 && chown 65532:65532 /var/lib/embedding-index-controller
COPY --from=build /opt/venv /opt/venv
# A read-only root filesystem works: nothing writes outside the mounted volumes. HOME and
# TMPDIR point at /tmp (an emptyDir in the chart); no .pyc files are written at run time.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CONTROLLER_STORE=/var/lib/embedding-index-controller \
    CONTROLLER_DATA_DIR=/data
WORKDIR /tmp
USER 65532:65532
# 8080: /healthz and /readyz (--health-port); 9090: Prometheus /metrics (--metrics-port).
EXPOSE 8080 9090
ENTRYPOINT ["controller", "operator"]
