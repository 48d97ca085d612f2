"""Settings from M2N2_* environment variables."""

import pytest
from pydantic import ValidationError

from ecosystem.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for name in [n for n in os.environ if n.startswith("M2N2_")]:
        monkeypatch.delenv(name)


def test_defaults_use_sqlite_in_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("M2N2_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path}/ecosystem.db"
    assert settings.evolution.steps_per_tick == 200 and settings.promotion.min_gate_points == 30
    assert settings.registration.max_bytes == 2 * 1024**3 and settings.admin_token is None


def test_nested_groups_and_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("M2N2_STORE__URL", "postgresql+psycopg://m2n2:pw@db/m2n2")
    monkeypatch.setenv("M2N2_EVOLUTION__SECONDS_PER_TICK", "2.5")
    monkeypatch.setenv("M2N2_EVOLUTION__TORCH_THREADS", "4")
    monkeypatch.setenv("M2N2_PROMOTION__MARGIN", "0.01")
    monkeypatch.setenv("M2N2_ADMIN_TOKEN", "s3cret")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://m2n2:pw@db/m2n2"
    assert (settings.evolution.seconds_per_tick, settings.evolution.torch_threads) == (2.5, 4)
    assert settings.promotion.margin == 0.01
    assert settings.admin_token.get_secret_value() == "s3cret" and "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("M2N2_STORE__URL", "not a url", "not a database URL"),
        ("M2N2_PROMOTION__SIGNIFICANCE", "1.5", "less than 1"),
        ("M2N2_EVOLUTION__ARCHIVE_SIZE", "0", "greater than or equal to 1"),
        ("M2N2_ADMIN_TOKEN", " ", "admin_token is empty"),
    ],
)
def test_invalid_values_are_reported(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        Settings()


def test_a_tick_needs_a_budget():
    with pytest.raises(ValidationError, match="steps_per_tick or seconds_per_tick"):
        Settings(evolution={"steps_per_tick": None, "seconds_per_tick": None})
