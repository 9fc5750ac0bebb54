# One image for every smsq service; the command picks the role (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY producer ./producer
RUN pip install --no-cache-dir . flower==2.0.1
RUN useradd --system --uid 10001 smsq && mkdir /metrics && chown smsq /metrics
USER smsq
EXPOSE 8000 8025
CMD ["smsq", "--help"]
