# WedSync Gateway: one node. Production adds GATEWAY_* settings for Redis and Postgres.
FROM python:3.11-slim AS build
# a C compiler for mypyc: the update guard is compiled (tools/compile_guard.py)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/python ./proto/python
COPY gateway ./gateway
COPY loadtest ./loadtest
COPY tools ./tools
# the gateway and the protocol package into a virtualenv the runtime stage copies; then the
# guard is compiled in place, next to the installed modules, and the build tools removed
RUN python -m venv /opt/gateway \
    && /opt/gateway/bin/pip install --no-cache-dir ./proto/python . "mypy>=1.13" "setuptools>=69" \
    && cd /opt/gateway/lib/python3.11/site-packages \
    && /opt/gateway/bin/python /src/tools/compile_guard.py --root . \
    && rm -rf build build-mypyc \
    && /opt/gateway/bin/pip uninstall --yes mypy mypy_extensions pathspec setuptools \
    && /opt/gateway/bin/python -c "from gateway.compiled import guard_compiled; assert guard_compiled()"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data gateway \
    && mkdir -p /data && chown gateway /data
COPY --from=build /opt/gateway /opt/gateway
USER gateway
# production: refuses to start without GATEWAY_JWT_SECRET or GATEWAY_JWT_PUBLIC_KEYS (a mounted
# PEM/JWKS file); set GATEWAY_ENVIRONMENT=development to try the image without tokens
ENV PATH=/opt/gateway/bin:$PATH \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    GATEWAY_DATA_DIR=/data \
    GATEWAY_ENVIRONMENT=production \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8000
# Liveness without curl in the image: the standard library is enough.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=2)"
# SIGTERM → uvicorn stops accepting, closes clients with 1012 and flushes the store.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
