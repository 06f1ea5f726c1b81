"""Configuration from environment variables (prefix TRIAL_MATCHER_), with embedded defaults.

Every setting is documented in the README's "Configuration" table.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRIAL_MATCHER_", extra="ignore")

    trials_dir: Path = Field(REPO_ROOT / "trials", description="Folder of trial YAML files")
    mappings_dir: Path = Field(REPO_ROOT / "mappings", description="Folder of code mapping YAML files")
    log_level: str = Field("INFO", description="Python log level")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
