# Two images from one wheel, on the official Python image:
#   serve     the prediction API only: the package without extras (no pyspark, no Java, no MLflow server side)
#   pipeline  every other role in docker-compose.yml: Spark master and workers (spark-class from the pyspark
#             wheel), the MLflow server and the pipeline commands; with Debian's Java 17 (the default target)
#   docker build --target serve -t taxi-duration-serve:0.1.0 .
#   docker build -t taxi-duration:0.1.0 .

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps -w /dist .

FROM python:3.11-slim-bookworm AS serve
# no extras: FastAPI, uvicorn, NumPy, pandas and the MLflow client (mlflow-skinny); a model from an MLflow server
# over HTTP (TAXI_DURATION_TRACKING_URI) or a folder (--model-dir). For `serve --request-log` (Parquet, pyarrow):
#   docker build --target serve --build-arg SERVE_EXTRAS='[parquet]' -t taxi-duration-serve:0.1.0 .
ARG SERVE_EXTRAS=""
COPY --from=build /dist/*.whl /tmp/
RUN wheel="$(ls /tmp/taxi_duration_predictor-*.whl)" && pip install --no-cache-dir "${wheel}${SERVE_EXTRAS}" \
    && rm /tmp/*.whl
RUN useradd --create-home --uid 10001 app
USER app
WORKDIR /home/app
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["taxi-duration", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM python:3.11-slim-bookworm AS pipeline
# Java 17 for Spark; procps because spark-class and the Spark daemons call `ps`; tini reaps the JVMs' children
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /dist/*.whl /tmp/
# with the `spark` extra (pyspark 4.3.0, full MLflow, matplotlib): the image runs Spark itself
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
