"""Configuration from environment variables (prefix TRIAL_MATCHER_), with embedded defaults.

Safe defaults: client authentication required, no FHIR server contacted until
allow-listed, SQLite feedback in ./var. Every setting is documented in the README.
"""

from __future__ import annotations

import json
import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cds_service.fhir.urls import AllowList

REPO_ROOT = Path(__file__).resolve().parent.parent
# the feedback store's URL schemes (store.open_store opens them; Settings.store_problem refuses any other)
SQLITE_URL, POSTGRES_URLS = "sqlite:///", ("postgresql://", "postgres://")


def sqlite_path(url: str) -> Path:
    """The database file of a `sqlite:///PATH` URL (relative, or absolute with a fourth slash)."""
    return Path(url[len(SQLITE_URL) :])


def sqlite_can_open(path: Path) -> bool:
    """Whether the SQLite store can be opened at `path`: an existing file this process may read and write, or,
    where there is none yet, a path whose nearest existing folder it may write in (store.SqliteStore makes
    the folders and the file). Refuses only what cannot work (a folder, a path through a file, a folder it
    cannot write), so a working deployment is never refused; without this the service failed at start-up
    with a traceback."""
    try:
        if path.is_dir():
            return False
        if path.exists():
            return os.access(path, os.R_OK | os.W_OK)
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    except (OSError, ValueError):  # a NUL in the path, a name too long
        return False


def psycopg_imports() -> bool:
    """Whether the PostgreSQL driver, an optional dependency, imports here: installed is not enough (psycopg
    without its binary package and without libpq installs, and fails on import)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


class TrustedIssuer(BaseModel):
    """One entry of TRIAL_MATCHER_TRUSTED_ISSUERS: an EHR whose client tokens the service accepts (api/auth.py).
    Configuration, so defined here: settings are read by the screen's workers too, which need no HTTP client."""

    iss: str = Field(min_length=1)
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jku_allowed: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_keys(self) -> TrustedIssuer:
        if not self.jwks_url and not self.jwks_file:  # else every call of this EHR would be refused, 401
            raise ValueError("an issuer needs jwks_url or jwks_file")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAL_MATCHER_", extra="ignore")

    trials_dir: Path = Field(REPO_ROOT / "trials", description="Folder of trial YAML files")
    mappings_dir: Path = Field(REPO_ROOT / "mappings", description="Folder of code mapping YAML files")
    allowed_fhir_servers: str = Field(
        "",
        description="Comma-separated FHIR base URLs the service may contact: scheme, host and port (the "
        "scheme's default when omitted), optionally a path the base must be at or under. Empty (the default) "
        "contacts nothing. '*' allows any and is unsafe outside a sandbox.",
    )
    fhir_base_url: str | None = Field(None, description="FHIR server for /match?patient=ID calls")
    fhir_token: SecretStr | None = Field(None, description="Bearer token for fhir_base_url, if it needs one")
    fhir_timeout_seconds: float = Field(2.0, gt=0, description="Timeout of one FHIR HTTP request")
    hook_budget_seconds: float = Field(3.0, gt=0, description="Time allowed to gather data for one hook call")
    fhir_page_cap: int = Field(20, ge=1, description="Most Bundle pages followed per FHIR search")
    fhir_max_response_bytes: int = Field(
        8 * 1024 * 1024,
        gt=0,
        description="Most decoded (decompressed) bytes read from one FHIR response; a larger one is cut and its "
        "source counted as not read",
    )
    fhir_max_hook_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description="Most decoded bytes read from the FHIR server for one hook call, all responses together; "
        "sources past it are counted as not read",
    )
    fhir_max_resources_per_type: int = Field(
        10_000,
        gt=0,
        description="Most resources of one type (Condition, Observation, ...) evaluated for one hook call, from "
        "prefetch and the server together; beyond it the type is counted as read in part",
    )
    database_url: str = Field(
        "sqlite:///./var/feedback.sqlite3",
        description="Feedback store: sqlite:///PATH or postgresql://USER:PASS@HOST/DB",
    )
    admin_token: SecretStr | None = Field(None, description="Bearer token for /admin endpoints; unset disables them")
    as_of: date | None = Field(None, description="Fixed evaluation date (demos, tests); default: today")
    temporary_horizon_days: int = Field(
        365,
        ge=0,
        description="A bar that lifts further away than this (a 12-year-old, a 2-year washout) is a fail today, "
        "with its date in the reason; nearer ones make the patient possibly eligible from that date",
    )
    # no TRACE: uvicorn's trace lines carry query strings and message bodies
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", description="Log level")
    catalogue_cache: bool = Field(
        True,
        description="Keep each map's and trial's parsed YAML in a .parsed/ folder beside it, keyed by the "
        "file's SHA-256 (like __pycache__; only where that folder may be written): start-up skips the YAML",
    )
    strict_validation: bool = Field(
        False,
        description="Validate every relevant resource in full with fhir.resources "
        "R4B before reading it (slower; the default checks every element it reads)",
    )
    auth_required: bool = Field(
        True,
        description="Require the EHR's signed JWT (CDS Hooks 2.0) on CDS Hooks calls "
        "and /match. scripts/serve.sh turns it off for local use, with a warning",
    )
    public_url: str | None = Field(None, description="This service's public base URL; JWT `aud` must be it + path")
    trusted_issuers: str = Field("[]", description='JSON list of {"iss", "jwks_url" | "jwks_file", "jku_allowed"}')
    jwt_leeway_seconds: float = Field(30, ge=0, description="Clock skew allowed on exp/iat")
    jwt_max_lifetime_seconds: float = Field(300, gt=0, description="Longest exp - iat accepted")
    cors_origins: str | None = Field(
        None,
        description="Comma-separated origins allowed by CORS ('' disables CORS). Unset: '*' when client "
        "authentication is on (bearer JWTs, no cookies); loopback origins (a local CDS Hooks sandbox) when it "
        "is off. The public sandbox: https://sandbox.cds-hooks.org",
    )
    trusted_hosts: str = Field(
        "localhost,127.0.0.1,[::1]",
        description="Without TRIAL_MATCHER_PUBLIC_URL, cards link to checklists at the Host the EHR called only "
        "when that host is one of these (comma-separated host or host:port); otherwise cards carry no link",
    )
    jwks_min_refresh_seconds: float = Field(
        60, ge=0, description="Shortest interval between two fetches of one JWKS source (unknown kids wait for it)"
    )
    jwks_failure_backoff_seconds: float = Field(
        5,
        ge=0,
        description="After a failed JWKS fetch the source is not asked again for this long, doubling with each "
        "failure in a row up to 300 s; meanwhile the last good keys serve, or calls answer 503 at once",
    )
    jwks_max_wait_seconds: float = Field(
        2.0,
        gt=0,
        description="Longest a request waits for a JWKS fetch (its own or another's); then 503. Keep it under "
        "the hook budget",
    )
    max_token_bytes: int = Field(16 * 1024, gt=0, description="Longest client JWT accepted (401 above, not decoded)")
    checklist_ttl_seconds: int = Field(3600, gt=0, description="Lifetime of a card's checklist link")
    override_days: float = Field(
        90, ge=0, description="Days an overridden card (with a reason) keeps that trial off that patient's chart"
    )
    card_memory_hours: float = Field(
        72, gt=0, description="Hours a card's uuid is kept with its trial and hashed patient id, for feedback"
    )
    patient_id_salt: SecretStr | None = Field(
        None, description="Key for hashing patient ids in the store; unset: a random key kept in the store"
    )
    worklist_patient_ids: str = Field(
        "as-given",
        pattern="^(as-given|pseudonymised)$",
        description="How `screen` stores patient ids for the worklist: 'as-given', or 'pseudonymised' (HMAC-SHA256 "
        "under TRIAL_MATCHER_PATIENT_ID_SALT, which must then be set)",
    )
    worklist_within_days: int = Field(30, ge=0, le=3650, description="The worklist's 'bar lifts within N days'")
    checklist_link_type: str = Field(
        "absolute",
        pattern="^(absolute|smart)$",
        description="'absolute' (a page of this service) or 'smart' (launch a SMART app "
        "with the checklist token as appContext)",
    )
    smart_launch_url: str | None = Field(None, description="SMART app launch URL for checklist_link_type=smart")
    gc_threshold: int = Field(100_000, ge=0, description="Python gen-0 GC threshold (0 keeps Python's default)")
    # bench/bodies.py: 200 Synthea lifetime records with every prefetch key, unfiltered: p99 5.4 MiB, largest 8.8
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above)")
    export_min_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="`screen --fhir-server`: shortest wait between $export status polls, whatever Retry-After says",
    )
    export_timeout_seconds: float = Field(
        6 * 3600.0, gt=0, description="`screen --fhir-server`: the whole $export, kick-off to last file"
    )
    export_max_file_bytes: int = Field(
        8 * 1024**3,
        gt=0,
        description="`screen --fhir-server`: decoded bytes of one export file (cut above: the export fails)",
    )
    export_max_total_bytes: int = Field(
        64 * 1024**3, gt=0, description="`screen --fhir-server`: decoded bytes of all the export's files together"
    )
    host: str = Field("127.0.0.1", description="Bind address for `trial-matcher serve`")
    port: int = Field(8000, description="Port for `trial-matcher serve`")
    trial_file_max_bytes: int = Field(
        256 * 1024,
        gt=0,
        description="Largest trial YAML file read (at start-up and by `lint`); a larger one is left out and listed "
        "in /readyz",
    )
    screen_max_line_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="`screen`: longest NDJSON line read; a longer one is skipped without being held, and counted",
    )
    screen_max_patient_bytes: int = Field(
        128 * 1024 * 1024,
        gt=0,
        description="`screen`: NDJSON bytes of one patient's record; a patient over it is not screened, and counted",
    )
    screen_max_patient_resources: int = Field(
        200_000,
        gt=0,
        description="`screen`: resources of one patient's record; a patient over it is not screened, and counted",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_capitals(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    def serve_problem(self) -> str | None:
        """What keeps the service from starting with these settings (its client authentication, its FHIR
        allow-list), or None. `serve` says it in one line before uvicorn starts (whose workers would otherwise
        fail and be started again for ever); the app factory raises it (uvicorn run on its own)."""
        try:
            _ = self.allow_list
        except ValueError as e:  # UnsafeUrl names the rule, never the URL
            return f"TRIAL_MATCHER_ALLOWED_FHIR_SERVERS: {e}"
        return self.store_problem() or self.auth_problem()

    def store_problem(self) -> str | None:
        """Why the feedback store cannot be opened as configured, or None: never the URL, which holds a
        password. A PostgreSQL URL needs psycopg, an optional dependency (`scripts/serve.sh` installs it for
        one); without this check the service failed at start-up saying only "ValueError"."""
        url = self.database_url
        if url.startswith(POSTGRES_URLS):
            if not psycopg_imports():
                return (
                    "TRIAL_MATCHER_DATABASE_URL is a PostgreSQL URL, and psycopg is not installed: "
                    "pip install 'trial-matcher[postgres]' (scripts/serve.sh installs it for such a URL)"
                )
            return None
        if not url.startswith(SQLITE_URL):
            return "TRIAL_MATCHER_DATABASE_URL must start with sqlite:/// or postgresql://"
        if not sqlite_can_open(sqlite_path(url)):
            return (
                "TRIAL_MATCHER_DATABASE_URL: the SQLite file cannot be made there (a folder on its path is a file, "
                "or is not writable, or the path is a folder, or the file is not readable and writable)"
            )
        return None

    def auth_problem(self) -> str | None:
        """Why the service cannot start with this client authentication, or None. `serve` says it in one line
        before uvicorn starts; the app factory raises it (uvicorn run on its own)."""
        if not self.auth_required:
            return None
        try:
            issuers = self.issuers
        except (ValueError, TypeError, RecursionError):  # not JSON, not a list of issuers, or nested past reading
            return 'TRIAL_MATCHER_TRUSTED_ISSUERS is not a JSON list of {"iss", "jwks_url" | "jwks_file"} objects'
        if not self.public_url or not issuers:
            return (
                "client authentication is required: set TRIAL_MATCHER_PUBLIC_URL and TRIAL_MATCHER_TRUSTED_ISSUERS "
                "(or TRIAL_MATCHER_AUTH_REQUIRED=false for local use only)"
            )
        return None

    @property
    def issuers(self) -> list[TrustedIssuer]:
        return [TrustedIssuer.model_validate(i) for i in json.loads(self.trusted_issuers or "[]")]

    @property
    def allow_list(self) -> AllowList:
        return AllowList.parse(self.allowed_fhir_servers)

    @property
    def cors(self) -> list[str]:
        if self.cors_origins is None:
            return ["*"] if self.auth_required else []
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def cors_origin_regex(self) -> str | None:
        """With authentication off and no origins configured, only pages served from this machine (a local
        sandbox, any port) may call: anyone could, so no site on the internet is let in by default."""
        return LOOPBACK_ORIGINS if self.cors_origins is None and not self.auth_required else None


LOOPBACK_ORIGINS = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def settings_errors(e: ValidationError) -> list[str] | None:
    """The variables a Settings error names and what is wrong with each, one line each, never the value given
    (a mistyped variable may hold a secret); None for an error that is not the settings'."""
    if e.title != Settings.__name__:
        return None
    return [f"TRIAL_MATCHER_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors()]
