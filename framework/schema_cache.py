"""A per-user cache of the registry's config schemas, so that answers need no plugin (no torch).

``--help`` and a config that does not compose need only the component config dataclasses the
plugins register, but the plugins import torch (about 1.4 s). A full run, which has the
registry, writes a torch-free description of every component's dataclass here; the quick answers
(framework/quick_answers.py) rebuild the dataclasses from it and compose with Hydra as usual.

The cache is keyed on everything that can change the answer:

- the cache format, the Python and its executable;
- every ``sys.path`` entry, with the names and modification times of the distributions in it
  (``*.dist-info``, ``*.egg-info``, ``*.pth``, ``hydra_plugins``): a plugin, the framework, torch
  or Hydra installed, upgraded, reinstalled or removed changes it, and so does a new folder on
  PYTHONPATH; no importlib.metadata scan (≈100 ms) is needed for it;
- the path, size and modification time of every source file of the framework, of the built-in
  plugins and of conf/ (an editable install changes without a version bump), and of the modules
  of each third-party plugin's package as they were when the cache was written;
- FRAMEWORK_DISABLE_PLUGINS, FRAMEWORK_DISABLE_COMPONENTS and FRAMEWORK_DISABLE_PLUGIN_AUTOLOAD.

A cache whose key differs, or that cannot be read or understood, is ignored (never an error);
the next full run rewrites it, atomically. FRAMEWORK_SCHEMA_CACHE=0 turns it off; its folder
is ``$XDG_CACHE_HOME/framework`` (default ``~/.cache/framework``), one file per Python
executable and framework installation; writing one removes those whose executable or
installation is gone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.locations import BUILTIN_PACKAGE, builtin_plugins_dir, config_dir
from framework.errors import OutputError
from framework.markers import DISABLE_AUTOLOAD_ENV, DISABLE_COMPONENTS_ENV, DISABLE_PLUGINS_ENV
from framework.outputs import atomic_write

CACHE_ENV = "FRAMEWORK_SCHEMA_CACHE"
FORMAT = 1
KEYED_ENV = (DISABLE_PLUGINS_ENV, DISABLE_COMPONENTS_ENV, DISABLE_AUTOLOAD_ENV)
# What, in a sys.path folder, says which distributions (and Hydra plugins) are installed there.
DISTRIBUTION_SUFFIXES = (".dist-info", ".egg-info", ".egg-link", ".pth")
HYDRA_PLUGINS = "hydra_plugins"
FRAMEWORK_DIR = Path(__file__).resolve().parent


class Unsupported(Exception):
    """A config dataclass this cache cannot describe exactly; then nothing is cached."""


@dataclass(frozen=True)
class CachedComponent:
    """What framework.schema.store_configs reads of a registry's component."""

    kind: str
    name: str
    config: type


# ------------------------------------------------------------------------------------ the key


def enabled() -> bool:
    return os.environ.get(CACHE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_file() -> Path:
    """One file per Python executable and framework installation: two virtual environments (or
    two checkouts) do not overwrite each other's cache at every run."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    owner = hashlib.sha256(f"{sys.executable}\0{FRAMEWORK_DIR}".encode()).hexdigest()[:16]
    return Path(base) / "framework" / f"schemas-{owner}.json"


def _stat(path: str) -> list:
    try:
        status = os.stat(path)
    except OSError:
        return [path, None, None]
    return [path, status.st_size, status.st_mtime_ns]


def _distributions_in(entry: str) -> list:
    try:
        with os.scandir(entry or ".") as listing:
            found = [
                [item.name, item.stat().st_mtime_ns] for item in listing
                if item.name.endswith(DISTRIBUTION_SUFFIXES) or item.name == HYDRA_PLUGINS
            ]
    except OSError:  # not a folder (a zip file, a path hook) or gone
        return _stat(entry)
    return sorted(found)


def _source_files(folder: Path | None, suffix: str) -> list:
    if folder is None:
        return []
    found = []
    for parent, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if name != "__pycache__")
        found.extend(_stat(os.path.join(parent, name)) for name in sorted(files) if name.endswith(suffix))
    return found


def environment() -> list:
    """The part of the key known before any plugin is imported."""
    return [
        FORMAT, sys.version, sys.executable,
        [os.environ.get(name, "") for name in KEYED_ENV],
        # sys.path[0] is the working folder under `python -m`: keyed by what is installed in it,
        # not by its name, so that the cache follows a user from folder to folder.
        [_distributions_in(entry) for entry in sys.path[:1]],
        [[entry, _distributions_in(entry)] for entry in sys.path[1:]],
        _source_files(FRAMEWORK_DIR, ".py"),
        _source_files(builtin_plugins_dir(), ".py"),
        _source_files(config_dir(), ".yaml"),
    ]


def digest(environment_part: list, plugin_files: list[str]) -> str:
    key = [environment_part, [_stat(path) for path in plugin_files]]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


# ---------------------------------------------------------- describing and rebuilding schemas

_NAMED_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "None": type(None), "Any": Any}


def describe_type(hint: Any) -> Any:
    """A JSON description of a field's type that rebuilds to an equal type object."""
    for text, named in _NAMED_TYPES.items():
        if hint is named:
            return text
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return {"dataclass": describe_class(hint)}
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    # typing.List[int] and list[int] (or Optional[int] and int | None) are told apart: Hydra's
    # messages may print the type.
    builtin = isinstance(hint, types.GenericAlias)
    if origin is typing.Union:
        return {"union": [describe_type(argument) for argument in arguments]}
    if isinstance(hint, types.UnionType):
        return {"pipe": [describe_type(argument) for argument in arguments]}
    if origin is list and len(arguments) == 1:
        return {"list" if builtin else "List": describe_type(arguments[0])}
    if origin is dict and len(arguments) == 2:
        return {"dict" if builtin else "Dict": [describe_type(argument) for argument in arguments]}
    raise Unsupported(f"type {hint!r}")


def rebuild_type(description: Any) -> Any:
    if isinstance(description, str):
        return _NAMED_TYPES[description]
    (form, value), = description.items()
    if form == "dataclass":
        return _nested_class(value)
    if form == "union":
        return typing.Union[tuple(rebuild_type(item) for item in value)]
    if form == "pipe":
        rebuilt = [rebuild_type(item) for item in value]
        union = rebuilt[0]
        for item in rebuilt[1:]:
            union = union | item
        return union
    if form == "list":
        return list[rebuild_type(value)]
    if form == "List":
        return typing.List[rebuild_type(value)]
    if form == "dict":
        return dict[rebuild_type(value[0]), rebuild_type(value[1])]
    if form == "Dict":
        return typing.Dict[rebuild_type(value[0]), rebuild_type(value[1])]
    raise Unsupported(f"type description {description!r}")


def _json_exact(value: Any) -> Any:
    """``value`` itself if JSON gives it back equal and of the same types (not a tuple, say)."""
    if json.loads(json.dumps(value)) != value or _types_of(json.loads(json.dumps(value))) != _types_of(value):
        raise Unsupported(f"default {value!r}")
    return value


def _types_of(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", [(_types_of(key), _types_of(item)) for key, item in value.items()])
    if isinstance(value, list):
        return ("list", [_types_of(item) for item in value])
    return type(value).__name__


def describe_class(config: type) -> dict:
    """A JSON description of a config dataclass: its names and, in order, its fields."""
    hints = typing.get_type_hints(config)
    fields = []
    for item in dataclasses.fields(config):
        if not item.init:
            raise Unsupported(f"field {item.name} of {config.__qualname__} is not an __init__ argument")
        described = {"name": item.name, "type": describe_type(hints[item.name])}
        if item.default is not dataclasses.MISSING:
            if dataclasses.is_dataclass(item.default):
                raise Unsupported(f"dataclass default of {item.name}")
            described["default"] = _json_exact(item.default)
        elif item.default_factory is not dataclasses.MISSING:
            made = item.default_factory()
            if dataclasses.is_dataclass(made):
                if made != type(made)():
                    raise Unsupported(f"default_factory of {item.name} makes a non-default {type(made).__name__}")
                described["factory"] = {"dataclass": describe_class(type(made))}
            else:
                described["factory"] = {"value": _json_exact(made)}
        fields.append(described)
    return {"name": config.__name__, "qualname": config.__qualname__, "module": config.__module__, "fields": fields}


def rebuild_class(description: dict, *, methods: bool = True) -> type:
    """A dataclass with the described names and fields (the same types, defaults and order).

    ``methods=False`` generates no ``__init__``, ``__repr__`` or ``__eq__``, most of
    make_dataclass's cost: Hydra and OmegaConf read a component's config class, never make one
    (a nested config is made by its field's default_factory, so it keeps them).
    """
    fields = []
    for item in description["fields"]:
        if "default" in item:
            spec = dataclasses.field(default=item["default"])
        elif "factory" in item:
            spec = dataclasses.field(default_factory=_factory(item["factory"]))
        else:
            spec = dataclasses.field()
        fields.append((item["name"], rebuild_type(item["type"]), spec))
    rebuilt = dataclasses.make_dataclass(description["name"], fields, init=methods, repr=methods, eq=methods)
    rebuilt.__qualname__ = description["qualname"]
    rebuilt.__module__ = description["module"]
    return rebuilt


def _nested_class(description: dict) -> type:
    """One class per described nested config, so that a field's type and its default_factory's
    product are the same class (OmegaConf refuses an instance of a look-alike)."""
    text = json.dumps(description, sort_keys=True)
    if text not in _NESTED:
        _NESTED[text] = rebuild_class(description)
    return _NESTED[text]


_NESTED: dict[str, type] = {}


def _factory(description: dict):
    if "dataclass" in description:
        return _nested_class(description["dataclass"])
    value = json.dumps(description["value"])
    return lambda: json.loads(value)  # a fresh list or dict each time, as a default_factory gives


# ------------------------------------------------------------------------- reading and writing


class SchemaCache:
    """The cache as this process sees it: its key taken before any plugin is imported."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_file()
        self.environment = environment()
        self.stored: dict | None = self._read()
        self.fresh = self.stored is not None and self.stored.get("key") == digest(
            self.environment, self.stored.get("plugin_files", []))

    def _read(self) -> dict | None:
        try:
            stored = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, unreadable or corrupt: as if there were none
            return None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            return None
        return stored

    def components(self) -> list[CachedComponent] | None:
        """The cached components with their dataclasses rebuilt; None if the cache is stale or
        cannot be understood."""
        if not self.fresh:
            return None
        try:
            return [CachedComponent(item["kind"], item["name"], rebuild_class(item["config"], methods=False))
                    for item in self.stored["components"]]
        except Exception:  # a cache written by hand or by another version: ignored
            return None

    def save(self, registry, manager) -> None:
        """Write the cache from a full run's registry, if it is stale; never an error."""
        if self.fresh:
            return
        try:
            described = describe_registry(registry)
        except Exception:  # Unsupported: a schema not described exactly is not cached, and the
            return         # answers take the full path
        plugin_files = third_party_files(manager)
        stored = {"format": FORMAT, "key": digest(self.environment, plugin_files),
                  "owner": {"executable": sys.executable, "framework": str(FRAMEWORK_DIR)},
                  "plugin_files": plugin_files, **described}
        text = json.dumps(stored).encode("utf-8")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda handle: handle.write(text))
        except (OSError, OutputError):  # an unwritable home folder: the answers take the full path
            return
        self.stored, self.fresh = stored, True
        prune_orphans(self.path.parent, keep=self.path)


def prune_orphans(folder: Path, keep: Path) -> None:
    """Remove the caches of Python executables or framework installations that no longer exist
    (a deleted virtual environment or checkout): one file each, never read again. Done when a
    cache is written, which is rare (a stale key), so no answer waits on it; never an error."""
    for path in folder.glob("schemas-*.json"):
        if path == keep:
            continue
        try:
            owner = json.loads(path.read_text(encoding="utf-8")).get("owner")
            if isinstance(owner, dict) and not (os.path.exists(owner.get("executable", ""))
                                                and os.path.isdir(owner.get("framework", ""))):
                path.unlink()
        except (OSError, ValueError, AttributeError):  # another process's, half-read, or not ours
            continue


def describe_registry(registry) -> dict:
    """The root schema and every component's config dataclass, described (see describe_class)."""
    from framework.schema import FrameworkConfig

    return {
        "root": describe_class(FrameworkConfig),
        "components": [{"kind": component.kind, "name": component.name,
                        "config": describe_class(component.config)} for component in registry],
    }


def third_party_files(manager) -> list[str]:
    """The source files of every module of each third-party plugin's top-level package."""
    packages = set()
    for name, plugin in manager.list_name_plugin():
        if plugin is None or manager.origins.get(name, "").startswith("built-in"):
            continue
        module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
        top = module.partition(".")[0]
        if top not in ("framework", BUILTIN_PACKAGE):
            packages.add(top)
    return sorted(
        module.__file__ for name, module in list(sys.modules.items())
        if name.partition(".")[0] in packages and getattr(module, "__file__", None)
    )


_current: SchemaCache | None = None


def current() -> SchemaCache | None:
    """This process's view of the cache (None when FRAMEWORK_SCHEMA_CACHE=0), its key taken
    the first time it is asked for: call it before importing plugins."""
    global _current
    if _current is None and enabled():
        _current = SchemaCache()
    return _current
