# syntax=docker/dockerfile:1
# The image the Helm chart runs: the installed agentmeter package in a virtualenv, nothing else.
# Its entry point is the `agentmeter` command (limiter, exporter, db upgrade, apply, ...).

# Pinned by tag and digest: a rebuilt base image never changes a release silently.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/agentmeter
WORKDIR /src
COPY pyproject.toml README.md ./
COPY ledger ./ledger
COPY limiter ./limiter
COPY exporter ./exporter
COPY dashboards ./dashboards
COPY coder ./coder
COPY agentmeter ./agentmeter
# A wheel first, then an ordinary (non-editable) install of it: only the installed package and its
# dependencies land in the virtualenv, never the source tree.
RUN /opt/agentmeter/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/agentmeter/bin/pip install /wheels/agentmeter-*.whl

FROM ${PYTHON_IMAGE}
# A fixed numeric UID/GID so Kubernetes can verify runAsNonRoot; the chart's podSecurityContext
# uses the same numbers.
RUN groupadd --system --gid 10001 agentmeter \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin agentmeter \
    && install -d -o 10001 -g 10001 /var/lib/agentmeter/spool
COPY --from=build /opt/agentmeter /opt/agentmeter
ENV PATH=/opt/agentmeter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AGENTMETER_LIMITER_SPOOL_DIR=/var/lib/agentmeter/spool
WORKDIR /var/lib/agentmeter
USER 10001:10001
EXPOSE 8787 9787
ENTRYPOINT ["/opt/agentmeter/bin/agentmeter"]
CMD ["--help"]
