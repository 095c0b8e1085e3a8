from pathlib import Path

import pytest

from cityops.settings import Settings, SettingsError, configuration_markdown


def test_flags_beat_environment_beat_defaults() -> None:
    assert Settings.load({}).port == 1026
    assert Settings.load({"CITYOPS_PORT": "2000"}).port == 2000
    assert Settings.load({"CITYOPS_PORT": "2000"}, port=3000).port == 3000
    assert Settings.load({"CITYOPS_PORT": "2000"}, port=None).port == 2000


def test_bad_values_name_the_setting() -> None:
    with pytest.raises(SettingsError, match="CITYOPS_PORT"):
        Settings.load({"CITYOPS_PORT": "many"})
    with pytest.raises(SettingsError, match="port"):
        Settings.load({}, port=70000)
    with pytest.raises(SettingsError, match="not a readable file"):
        Settings.load({"CITYOPS_PRELOAD_CONTEXTS": "https://x.test/c.jsonld=/no/such/file"})


def test_preload_contexts_from_environment_and_flags_merge(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonld", tmp_path / "b.jsonld"
    a.write_text("{}")
    b.write_text("{}")
    settings = Settings.load({"CITYOPS_PRELOAD_CONTEXTS": f"https://x.test/a={a}"}, preload_contexts={"https://x.test/b": b})
    assert settings.preload_contexts == {"https://x.test/a": a, "https://x.test/b": b}


def test_configuration_doc_is_current() -> None:
    doc = Path(__file__).parent.parent / "docs" / "configuration.md"
    assert doc.read_text() == configuration_markdown(), "run: python -m cityops.settings > docs/configuration.md"


def test_memory_database_cannot_be_shared_by_workers() -> None:
    with pytest.raises(SettingsError, match="memory"):
        Settings.load({}, database=":memory:", workers=2)
    assert Settings.load({}, database=":memory:").workers == 1
