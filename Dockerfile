# syntax=docker/dockerfile:1
# Two stages: build a venv with the bot installed, then copy only the venv and the code into a slim
# image that runs as a non-root user. Local (mlx) models are not part of the image.
#
#   docker build -t coach-bot .
#   docker run -d --name coach-bot --env-file .env -v coach-bot-data:/app/data --stop-timeout 30 coach-bot
#
# The database goes where it goes on a laptop: DATABASE_URL's default `sqlite:///data/bot.db` is
# relative to the working directory, /app, so it is /app/data/bot.db, on the volume. Keep the
# volume at /app/data (an absolute DATABASE_URL elsewhere would not be on it).
# --stop-timeout: Docker kills a container 10 s after SIGTERM by default; the bot may take up to
# SHUTDOWN_TIMEOUT (default 20 s) to finish replies and background steps, plus a moment to close.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The data directory belongs to the bot's user: a new named volume mounted there starts as a copy
# of it, owner included, so the bot can write its database without root.
RUN useradd --create-home --uid 10001 bot && mkdir -p /app/data && chown bot:bot /app/data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code next to its migrations, so `python -m bot migrate` finds insforge/migrations.
COPY bot ./bot
COPY insforge ./insforge
USER bot
VOLUME ["/app/data"]
EXPOSE 8080
# The bot serves /healthz on WEBHOOK_PORT in both polling and webhook mode.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WEBHOOK_PORT', '8080'), timeout=4)"
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
