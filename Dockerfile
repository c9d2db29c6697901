# The fairserve gateway (`fairserve serve`) as an image, for the Kubernetes
# example in docs/gateway.md:
#   docker build -t fairserve-gateway .
#   docker run -p 8000:8000 -v $PWD/gateway.yaml:/etc/fairserve/gateway.yaml fairserve-gateway
# The config must listen on all interfaces inside the container
# (server: {host: 0.0.0.0, ...}) or be started with --host 0.0.0.0.
#
# The gateway runs no simulation, so the simulator is installed pure-Python
# (FAIRSERVE_PURE_PYTHON=1): no C compiler and no mypy in the build, and the
# image carries only the base install (no Ray, scikit-learn or test tools) and
# redis-py, for several replicas sharing state through Redis (docs/gateway.md,
# "Several replicas").

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 FAIRSERVE_PURE_PYTHON=1
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN python -m venv /opt/fairserve && /opt/fairserve/bin/pip install ".[redis]"

FROM python:3.11-slim-bookworm
ENV PATH=/opt/fairserve/bin:$PATH PYTHONUNBUFFERED=1 FAIRSERVE_PURE_PYTHON=1
COPY --from=build /opt/fairserve /opt/fairserve
RUN useradd --system --uid 10001 --no-create-home fairserve
USER 10001
EXPOSE 8000
# Kubernetes probes /readyz and /healthz itself; this serves plain docker.
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["fairserve"]
CMD ["serve", "--config", "/etc/fairserve/gateway.yaml", "--host", "0.0.0.0"]
