"""Settings.from_env: every field from COHORT_<FIELD>, typed, defaults otherwise."""

from __future__ import annotations

import msgspec
import pytest

from services.settings import Settings


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.key_prefix == "cohort"
    assert settings.partitions == 16
    assert settings.demo is False


def test_reads_and_converts_every_kind_of_field() -> None:
    settings = Settings.from_env(
        {
            "COHORT_REDIS_URL": "redis://example:6380/2",
            "COHORT_PARTITIONS": "8",
            "COHORT_DEMO": "true",
            "COHORT_OVERFLOW_WINDOW_S": "1.5",
            "COHORT_ADMIN_TOKEN": "tok",
        }
    )
    assert settings.redis_url == "redis://example:6380/2"
    assert settings.partitions == 8
    assert settings.demo is True
    assert settings.overflow_window_s == 1.5
    assert settings.admin_token == "tok"


def test_every_field_has_an_env_variable() -> None:
    env = {}
    for field in msgspec.structs.fields(Settings):
        if field.type is str:
            env[f"COHORT_{field.name.upper()}"] = f"from-env-{field.name}"
    settings = Settings.from_env(env)
    for field in msgspec.structs.fields(Settings):
        if field.type is str:
            assert getattr(settings, field.name) == f"from-env-{field.name}"


def test_ignores_unrelated_variables() -> None:
    settings = Settings.from_env({"COHORT_NO_SUCH_FIELD": "x", "PARTITIONS": "3"})
    assert settings.partitions == 16


def test_overrides_win_over_the_environment() -> None:
    settings = Settings.from_env({"COHORT_PORT": "9000"}, port=9100)
    assert settings.port == 9100


def test_generates_a_secret_only_when_unset() -> None:
    first, second = Settings.from_env({}), Settings.from_env({})
    assert len(first.secret) == 64 and first.secret != second.secret
    assert Settings.from_env({"COHORT_SECRET": "fixed"}).secret == "fixed"


@pytest.mark.parametrize(
    ("name", "value"), [("COHORT_PARTITIONS", "many"), ("COHORT_DEMO", "maybe"),
                        ("COHORT_WS_PROTOCOL", "wsproto")]
)
def test_rejects_values_of_the_wrong_type(name: str, value: str) -> None:
    with pytest.raises(msgspec.ValidationError):
        Settings.from_env({name: value})


def test_is_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("name", "value"), [
    ("ARCHIVE_DUTY", "0"), ("ARCHIVE_DUTY", "1.5"), ("FINALIZER_NICE", "-1"),
    ("FINALIZER_NICE", "20"), ("COMMAND_RETRY_S", "-1"), ("WORKER_TICK_MS", "-1"),
    ("WORKER_TICK_MS", "1001"), ("MAX_COMMANDS_PER_S", "-1"), ("MAX_UNSENT_ANSWERS", "0"),
])
def test_bounded_settings_out_of_range_are_refused(name: str, value: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=name.lower()):
        Settings.from_env({f"COHORT_{name}": value})


def test_archive_pacing_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.archive_duty == 0.25 and settings.finalizer_nice == 10
    assert Settings.from_env({"COHORT_ARCHIVE_DUTY": "1"}).archive_duty == 1.0
    assert settings.command_retry_s == 20.0
    assert Settings.from_env({"COHORT_COMMAND_RETRY_S": "0"}).command_retry_s == 0
    assert settings.worker_tick_ms == 0
    assert Settings.from_env({"COHORT_WORKER_TICK_MS": "4"}).worker_tick_ms == 4.0


def test_channel_flow_limits_default_and_from_env() -> None:
    settings = Settings.from_env({})
    assert settings.max_commands_per_s == 1000 and settings.max_unsent_answers == 1000
    tuned = Settings.from_env({"COHORT_MAX_COMMANDS_PER_S": "0",
                               "COHORT_MAX_UNSENT_ANSWERS": "50"})
    assert tuned.max_commands_per_s == 0 and tuned.max_unsent_answers == 50
