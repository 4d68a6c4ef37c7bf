# syntax=docker/dockerfile:1
# One image for the three hecht services, their web processes and workers, and
# the portal (web pages for people).
#
#   web:    gunicorn -c deploy/gunicorn.conf.py 'services.members.app:create_app()'
#           (likewise agreements, notify, portal)
#   worker: hecht worker members        (likewise agreements, notify)
#   once:   hecht migrate               (indexes and topics; idempotent)
#
# Build from the repository root:  docker build -t hecht:local .
# The base image is pinned to a patch release; pin its digest too in your
# registry mirror (FROM python:3.11.x-slim-trixie@sha256:...) for reproducible builds.

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

# ---- build: hecht and its pinned dependencies in a virtual environment -----
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# hecht and exactly the dependency versions of constraints.txt, into a virtual
# environment that the runtime stage copies.
#
# The portal's translations: the catalogues (.po) are in git, the compiled .mo
# files are not (and .dockerignore keeps local ones out). Babel (the version of
# constraints.txt) compiles them before hecht is installed, so that the install
# carries them into the package like the portal's templates and static files.
# The last step fails the build when a file the portal reads at run time
# (template, static file, .mo) did not make it into the installed package: its
# pattern is then missing from [tool.setuptools.package-data] in pyproject.toml.
COPY pyproject.toml constraints.txt ./
COPY hecht ./hecht
COPY services ./services
RUN python -m venv /opt/hecht \
    && /opt/hecht/bin/pip install -c constraints.txt babel \
    && /opt/hecht/bin/pybabel compile --statistics -d services/portal/translations \
    && /opt/hecht/bin/pip install -c constraints.txt . \
    && /opt/hecht/bin/python -c "import pathlib, sys, sysconfig; src = pathlib.Path('services/portal'); dst = pathlib.Path(sysconfig.get_paths()['purelib'], 'services', 'portal'); skip = {'.py', '.pyc', '.po', '.pot', '.cfg', '.md'}; missing = sorted(str(p) for p in src.rglob('*') if p.is_file() and p.suffix not in skip and not dst.joinpath(p.relative_to(src)).is_file()); sys.exit('not installed, see [tool.setuptools.package-data]: ' + ' '.join(missing) if missing else 0)"

# ---- runtime ----------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hecht" \
      org.opencontainers.image.description="Event backbone for regional GP organisations: members, agreements, notify, portal"

ENV PATH=/opt/hecht/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HECHT_BIND=0.0.0.0:8000 \
    HECHT_METRICS_PORT=9100 \
    HECHT_SCHEMAS_DIR=/app/schemas

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 hecht \
    && useradd --system --uid 10001 --gid hecht --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin hecht

COPY --from=build /opt/hecht /opt/hecht
WORKDIR /app
COPY deploy/gunicorn.conf.py deploy/gunicorn.conf.py
# The event schemas and the AsyncAPI document, read at run time. hecht is
# installed as a package (not from a checkout), so HECHT_SCHEMAS_DIR points here.
COPY schemas schemas

USER 10001:10001

EXPOSE 8000 9100

# Liveness of the web process on the port of HECHT_BIND. Workers override it
# (docker-compose checks their metrics port; Kubernetes uses its own probes).
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('HECHT_BIND', '0.0.0.0:8000').rsplit(':', 1)[1]; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=2)"]

CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "services.members.app:create_app()"]
