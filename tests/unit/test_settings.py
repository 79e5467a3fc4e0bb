"""The settings object: precedence, validation with clear errors, secrets kept out of sight."""

from __future__ import annotations

import os
import re

import pytest

from bank.settings import Settings, SettingsError, load


def test_flags_override_environment_which_overrides_the_file(tmp_path):
    config = tmp_path / "bank.toml"
    config.write_text('port = 6000\nhost = "127.0.0.2"\nlog_format = "text"\n')
    settings = load(str(config), environ={"BANK_PORT": "7000"}, overrides={"port": 8000})
    assert (settings.port, settings.host, settings.log_format) == (8000, "127.0.0.2", "text")
    assert load(str(config), environ={"BANK_PORT": "7000"}).port == 7000


def test_defaults_are_the_documented_ones():
    assert load(environ={}) == Settings(log_level="INFO")


@pytest.mark.parametrize(("environ", "message"), [
    ({"BANK_PORT": "eighty"}, "port (from BANK_PORT) must be a whole number"),
    ({"BANK_PORT": "70000"}, "port must be between 0 and 65535"),
    ({"BANK_LOG_LEVEL": "chatty"}, "log_level must be one of"),
    ({"BANK_DATABASE_URL": "mysql://x"}, "database_url must start with"),
    ({"BANK_DATABASE_URL": "postgresql://bank:hunter2@db/bank"}, "must not contain a password"),
])
def test_bad_settings_are_refused_with_a_message_naming_them(environ, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        load(environ=environ)


def test_an_unknown_key_in_the_file_is_refused(tmp_path):
    config = tmp_path / "bank.toml"
    config.write_text("prot = 1\n")
    with pytest.raises(SettingsError, match="unknown setting 'prot'"):
        load(str(config), environ={})


def test_the_database_password_comes_only_from_a_private_file(tmp_path):
    secret = tmp_path / "db-password"
    secret.write_text("s3cret/pw\n")
    os.chmod(secret, 0o644)
    environ = {"BANK_DATABASE_URL": "postgresql://bank@db.internal/bank",
               "BANK_DATABASE_PASSWORD_FILE": str(secret)}
    with pytest.raises(SettingsError, match="readable by others"):
        load(environ=environ)
    os.chmod(secret, 0o600)
    settings = load(environ=environ)
    assert settings.effective_database_url == "postgresql://bank:s3cret%2Fpw@db.internal/bank"
    assert "s3cret" not in repr(settings)
