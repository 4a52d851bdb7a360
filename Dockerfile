# Minimal image: pdeserve on the Ray base image of the same Ray version as pyproject.toml.
# (The multi-stage CPU/CUDA build with a gRPC HEALTHCHECK is tracked in the deployment issue.)
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

WORKDIR /opt/pdeserve
COPY --chown=ray:users pyproject.toml constraints.txt README.md ./
COPY --chown=ray:users datagen ./datagen
COPY --chown=ray:users operators ./operators
COPY --chown=ray:users serving ./serving
COPY --chown=ray:users protos ./protos
RUN pip install --no-cache-dir -c constraints.txt .
COPY --chown=ray:users models /models

USER ray
EXPOSE 9000 8000 8080
CMD ["pdeserve", "serve", "--repo", "/models"]
