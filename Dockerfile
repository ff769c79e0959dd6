# syntax=docker/dockerfile:1
# rdma-node-agent image: `docker build -t rdma-node-agent:$(python3 -c 'import agent; print(agent.__version__)') .`
# The agent needs no compiler: its dependencies (pyproject.toml) ship as wheels or are pure Python.
# tests/unit/test_dockerfile.py holds this file to pyproject.toml; hadolint runs in tools/check-static.sh.

# Keep both stages on the same base: the virtual environment copied below links to its Python.
# Python 3.11 (pyproject: requires-python >= 3.11), the newest 3.11 patch release, Debian 12.
FROM python:3.11.15-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from: the metadata (pyproject.toml, and README.md, its readme) and
# the package. Tests, tools and manifests stay out of the image.
COPY pyproject.toml README.md ./
COPY agent/ agent/
# Build the project's wheel, then install it and exactly the dependencies it declares into a
# virtual environment; pip and setuptools are removed from it afterwards (nothing installs at run time).
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/rdma-node-agent \
    && /opt/rdma-node-agent/bin/python -m pip install /wheels/rdma_node_agent-*.whl \
    && /opt/rdma-node-agent/bin/python -m pip uninstall --yes pip setuptools

FROM python:3.11.15-slim-bookworm
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rdma-node-agent" \
      org.opencontainers.image.description="Per-node agent that observes, enforces and publishes the RDMA state of Kubernetes nodes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/spidernet-io/rdma-node-agent" \
      org.opencontainers.image.documentation="https://github.com/spidernet-io/rdma-node-agent/blob/main/docs/install.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.15-slim-bookworm"
COPY --from=build /opt/rdma-node-agent /opt/rdma-node-agent
# Bytecode was compiled at install time; the root filesystem is read-only in the pod.
ENV PATH=/opt/rdma-node-agent/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Root, on purpose: the agent reads root-only host files and replaces /etc/modprobe.d/ib_core.conf
# on the host; the DaemonSet drops every capability but NET_ADMIN (docs/security.md).
# hadolint ignore=DL3002
USER 0:0
EXPOSE 9435
ENTRYPOINT ["rdma-node-agent", "run"]
