# syntax=docker/dockerfile:1
# Telegram image bot: a slim runtime image running as an unprivileged user (uid 10001).
# The base is pinned to a patch release; move it on when Python publishes the next 3.11.x.
FROM python:3.11.14-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# -- build: the bot's own wheel, made apart so no sources or build files reach the image --------
FROM base AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# -- runtime ----------------------------------------------------------------------------------
FROM base

# A start-up failure that a restart cannot fix (a bad setting, a rejected token) waits this
# long before exiting, so `restart: unless-stopped` does not loop fast (see README).
# METRICS_PORT turns on the /healthz and /metrics server the HEALTHCHECK below asks, bound to
# 127.0.0.1 inside the container (METRICS_LISTEN) unless you open it for Prometheus.
ENV DATA_DIR=/data \
    STARTUP_FAILURE_DELAY_SECONDS=30 \
    METRICS_PORT=9464

RUN groupadd --system --gid 10001 bot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /app /data \
    && chown 10001:10001 /app /data

# The dependencies, in a layer that changes only when pyproject.toml does.
RUN --mount=type=bind,source=pyproject.toml,target=/tmp/pyproject.toml \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The bot itself, from the wheel built above (nothing is left in /app or /tmp).
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/wheels \
    pip install --no-cache-dir --no-deps /tmp/wheels/*.whl

WORKDIR /app
USER 10001:10001
VOLUME ["/data"]

# Healthy while the bot polls (or serves its webhook) and its database answers: GET /healthz on
# METRICS_PORT is 200, else 503 with the reason (`docker inspect` shows it). The probe asks
# 127.0.0.1, so keep METRICS_LISTEN at 127.0.0.1 or 0.0.0.0; with METRICS_PORT emptied the
# server is off and the check fails (turn it off too: compose `healthcheck: disable: true`).
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['METRICS_PORT'], timeout=8)"]

CMD ["python", "-m", "bot"]
