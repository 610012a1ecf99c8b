# The Phoenix95 image: every stage worker, the webhook and the lag exporter run from it.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY phoenix95 ./phoenix95
RUN pip install --no-cache-dir .
RUN useradd --create-home phoenix95
USER phoenix95
ENTRYPOINT ["p95"]
CMD ["--help"]
