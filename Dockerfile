# syntax=docker/dockerfile:1
# The example application's image: processhub and examples/ (examples.tenants.app), run as
# `processhub node` by deploy/ (Kubernetes manifests).
#
#   docker build -t processhub-tenants:0.1.0 .
#
# The base is pinned by its full version tag. For byte-for-byte rebuilds pin its digest
# as well: FROM python:3.11.11-slim-bookworm@sha256:<digest from
# `docker buildx imagetools inspect python:3.11.11-slim-bookworm`>.

# -- build: processhub and its dependencies as wheels ---------------------------------------
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hub/ hub/
COPY strategies/ strategies/
RUN python -m pip wheel --wheel-dir /wheels .

# -- runtime: a venv installed from those wheels, no build tools, a non-root user -----------
FROM python:3.11.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp
# The wheels are mounted for this step only: they do not stay in a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links=/wheels processhub \
    && /opt/venv/bin/pip uninstall --yes pip
RUN groupadd --system --gid 10001 processhub \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin processhub
WORKDIR /app
COPY examples/ examples/
# Byte-compiled now: at run time the root filesystem is read-only (only /tmp is writable).
RUN python -m compileall -q /app/examples
# Numeric, so Kubernetes' runAsNonRoot can verify it (deploy/: runAsUser 10001).
USER 10001:10001
# rpc (PROCESSHUB_RPC_BIND), app (TENANTS_HTTP), http (PROCESSHUB_HTTP: probes, metrics).
EXPOSE 7070 8080 9100
ENTRYPOINT ["processhub"]
CMD ["node"]
