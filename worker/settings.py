"""Settings from the environment (12-factor), read through strict helpers; defaults live here and only here."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "sqlite:///data/segments.db"
DEFAULT_RULES_FILE = "rules.yaml"
DEFAULT_PORT = 8000
DEFAULT_LOG_LEVEL = "INFO"
DEFAULT_MAX_REQUEST_BYTES = 5 * 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_FORMAT = "auto"  # text on a terminal, JSON lines otherwise (worker/logs.py)
LOG_FORMATS = ("AUTO", "JSON", "TEXT")
MIN_SESSION_SECRET_CHARS = 32
# An API key is the caller's whole secret. Below 20 characters it is most likely a word or a test value ('changeme',
# 'test-key') that a guesser tries first; 20 random characters (secrets.token_urlsafe(15) gives them) are out of
# reach even without the slow-down for wrong keys.
MIN_API_KEY_CHARS = 20


class SettingsError(ValueError):
    """An environment variable holds something we cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    rules_file: str = DEFAULT_RULES_FILE
    api_keys: tuple[str, ...] = ()
    admin_api_keys: tuple[str, ...] = ()
    port: int = DEFAULT_PORT
    log_level: str = DEFAULT_LOG_LEVEL
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    log_format: str = DEFAULT_LOG_FORMAT
    cors_origins: tuple[str, ...] = ()  # browsers on these origins may call the API; none by default
    webhook_allowed_hosts: tuple[str, ...] = ()  # when set, rules may only send webhooks to these hosts
    # Signs the dashboard's session cookie; None: derived from the API keys (the same in every worker process).
    session_secret: str | None = field(default=None, repr=False)
    # The dashboard's cookie is Secure (HTTPS only) unless this is set, for plain-HTTP tests and local demos.
    dashboard_insecure_cookie: bool = False
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def write_keys(self) -> tuple[str, ...]:
        """Keys that may write (orders, replay): the admin keys, or every key while no admin key is set."""
        return self.admin_api_keys or self.api_keys

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if environ is None else environ)
        return cls(
            database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            rules_file=env.get("RULES_FILE") or DEFAULT_RULES_FILE,
            api_keys=env_keys(env, "API_KEYS"),
            admin_api_keys=env_keys(env, "ADMIN_API_KEYS"),
            port=env_int(env, "PORT", DEFAULT_PORT, minimum=1, maximum=65535),
            log_level=env_choice(env, "LOG_LEVEL", DEFAULT_LOG_LEVEL, LOG_LEVELS),
            max_request_bytes=env_int(env, "MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES, minimum=1024),
            log_format=env_choice(env, "LOG_FORMAT", DEFAULT_LOG_FORMAT.upper(), LOG_FORMATS).lower(),
            cors_origins=cors_origins(env),
            webhook_allowed_hosts=allowed_hosts(env),
            session_secret=env_secret(env, "SESSION_SECRET", MIN_SESSION_SECRET_CHARS),
            dashboard_insecure_cookie=env_bool(env, "DASHBOARD_INSECURE_COOKIE", False),
            env=env,
        )


def env_list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())


def env_keys(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated API keys, each at least MIN_API_KEY_CHARS long; the message says which one by its place in
    the list, never by its value."""
    keys = env_list(env, name)
    for place, key in enumerate(keys, start=1):
        if len(key) < MIN_API_KEY_CHARS:
            raise SettingsError(f"{name}: every key must be at least {MIN_API_KEY_CHARS} characters (e.g. the output "
                                f"of 'python -c \"import secrets; print(secrets.token_urlsafe(32))\"'); key {place} of "
                                f"{len(keys)} has {len(key)}")
    return keys


def env_secret(env: Mapping[str, str], name: str, min_chars: int) -> str | None:
    """A secret long enough to resist guessing, or None when unset; the message never repeats the value."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if len(raw) < min_chars:
        raise SettingsError(f"{name} must be at least {min_chars} characters (e.g. the output of "
                            f"'python -c \"import secrets; print(secrets.token_hex(32))\"'), got {len(raw)}")
    return raw


def cors_origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """CORS_ORIGINS: exact origins such as https://crm.example.com (scheme, host and port, no path)."""
    origins = env_list(env, "CORS_ORIGINS")
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise SettingsError(f"CORS_ORIGINS: '{origin}' is not an origin like https://crm.example.com")
    return tuple(origin.lower() for origin in origins)


def allowed_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    """WEBHOOK_ALLOWED_HOSTS: host names (no scheme, no port) that webhook URLs in the rules may point at."""
    hosts = env_list(env, "WEBHOOK_ALLOWED_HOSTS")
    for host in hosts:
        if any(ch in host for ch in "/:@ "):
            raise SettingsError(f"WEBHOOK_ALLOWED_HOSTS: '{host}' is not a host name like n8n.example.com")
    return tuple(host.lower().rstrip(".") for host in hosts)


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int | None = None,
            maximum: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false, got {raw!r}")
    return raw == "true"


def env_choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().upper()
    if not raw:
        return default
    if raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw
