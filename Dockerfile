# The Leoma validator image: `leoma serve` as a non-root user, the event log in a volume.
#
#   docker build -t leoma:latest .                 # or: docker compose build
#   docker run --rm leoma:latest leoma --version
#
# Three stages: `wheels` builds this repository's wheel and collects every dependency's wheel;
# `install` puts them into a virtualenv from those wheels alone (no index, so the image holds
# exactly what was collected); the runtime copies only that virtualenv onto a slim Python.
# PYTHON_IMAGE may name any Debian-based image with python3 (>= 3.11) and its venv module: CI
# builds with a base it made from Debian's packages (see .ci/image), since it reaches no registry.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY leoma ./leoma
COPY projections ./projections
COPY cmd ./cmd
RUN python3 -m venv /build \
 && /build/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --upgrade pip \
 && /build/bin/pip wheel --quiet --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS install
COPY --from=wheels /wheels /wheels
RUN python3 -m venv /opt/leoma \
 && /opt/leoma/bin/pip install --quiet --no-cache-dir --disable-pip-version-check --no-index \
      --find-links /wheels leoma \
 && /opt/leoma/bin/pip uninstall --quiet --yes pip

FROM ${PYTHON_IMAGE} AS runtime
COPY --from=install /opt/leoma /opt/leoma
# A fixed uid/gid, so the wallet folder on the host can be made readable to it (see
# docker-compose.yml); the state directory is its home and the volume.
RUN groupadd --gid 10001 leoma \
 && useradd --uid 10001 --gid leoma --home-dir /var/lib/leoma --shell /usr/sbin/nologin leoma \
 && mkdir -p /var/lib/leoma /home/leoma/.bittensor/wallets \
 && chown -R leoma:leoma /var/lib/leoma /home/leoma
ENV PATH=/opt/leoma/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LEOMA_STATE_DIR=/var/lib/leoma \
    BT_WALLET_PATH=/home/leoma/.bittensor/wallets \
    LEOMA_METRICS_ADDR=0.0.0.0:9108
# The build fails here unless the command runs and PyAV can encode H.264 (what the judge sees).
RUN leoma --version \
 && python3 -c "import av; av.codec.Codec('libx264', 'w'); av.codec.Codec('h264', 'r')"
USER leoma
WORKDIR /var/lib/leoma
VOLUME ["/var/lib/leoma"]
EXPOSE 9108
# `leoma serve` handles SIGTERM itself (the current append finishes, the own log is pushed
# within LEOMA_FLUSH_TIMEOUT, exit 0); the exec form makes it PID 1 so the signal reaches it.
STOPSIGNAL SIGTERM
# `leoma healthz` asks /healthz of the process in this container, wherever it listens.
HEALTHCHECK --interval=60s --timeout=10s --start-period=120s --retries=3 CMD ["leoma", "healthz"]
CMD ["leoma", "serve"]
