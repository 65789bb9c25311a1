# containment-gateway: slim Python base, non-root user, `containment serve` as the entry point.
# Stage 1 builds the wheel, with the hot path compiled by mypyc (setup.py), where a C compiler is.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY rules rules
COPY gateway gateway
COPY admin admin
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --create-home --uid 10001 containment
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels

USER containment
# Inside the container the admin API must listen beyond loopback to be reachable at all; publish port
# 8081 only on a private network. Every admin call needs a token (CONTAINMENT_ADMIN_TOKENS).
ENV CONTAINMENT_STATE_DIR=/home/containment/state \
    CONTAINMENT_LISTEN=0.0.0.0:8080 \
    CONTAINMENT_ADMIN_LISTEN=0.0.0.0:8081
VOLUME ["/home/containment/state"]
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_containment/healthz', timeout=2)"]
ENTRYPOINT ["containment", "serve"]
