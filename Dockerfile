# MintCA image: `docker build -t mintca .`; docker-compose.yml runs it with PostgreSQL.
# Two stages: the first installs the dependencies into a virtualenv, the second copies only
# that virtualenv and the sources onto a clean slim image that runs as a non-root user.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/mintca/src
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Editable: app/db/migrate.py finds alembic.ini and migrations/ beside the package, so the
# package runs from this source tree (copied to the same path below).
RUN python -m venv /opt/mintca/venv \
    && /opt/mintca/venv/bin/pip install --editable . \
    && /opt/mintca/venv/bin/python -m compileall -q /opt/mintca/src/app /opt/mintca/src/migrations

FROM python:3.11-slim
RUN groupadd --system --gid 10001 mintca \
    && useradd --system --uid 10001 --gid mintca --home-dir /var/lib/mintca \
       --shell /usr/sbin/nologin mintca \
    && install -d -o mintca -g mintca -m 0750 /var/lib/mintca /var/lib/mintca/data
COPY --from=build /opt/mintca /opt/mintca
ENV PATH=/opt/mintca/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MINTCA_DATA_DIR=/var/lib/mintca/data \
    MINTCA_PUBLIC_BIND=0.0.0.0:8080 \
    MINTCA_MTLS_BIND=0.0.0.0:8443
WORKDIR /var/lib/mintca
USER mintca:mintca
EXPOSE 8080 8443
# /ready: the database answers and an issuing CA is loaded. The slim image has no curl: a
# stdlib urllib check that follows MINTCA_PUBLIC_BIND and MINTCA_PUBLIC_TLS like the server.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "app.server.healthcheck"]
CMD ["mintca", "serve"]
