# WedSync Gateway: one node. Production adds GATEWAY_* settings for Redis and Postgres.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto/python ./proto/python
COPY gateway ./gateway
COPY loadtest ./loadtest
# two wheels: the protocol package (a dependency of the gateway) and the gateway itself
RUN pip wheel --no-cache-dir --wheel-dir /wheels ./proto/python .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /data gateway \
    && mkdir -p /data && chown gateway /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER gateway
# production: refuses to start without GATEWAY_JWT_SECRET or GATEWAY_JWT_PUBLIC_KEYS (a mounted
# PEM/JWKS file); set GATEWAY_ENVIRONMENT=development to try the image without tokens
ENV GATEWAY_HOST=0.0.0.0 \
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
