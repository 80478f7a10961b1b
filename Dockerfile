# syntax=docker/dockerfile:1
#
# canarywatch container image. Two stages: the builder turns the source tree into a wheel and
# installs it (with its dependencies, all published as binary wheels) into a virtualenv; the
# runtime stage copies only that virtualenv. No compiler, no pip cache, no source tree in the
# final image. The runtime is read-only-root compatible: it writes only to the state volume
# (/var/lib/canarywatch) and, for kubeconfig temp files, to $TMPDIR (/tmp: mount an emptyDir).
#
#   docker build -t canarywatch:0.1.0 .
#   docker run --read-only --tmpfs /tmp -v cw-state:/var/lib/canarywatch \
#     -v "$PWD/config.yaml:/etc/canarywatch/config.yaml:ro" -p 9797:9797 canarywatch:0.1.0
#
# The config must listen on 0.0.0.0:9797 (server.listen) to be reachable, which requires
# server.token, and should set state.dir: /var/lib/canarywatch.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY plugins ./plugins

# Build canarywatch's own wheel (sinks included: they are entry points of the same
# distribution), then install it into the virtualenv the runtime stage copies.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/canarywatch \
 && /opt/canarywatch/bin/pip install --only-binary=:all: /wheels/canarywatch-*.whl \
 && /opt/canarywatch/bin/pip uninstall --yes pip setuptools \
 && /opt/canarywatch/bin/canarywatch --help > /dev/null \
 && /opt/canarywatch/bin/canarywatch plugins

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="canarywatch" \
      org.opencontainers.image.description="One notification per Flagger canary transition" \
      org.opencontainers.image.licenses="Apache-2.0"

# Numeric UID/GID so Kubernetes can check runAsNonRoot without an /etc/passwd lookup.
RUN groupadd --system --gid 10001 canarywatch \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin canarywatch \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/canarywatch

COPY --from=builder /opt/canarywatch /opt/canarywatch

ENV PATH=/opt/canarywatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /var/lib/canarywatch
VOLUME ["/var/lib/canarywatch"]
EXPOSE 9797

# No HEALTHCHECK: the kubelet probes /healthz and /readyz (and systemd has its watchdog).
ENTRYPOINT ["canarywatch"]
CMD ["run", "--config", "/etc/canarywatch/config.yaml"]
