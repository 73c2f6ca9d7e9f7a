"""The one config model: defaults, the file, then AGENTMETER_* variables; errors name the key."""

from pathlib import Path

import pytest

from agentmeter.config import ConfigError, load_config


def test_defaults_without_file_or_environment() -> None:
    config = load_config(environ={})
    assert config.database.url == "sqlite:///./agentmeter.db"
    assert config.limiter.listen == "127.0.0.1:8787"
    assert config.exporter.listen == "127.0.0.1:9787"
    assert config.limiter.max_body_bytes == 32 * 1024 * 1024
    assert config.limiter.unknown_models == "deny"


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("limiter:\n  unknown_models: deny\n  providers:\n    openai:\n"
                    "      base_url: http://file\n")
    config = load_config(file, environ={
        "AGENTMETER_LIMITER_UNKNOWN_MODELS": "allow",
        "AGENTMETER_DATABASE_URL": "postgresql://u@h/db",
        "AGENTMETER_OPENAI_API_KEY": "sk-secret",
        "AGENTMETER_ANTHROPIC_BASE_URL": "http://anthropic.local",
        "AGENTMETER_EXPORTER_KUBERNETES_ENABLED": "true",
        "AGENTMETER_EXPORTER_MAX_USERS": "5",
        "AGENTMETER_LIMITER_LIMIT_EXCEEDED_STATUS": "403",
        "AGENTMETER_LIMITER_LIMIT_RETRY_AFTER": "true",
    })
    assert config.limiter.unknown_models == "allow"
    assert config.database.url == "postgresql://u@h/db"
    assert config.limiter.providers["openai"].base_url == "http://file"
    assert config.limiter.providers["openai"].api_key == "sk-secret"
    assert config.limiter.providers["anthropic"].base_url == "http://anthropic.local"
    assert config.exporter.kubernetes.enabled is True
    assert config.exporter.max_users == 5
    assert (config.limiter.limit_exceeded_status, config.limiter.limit_retry_after) == (403, True)
    assert "sk-secret" not in repr(config)


def test_upstreams_keep_their_defaults_and_a_second_one_of_a_kind_is_added(
        tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("limiter:\n  providers:\n    azure:\n      kind: openai\n"
                    "      base_url: https://azure.example\n      key_header: api-key\n"
                    "      headers: {OpenAI-Organization: org-1}\n"
                    "      max_connections: 50\n")
    config = load_config(file, environ={"AGENTMETER_GOOGLE_API_KEY": "g-secret",
                                        "AGENTMETER_GOOGLE_BASE_URL": "http://gemini.local"})
    upstreams = config.limiter.providers
    assert set(upstreams) == {"openai", "anthropic", "google", "azure"}
    assert upstreams["google"].base_url == "http://gemini.local"
    assert upstreams["google"].api_key == "g-secret"
    assert upstreams["azure"].headers == {"OpenAI-Organization": "org-1"}
    assert upstreams["azure"].max_connections == 50


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("exporter:\n  listen: 0.0.0.0:1234\n")
    assert load_config(environ={"AGENTMETER_CONFIG": str(file)}).exporter.listen == "0.0.0.0:1234"


@pytest.mark.parametrize(("text", "env", "message"), [
    ("limiter:\n  fail_mode: maybe\n", {}, "limiter.fail_mode"),
    ("limiter:\n  limit_exceeded_status: 500\n", {},
     "limiter.limit_exceeded_status must be one of 402, 403, 409, 429, got 500"),
    ("", {"AGENTMETER_LIMITER_LIMIT_EXCEEDED_STATUS": "200"},
     "limiter.limit_exceeded_status must be one of 402, 403, 409, 429, got 200"),
    ("limiter:\n  listn: x\n", {}, "unknown setting 'limiter.listn'"),
    ("nope: 1\n", {}, "unknown setting 'nope'"),
    ("", {"AGENTMETER_EXPORTER_MAX_USERS": "many"}, "exporter.max_users"),
    ("[1]\n", {}, "must be a mapping"),
    ("a: [\n", {}, "not valid YAML"),
    ("limiter:\n  providers:\n    azure:\n      base_url: http://a\n", {},
     "limiter.providers.azure.kind: unknown upstream kind 'azure'"),
    ("limiter:\n  providers:\n    openai:\n      headerz: {}\n", {},
     "unknown setting 'limiter.providers.openai.headerz'"),
])
def test_bad_settings_name_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                   message: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(file, environ=env)


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent.yaml", environ={})


def test_ledger_retention_from_file_and_environment(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("ledger:\n  message_retention_days: 400\n")
    assert load_config(environ={}).ledger.message_retention_days == 0
    assert load_config(file, environ={}).ledger.message_retention_days == 400
    assert load_config(file, environ={"AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS": "30"}
                       ).ledger.message_retention_days == 30
    with pytest.raises(ConfigError, match=r"ledger\.message_retention_days must be 0"):
        load_config(environ={"AGENTMETER_LEDGER_MESSAGE_RETENTION_DAYS": "-5"})
    with pytest.raises(ConfigError, match=r"ledger\.prune_batch_rows must be positive"):
        load_config(environ={"AGENTMETER_LEDGER_PRUNE_BATCH_ROWS": "0"})
