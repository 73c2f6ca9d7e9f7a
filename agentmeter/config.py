"""The one configuration model: a YAML file plus AGENTMETER_* environment variables.

Every setting has a default (in the dataclasses of each room); the file overrides defaults and the
environment overrides the file. Validation happens once at start-up and errors name the bad key.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from coder.settings import CoderSettings
from exporter.settings import ExporterSettings, KubernetesSettings
from ledger.settings import DatabaseSettings, LedgerSettings
from limiter.relay.upstreams import upstream_kind
from limiter.settings import LimiterSettings, UpstreamSettings

ENV_PREFIX = "AGENTMETER_"
CONFIG_ENV = "AGENTMETER_CONFIG"


class ConfigError(Exception):
    """A configuration problem, worded for the operator (names the file and key)."""


@dataclass(frozen=True)
class Config:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    ledger: LedgerSettings = field(default_factory=LedgerSettings)
    limiter: LimiterSettings = field(default_factory=LimiterSettings)
    exporter: ExporterSettings = field(default_factory=ExporterSettings)
    coder: CoderSettings = field(default_factory=CoderSettings)
    log_level: str = "info"
    # uvloop answers the same requests with less CPU per request than asyncio's default loop;
    # `asyncio` is there for debugging and for platforms without uvloop.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"


# Environment variables that do not follow AGENTMETER_<SECTION>_<KEY>, always honoured.
_ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "AGENTMETER_ADMIN_TOKEN": ("limiter", "admin_token"),
    "AGENTMETER_OPENAI_BASE_URL": ("limiter", "providers", "openai", "base_url"),
    "AGENTMETER_OPENAI_API_KEY": ("limiter", "providers", "openai", "api_key"),
    "AGENTMETER_ANTHROPIC_BASE_URL": ("limiter", "providers", "anthropic", "base_url"),
    "AGENTMETER_ANTHROPIC_API_KEY": ("limiter", "providers", "anthropic", "api_key"),
    "AGENTMETER_GOOGLE_BASE_URL": ("limiter", "providers", "google", "base_url"),
    "AGENTMETER_GOOGLE_API_KEY": ("limiter", "providers", "google", "api_key"),
    "AGENTMETER_LOG_LEVEL": ("log_level",),
}


def _scalar_paths(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of every non-container setting, e.g. ('exporter', 'kubernetes', 'enabled')."""
    hints = typing.get_type_hints(cls)
    paths: list[tuple[str, ...]] = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            paths.extend(_scalar_paths(typing.cast(type, hint), (*prefix, f.name)))
        elif typing.get_origin(hint) is not dict:
            paths.append((*prefix, f.name))
    return paths


def env_variables() -> dict[str, tuple[str, ...]]:
    """Every environment variable agentmeter reads, mapped to the setting it sets."""
    names = {ENV_PREFIX + "_".join(path).upper(): path for path in _scalar_paths(Config)}
    names.update(_ENV_ALIASES)
    return names


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise ConfigError(f"unknown setting {path!r} (known: {', '.join(sorted(known))})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
            _check_keys(typing.cast(type, hint), value, path)
        elif typing.get_origin(hint) is dict and isinstance(value, Mapping):
            entry = typing.get_args(hint)[1]
            if dataclasses.is_dataclass(entry):
                for name, item in value.items():
                    if isinstance(item, Mapping):
                        _check_keys(typing.cast(type, entry), item, f"{path}.{name}")


def _merge_defaults_for_providers(data: dict[str, Any]) -> None:
    """Providers named in the file or the environment keep the defaults they do not override."""
    limiter = data.get("limiter")
    if not isinstance(limiter, dict) or not isinstance(limiter.get("providers"), dict):
        return
    merged: dict[str, Any] = {
        name: dataclasses.asdict(p) for name, p in LimiterSettings().providers.items()
    }
    for name, given in limiter["providers"].items():
        base = merged.get(name, {})
        merged[name] = {**base, **given} if isinstance(given, dict) else given
    limiter["providers"] = merged


def load_config(path: str | os.PathLike[str] | None = None,
                environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (or $AGENTMETER_CONFIG), apply AGENTMETER_* variables, validate."""
    env = os.environ if environ is None else environ
    source = path if path is not None else env.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    if source:
        file = Path(source)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: the config file must be a mapping of sections")
        data = loaded
    where = str(source) if source else "environment"
    try:
        _check_keys(Config, data, "")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for name, setting in env_variables().items():
        if name in env:
            _set_path(data, setting, env[name])
    _merge_defaults_for_providers(data)
    try:
        config = pydantic.TypeAdapter(Config).validate_python(data)
    except pydantic.ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            problems.append(f"{key}: {error['msg']} (got {error.get('input')!r})")
        raise ConfigError(f"{where}: invalid setting {'; '.join(problems)}") from None
    for name, upstream in config.limiter.providers.items():
        try:
            upstream_kind(name, upstream)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return config


__all__ = [
    "CoderSettings",
    "Config",
    "ConfigError",
    "DatabaseSettings",
    "ExporterSettings",
    "KubernetesSettings",
    "LedgerSettings",
    "LimiterSettings",
    "UpstreamSettings",
    "env_variables",
    "load_config",
]
