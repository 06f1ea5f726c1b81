# trial-matcher CDS Hooks service

# The screen's byte scan, compiled (native/: Rust, PyO3, built by maturin): one abi3 wheel for Python 3.11+.
# Built apart, so the image holds the wheel and no Rust toolchain. Bookworm's glibc, which the runtime's
# Debian matches or exceeds.
FROM rust:1-slim-bookworm AS native
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY native/pyproject.toml native/Cargo.toml native/Cargo.lock ./native/
COPY native/src ./native/src
RUN python3 -m venv /venv && /venv/bin/pip wheel --no-cache-dir ./native -w /wheels

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cds_service ./cds_service
COPY --from=native /wheels /tmp/wheels
RUN pip install . /tmp/wheels/*.whl && rm -rf /tmp/wheels \
    && useradd --create-home --uid 10001 app && mkdir -p /data && chown app /data
COPY mappings ./mappings
COPY trials ./trials
COPY demo ./demo
# parse the maps and trials once, as root (cds_service/parsed_cache.py): the service reads the kept trees,
# and its user cannot change them
RUN python -c "from cds_service.eligibility.catalog import Catalog; Catalog.load('mappings', 'trials')"
USER app
ENV TRIAL_MATCHER_TRIALS_DIR=/app/trials \
    TRIAL_MATCHER_MAPPINGS_DIR=/app/mappings \
    TRIAL_MATCHER_DATABASE_URL=sqlite:////data/feedback.sqlite3 \
    TRIAL_MATCHER_HOST=0.0.0.0 \
    TRIAL_MATCHER_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["trial-matcher", "serve"]
