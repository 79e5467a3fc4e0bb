"""One settings object for the server, from an optional TOML file, then environment variables,
then command-line flags (each overriding the one before), validated before anything starts.

| setting           | environment                   | file key          | default                 |
|-------------------|-------------------------------|-------------------|-------------------------|
| database_url      | BANK_DATABASE_URL             | database_url      | sqlite:///var/ledger.db |
| database password | BANK_DATABASE_PASSWORD_FILE   | database_password_file | (none)             |
| host, port        | BANK_HOST, BANK_PORT          | host, port        | 127.0.0.1, 50051        |
| metrics address   | BANK_METRICS_HOST/_PORT       | metrics_host/_port| 127.0.0.1, 9464 (0=off) |
| TLS material      | BANK_PKI_DIR                  | pki_dir           | var/pki                 |
| checkpoint keys   | BANK_KEYS_DIR                 | keys_dir          | var/keys                |
| log level, format | BANK_LOG_LEVEL, BANK_LOG_FORMAT | log_level, log_format | INFO, json        |

The file is named by `--config` or BANK_CONFIG. Secrets are never taken from the command line
or the environment: the database password is read from a file that only its owner may read
(mode 0600 or stricter), as are private keys; `repr()` never shows a secret.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("json", "text")


class SettingsError(Exception):
    """A setting is missing, malformed or unsafe; the message names it."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///var/ledger.db"
    database_password_file: str = ""
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    pki_dir: str = "var/pki"
    keys_dir: str = "var/keys"
    log_level: str = "INFO"
    log_format: str = "json"
    plaintext_dev: bool = False
    _password: str = field(default="", repr=False)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_password"}
        shown["database_url"] = redact(self.database_url)
        return f"Settings({shown})"

    @property
    def effective_database_url(self) -> str:
        """The URL with the password from the password file, for the engine only."""
        if not self._password:
            return self.database_url
        scheme, _, rest = self.database_url.partition("://")
        credentials, at, location = rest.rpartition("@")
        if not at:
            raise SettingsError("database_password_file needs a user in database_url")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:{quote(self._password, safe='')}@{location}"


def redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{location}"
    return url


_ENV = {"database_url": "BANK_DATABASE_URL",
        "database_password_file": "BANK_DATABASE_PASSWORD_FILE", "host": "BANK_HOST",
        "port": "BANK_PORT", "metrics_host": "BANK_METRICS_HOST",
        "metrics_port": "BANK_METRICS_PORT", "pki_dir": "BANK_PKI_DIR",
        "keys_dir": "BANK_KEYS_DIR", "log_level": "BANK_LOG_LEVEL",
        "log_format": "BANK_LOG_FORMAT"}


def _coerce(name: str, value: Any, source: str) -> Any:
    wanted = {f.name: f.type for f in fields(Settings)}[name]
    if wanted in ("int", int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{name} (from {source}) must be a whole number, "
                                f"not {value!r}") from None
    if wanted in ("bool", bool):
        if isinstance(value, bool):
            return value
        raise SettingsError(f"{name} (from {source}) must be true or false")
    if not isinstance(value, str):
        raise SettingsError(f"{name} (from {source}) must be text")
    return value


def load(config_file: str | None = None, environ: dict[str, str] | None = None,
         overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from the file, the environment and flag overrides; raises `SettingsError`."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    path = config_file or env.get("BANK_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as error:
            raise SettingsError(f"cannot read config file {path}: {error.strerror}") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"config file {path} is not valid TOML: {error}") from None
        known = set(_ENV) | {"plaintext_dev"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]!r} in {path}")
        values |= {k: _coerce(k, v, path) for k, v in data.items()}
    for name, variable in _ENV.items():
        if variable in env:
            values[name] = _coerce(name, env[variable], variable)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _coerce(name, value, "command line")
    settings = Settings(**values)
    return validate(settings)


def validate(settings: Settings) -> Settings:
    if not settings.database_url.startswith(("sqlite:", "postgresql")):
        raise SettingsError("database_url must start with sqlite: or postgresql")
    if "@" in settings.database_url and ":" in settings.database_url.split("://", 1)[-1].rpartition(
            "@")[0]:
        raise SettingsError("database_url must not contain a password: put it in the file named "
                            "by BANK_DATABASE_PASSWORD_FILE")
    for name in ("port", "metrics_port"):
        value = getattr(settings, name)
        if not 0 <= value <= 65535:
            raise SettingsError(f"{name} must be between 0 and 65535, not {value}")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise SettingsError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if settings.log_format not in LOG_FORMATS:
        raise SettingsError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
    password = ""
    if settings.database_password_file:
        password = read_secret(Path(settings.database_password_file), "database_password_file")
    return replace(settings, log_level=settings.log_level.upper(), _password=password)


def read_secret(path: Path, name: str) -> str:
    """A secret from a file only its owner can read; raises `SettingsError` otherwise."""
    check_private(path, name)
    return path.read_text().strip()


def check_private(path: Path, name: str) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        raise SettingsError(f"{name}: {path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"{name}: {path} is readable by others (mode "
                            f"{stat.S_IMODE(mode):o}); chmod 600 it")
