# Strongroom operator image: multi-stage, slim official Python base, pinned dependencies,
# numeric non-root user, nothing written outside mounted volumes (read-only root works).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock ./
RUN python -m venv /opt/strongroom \
 && /opt/strongroom/bin/pip install --no-deps --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/strongroom/bin/pip install --no-deps . \
 && /opt/strongroom/bin/strongroom --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="strongroom" \
      org.opencontainers.image.description="Envelope-encrypted secrets synced into Kubernetes Secrets"
COPY --from=build /opt/strongroom /opt/strongroom
ENV PATH=/opt/strongroom/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    STRONGROOM_DATABASE_URL=sqlite:////data/strongroom.db
USER 65532:65532
WORKDIR /data
EXPOSE 8080 9090
ENTRYPOINT ["strongroom", "run"]
