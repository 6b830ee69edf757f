"""The schema cache (framework/schema_cache.py): every registered config dataclass is described
without loss, what cannot be described is not cached, and a stale or corrupt cache is ignored."""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import pytest
from omegaconf import OmegaConf

from framework import schema_cache
from framework.schema import FrameworkConfig, named_schema
from framework.schema_cache import SchemaCache, Unsupported, describe_class, describe_registry, rebuild_class


def fields_of(config: type) -> list[tuple]:
    """Each field's name, resolved type and default (a factory's product), in order; a nested
    config by its name and fields."""
    hints = typing.get_type_hints(config)
    found = []
    for item in dataclasses.fields(config):
        hint = hints[item.name]
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        if dataclasses.is_dataclass(hint):
            hint = (hint.__name__, fields_of(hint))
        if dataclasses.is_dataclass(default):
            default = (type(default).__name__, dataclasses.asdict(default))
        found.append((item.name, hint, default))
    return found


def test_every_registered_schema_rebuilds_to_the_same_fields_and_the_same_hydra_node(registry):
    for component in [*registry, FrameworkConfig]:
        config = getattr(component, "config", component)
        rebuilt = rebuild_class(json.loads(json.dumps(describe_class(config))), methods=False)
        assert fields_of(rebuilt) == fields_of(config), config
        assert (rebuilt.__name__, rebuilt.__qualname__, rebuilt.__module__) == (
            config.__name__, config.__qualname__, config.__module__)
        # What Hydra stores: the schema with the component's name added.
        named = named_schema(config, "probe"), named_schema(rebuilt, "probe")
        original, copy = (OmegaConf.structured(item) for item in named)
        assert OmegaConf.to_yaml(copy) == OmegaConf.to_yaml(original)
        assert OmegaConf.get_type(copy).__name__ == OmegaConf.get_type(original).__name__


@dataclass
class Nested:
    depth: int = 2


@dataclass
class Wide:
    plain: float = 0.5
    maybe: Optional[int] = None
    either: typing.Union[int, str] = 3
    modern: list[int] = field(default_factory=lambda: [1, 2])
    older: List[str] = field(default_factory=list)
    table: Dict[str, Any] = field(default_factory=lambda: {"a": 1.0})
    pipe: int | None = None
    inner: Nested = field(default_factory=Nested)
    required: str = "???"


def test_typing_forms_are_told_apart_and_nested_configs_keep_their_defaults():
    rebuilt = rebuild_class(json.loads(json.dumps(describe_class(Wide))))
    assert fields_of(rebuilt) == fields_of(Wide)
    assert [repr(hint) for hint in typing.get_type_hints(rebuilt).values()][:-2] == [
        repr(hint) for hint in typing.get_type_hints(Wide).values()][:-2]
    assert OmegaConf.to_yaml(OmegaConf.structured(rebuilt)) == OmegaConf.to_yaml(OmegaConf.structured(Wide))


class Colour(enum.Enum):
    RED = 1


@dataclass
class WithEnum:
    colour: Colour = Colour.RED


@dataclass
class WithTuple:
    sizes: tuple = (1, 2)


@pytest.mark.parametrize("config", [WithEnum, WithTuple])
def test_a_schema_that_cannot_be_described_exactly_is_refused(config):
    with pytest.raises(Unsupported):
        describe_class(config)


class FakeManager:
    origins: dict = {}

    def list_name_plugin(self):
        return []


def test_a_saved_cache_is_fresh_for_the_same_environment_and_stale_when_a_keyed_variable_changes(
        registry, tmp_path, monkeypatch):
    path = tmp_path / "schemas.json"
    monkeypatch.delenv("FRAMEWORK_DISABLE_COMPONENTS", raising=False)
    first = SchemaCache(path)
    assert not first.fresh and first.components() is None
    first.save(registry, FakeManager())
    again = SchemaCache(path)
    assert again.fresh
    assert [(item.kind, item.name) for item in again.components()] == [(c.kind, c.name) for c in registry]
    assert again.stored["components"] == describe_registry(registry)["components"]
    monkeypatch.setenv("FRAMEWORK_DISABLE_COMPONENTS", "loss.huber")
    assert not SchemaCache(path).fresh


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"format": 1}', '{"format": 1, "key": 0}'])
def test_a_corrupt_cache_is_ignored(tmp_path, content):
    path = tmp_path / "schemas.json"
    path.write_text(content)
    cache = SchemaCache(path)
    assert not cache.fresh and cache.components() is None


def test_a_fresh_cache_whose_descriptions_cannot_be_rebuilt_is_ignored(registry, tmp_path):
    path = tmp_path / "schemas.json"
    SchemaCache(path).save(registry, FakeManager())
    stored = json.loads(path.read_text())
    stored["components"][0]["config"]["fields"][0]["type"] = {"no such form": "int"}
    path.write_text(json.dumps(stored))
    cache = SchemaCache(path)
    assert cache.fresh and cache.components() is None


def test_an_unwritable_cache_folder_is_no_error(registry, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    cache = SchemaCache(blocker / "framework" / "schemas.json")
    cache.save(registry, FakeManager())
    assert not cache.fresh


def test_the_cache_folder_follows_xdg_cache_home_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert schema_cache.cache_file().parent == tmp_path / "framework"
    for off in ("0", "off", "false"):
        monkeypatch.setenv(schema_cache.CACHE_ENV, off)
        assert not schema_cache.enabled()
    monkeypatch.delenv(schema_cache.CACHE_ENV)
    assert schema_cache.enabled()


def test_writing_a_cache_removes_those_of_deleted_environments_and_keeps_the_others(registry, tmp_path):
    folder = tmp_path / "framework"
    folder.mkdir()
    alive = {"executable": sys.executable, "framework": str(schema_cache.FRAMEWORK_DIR)}
    gone_venv = {"executable": str(tmp_path / "deleted-venv" / "bin" / "python"), "framework": alive["framework"]}
    gone_checkout = {"executable": sys.executable, "framework": str(tmp_path / "deleted-checkout" / "framework")}
    caches = {name: folder / f"schemas-{name}.json" for name in ("alive", "venv", "checkout", "old", "other")}
    for name, owner in (("alive", alive), ("venv", gone_venv), ("checkout", gone_checkout)):
        caches[name].write_text(json.dumps({"format": 1, "key": "k", "owner": owner}))
    caches["old"].write_text(json.dumps({"format": 1, "key": "k"}))  # written before owners were kept
    caches["other"].write_text("{not json")
    SchemaCache(folder / "schemas-mine.json").save(registry, FakeManager())
    assert sorted(path.name for path in folder.iterdir()) == sorted(
        f"schemas-{name}.json" for name in ("alive", "old", "other", "mine"))
    assert json.loads((folder / "schemas-mine.json").read_text())["owner"] == alive
