# The taxi-duration image: the project wheel (with pyspark, MLflow, FastAPI) on the official Python image and
# Debian's Java 17. One image for every role in docker-compose.yml: Spark master and workers (spark-class from
# the pyspark wheel), MLflow server, the prediction API and the pipeline commands.
#   docker build -t taxi-duration:0.1.0 .

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim-bookworm
# Java 17 for Spark; procps because spark-class and the Spark daemons call `ps`; tini reaps the JVMs' children
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /dist/*.whl /tmp/
# with the `spark` extra (pyspark 4.3.0): the image runs Spark itself
RUN wheel="$(ls /tmp/taxi_duration_predictor-*.whl)" && pip install --no-cache-dir "${wheel}[spark]" && rm /tmp/*.whl
# not root; the workspace (lakehouse, MLflow DFS temp, worker dirs) is a volume shared by driver and workers
RUN useradd --create-home --uid 10001 app && mkdir -p /workspace /mlflow && chown app:app /workspace /mlflow
USER app
WORKDIR /workspace
ENV TAXI_DURATION_WORKSPACE=/workspace \
    PYTHONUNBUFFERED=1 \
    PYARROW_IGNORE_TIMEZONE=1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["taxi-duration", "--help"]
