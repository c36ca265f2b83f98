# poolwatch-exporter: Prometheus exporter for PostgreSQL connection-slot pressure.
#
#   docker build -t poolwatch-exporter .
#   docker run -p 19187:19187 -e POOLWATCH_EXPORTER_DSN=postgresql://poolwatch_exporter@db:5432/postgres \
#       -e PGPASSWORD=... poolwatch-exporter
#
# Configure with POOLWATCH_EXPORTER_* environment variables rather than arguments where you
# can: the HEALTHCHECK runs `poolwatch-exporter --healthcheck`, which reads the same
# variables (listen address, web config) to find /healthz. See docs/exporter.md.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src/ src/
RUN python -m venv /opt/poolwatch && /opt/poolwatch/bin/pip install ".[exporter]"

FROM python:${PYTHON_VERSION}-slim
COPY --from=build /opt/poolwatch /opt/poolwatch
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin poolwatch
ENV PATH="/opt/poolwatch/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    POOLWATCH_EXPORTER_WEB_LISTEN_ADDRESS=":19187"
USER 10001:10001
EXPOSE 19187
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["poolwatch-exporter", "--healthcheck"]
ENTRYPOINT ["poolwatch-exporter"]
