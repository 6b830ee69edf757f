"""Answers without training: ``--help``, ``model=NAME --help`` and a config that does not compose.

The full path (framework/cli.py) imports every plugin, and so torch, before Hydra composes the
config: seconds before a user learns that ``trainer.max_stepz`` is misspelt. These answers
need only the component config dataclasses, which framework/schema_cache.py keeps without
torch; here they are put into Hydra's ConfigStore and Hydra composes and prints exactly as in
the full path (its own ``app_help``; the error paragraph from framework/error_messages.py).

Exactness first: whatever this module is not sure to answer as the full path would, it leaves to
the full path by returning None: a stale, missing or unreadable cache, a command-line flag other
than ``--help``, ``HYDRA_FULL_ERROR=1``, an override that decides a run folder before Hydra
runs. A config that composes is never answered here: it trains, on the full path, unchanged.

A run that trains must not pay for this. Composing takes tens of milliseconds, so a command
without ``--help`` is composed here only when ``surely_composes`` cannot vouch for each override
from the cached schemas; it reads no more than the cache and a YAML file or two.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from framework import schema_cache
from framework.locations import config_dir
from framework.overrides import override_key
from framework.registry import KINDS, PER_FIT_KINDS

HELP_FLAGS = ("--help", "-h")
# Overrides the full path acts on before Hydra composes (framework/resume.py: the run folder,
# a resumed run's config, a folder's name quoted), or that change Hydra's mode.
DECIDED_BEFORE_HYDRA = ("trainer.resume", "trainer.init_from", "hydra.run.dir", "hydra.mode")
CONFIG_NAME = "config"
# The module whose function the full path gives hydra.main: Hydra names the job and finds the
# config search path from it.
CLI_MODULE = "framework.cli"


def answer_without_training(argv: list[str]) -> int | None:
    """Answer ``python -m framework ARGV`` here if it needs no training: print what the full
    path would print and return its exit status. None: the full path answers."""
    if not _answerable(argv):
        return None
    cache = schema_cache.current()
    if cache is None or not cache.fresh:
        return None
    help_wanted = any(arg in HELP_FLAGS for arg in argv)
    if not help_wanted and surely_composes(argv, cache.stored):
        return None
    components = cache.components()
    if components is None:
        return None
    return _compose(argv, components, help_wanted)


def _answerable(argv: list[str]) -> bool:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":  # a traceback is asked for: the full path's own
        return False
    for arg in argv:
        if arg.startswith("-"):
            if arg not in HELP_FLAGS:
                return False
        elif override_key(arg) in DECIDED_BEFORE_HYDRA:
            return False
    return True


def _compose(argv: list[str], components: list, help_wanted: bool) -> int | None:
    """Compose as the full path's Hydra would; print its help, or its error."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, detect_task_name, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from framework.console import stop_writing_to
    from framework.error_messages import describe_error
    from framework.run_folders import register_resolvers
    from framework.schema import null_group_overrides, store_configs
    from hydra_plugins.framework_vectorized_launcher.vectorized_launcher import register as register_launcher

    version.setbase("1.3")  # as framework/cli.py's hydra.main(version_base="1.3")
    GlobalHydra.instance().clear()
    try:
        argv = null_group_overrides(argv)
        store_configs(components)
        register_resolvers()
        register_launcher()  # hydra/launcher=vectorized, as the full path knows it
        search_path = create_automatic_config_search_path(None, CLI_MODULE, str(config_dir()))
        hydra = Hydra.create_main_hydra2(task_name=detect_task_name(None, CLI_MODULE),
                                         config_search_path=search_path)
        if help_wanted:
            parser = get_args_parser()
            hydra.config_loader = OneCopyConfigLoader(hydra.config_loader)
            hydra.app_help(config_name=CONFIG_NAME, args_parser=parser, args=parser.parse_args(argv))
            sys.stdout.flush()
            return 0
        hydra.compose_config(config_name=CONFIG_NAME, overrides=argv, run_mode=RunMode.RUN)
        return None  # it composes: the full path trains
    except BrokenPipeError:  # help piped into a reader that stopped early (| head), as cli.main
        stop_writing_to(sys.stdout)
        return 1
    except Exception as error:
        message, code = describe_error(error)
        if message:
            print(message, file=sys.stderr)
        return code
    finally:
        GlobalHydra.instance().clear()


class OneCopyConfigLoader:
    """Hydra's config loader, answering the questions ``--help`` asks about config groups from
    one copy of the config repository.

    Hydra's own loader deep-copies the repository, the whole ConfigStore with every component
    schema included, for each of them (about 100 for our groups: seconds). The repository does
    not change while the help is written, so one copy gives the same lists. Everything else is
    Hydra's loader itself.
    """

    def __init__(self, loader) -> None:
        from hydra._internal.config_repository import CachingConfigRepository

        self._loader = loader
        self._repository = CachingConfigRepository(loader.repository)

    def get_group_options(self, group_name, results_filter=None, config_name=None, overrides=None):
        from hydra.core.object_type import ObjectType

        if results_filter is None:
            results_filter = ObjectType.CONFIG
        if config_name is None and not overrides:  # what format_config_groups asks
            return self._repository.get_group_options(group_name, results_filter)
        return self._loader.get_group_options(group_name, results_filter, config_name, overrides)

    def list_groups(self, parent_name: str):
        from hydra.core.object_type import ObjectType

        return self.get_group_options(parent_name, ObjectType.GROUP)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


# ---------------------------------------------------------------------------------------------
# Vouching for a command line without composing it
# ---------------------------------------------------------------------------------------------

# String methods rather than regular expressions: compiling those would cost a run that trains
# more than the whole check.
PLAIN_PUNCTUATION = frozenset("_./:+-")  # with letters and digits: one int, float, bool or string


def _is_name(text: str) -> bool:
    return text.isascii() and text.replace("-", "_").isidentifier()


def _is_key(text: str) -> bool:
    return all(_is_name(part) and "-" not in part for part in text.split("."))


def _is_plain(text: str) -> bool:
    return bool(text) and text.isascii() and all(char.isalnum() or char in PLAIN_PUNCTUATION for char in text)


def _is_int(text: str) -> bool:
    digits = text[1:] if text[:1] in "+-" else text
    return digits.isascii() and digits.isdigit()


def _is_float(text: str) -> bool:
    if not (_is_plain(text) and all(char.isdigit() or char in ".eE+-" for char in text)):
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def surely_composes(argv: list[str], stored: dict) -> bool:
    """True only if every override names a group option, or a setting of a chosen component,
    that the cached schemas hold, with a value of its type. False: Hydra must say (a False for a
    config that composes costs one composition; a True is never wrong about an error, since the
    full path reports it)."""
    conf = config_dir()
    try:
        components = {(item["kind"], item["name"]): item["config"] for item in stored["components"]}
        root = stored["root"]
    except (KeyError, TypeError):
        return False
    choices: dict[str, Any] | None = None
    overrides = [arg for arg in argv if arg not in HELP_FLAGS]
    for arg in overrides:
        key, equals, value = arg.partition("=")
        if not equals:
            return False
        if key.startswith(("hydra.", "hydra/")):  # Hydra's own settings (the job name, logging)
            continue
        if key == "+task":
            if not (_is_name(value) and (conf / "task" / f"{value}.yaml").is_file()):
                return False
            continue
        if key in KINDS:
            names = _listed(value) if key in PER_FIT_KINDS else [value]
            if names is None or not all(_is_name(name) and _is_option(key, name, components, conf)
                                        for name in names):
                return False
            continue
        if not _is_key(key):
            return False
        head, _, rest = key.partition(".")
        if head == "trainer":
            fields = _fields(_trainer(root))
        elif head in KINDS and rest:
            if choices is None:
                choices = _choices(overrides, conf)
                if choices is None:
                    return False
            if head in PER_FIT_KINDS:
                chosen, _, rest = rest.partition(".")
                if not rest or chosen not in (choices.get(head) or []):
                    return False
            else:
                chosen = choices.get(head)
            fields = _option_fields(head, chosen, components, conf)
        else:
            return False
        if fields is None or not _fits(fields, rest.split("."), value):
            return False
    return True


def _listed(value: str) -> list[str] | None:
    if not (value.startswith("[") and value.endswith("]")):
        return None
    inner = value[1:-1].strip()
    return [name.strip() for name in inner.split(",")] if inner else []


def _is_option(kind: str, name: str, components: dict, conf: Path) -> bool:
    return (kind, name) in components or (conf / kind / f"{name}.yaml").is_file()


def _trainer(root: dict) -> dict | None:
    for item in root["fields"]:
        if item["name"] == "trainer" and "dataclass" in item.get("factory", {}):
            return item["factory"]["dataclass"]
    return None


def _fields(config: dict | None) -> dict | None:
    if config is None:
        return None
    fields = {}
    for item in config["fields"]:
        nested = item.get("factory", {}).get("dataclass")
        fields[item["name"]] = {"fields": _fields(nested)} if nested else {"type": item["type"]}
    return fields


def _option_fields(kind: str, name: Any, components: dict, conf: Path) -> dict | None:
    """The settings of group option ``name``: a registered component's (with the ``name`` key
    framework/schema.py adds), or a YAML variant's that only extends one and sets its keys."""
    if not isinstance(name, str):
        return None
    config = components.get((kind, name))
    if config is not None:
        fields = _fields(config)
        fields.setdefault("name", {"type": "str"})
        return fields
    variant = conf / kind / f"{name}.yaml"
    loaded = _yaml(variant) if variant.is_file() else None
    if not isinstance(loaded, dict) or list(loaded.get("defaults", [])) == []:
        return None
    defaults = loaded["defaults"]
    if len(defaults) != 1 or not isinstance(defaults[0], str) or (kind, defaults[0]) not in components:
        return None
    fields = _option_fields(kind, defaults[0], components, conf)
    if fields is None or any(key != "defaults" and key not in fields for key in loaded):
        return None
    return fields


def _choices(overrides: list[str], conf: Path) -> dict[str, Any] | None:
    """Which option of each kind the command line ends up with: the primary config's defaults,
    then the task preset's ``override /kind: name``, then the command line's ``kind=name``."""
    primary = _yaml(conf / f"{CONFIG_NAME}.yaml")
    if not isinstance(primary, dict):
        return None
    choices = _defaults(primary.get("defaults"), prefix="")
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key == "+task":
            loaded = _yaml(conf / "task" / f"{value}.yaml")
            preset = _defaults(loaded.get("defaults"), prefix="override /") if isinstance(loaded, dict) else None
            if choices is None or preset is None:
                return None
            choices.update(preset)
    if choices is None:
        return None
    for arg in overrides:
        key, _, value = arg.partition("=")
        if key in KINDS:
            choices[key] = _listed(value) if key in PER_FIT_KINDS else value
    return choices


def _defaults(entries: Any, prefix: str) -> dict[str, Any] | None:
    """{kind: option} from a defaults list's ``PREFIXkind: option`` entries; None if it holds an
    entry about a kind in any other form."""
    choices = {}
    for entry in entries or []:
        if isinstance(entry, str):
            continue
        if not isinstance(entry, dict) or len(entry) != 1:
            return None
        (key, value), = entry.items()
        group = key.split()[-1].lstrip("/").partition("@")[0]  # [optional|override] [/]group[@package]
        if group not in KINDS:
            continue
        if key != prefix + group:
            return None
        choices[group] = value
    return choices


def _fits(fields: dict, path: list[str], value: str) -> bool:
    field = fields.get(path[0])
    if field is None:
        return False
    if len(path) > 1:
        return field.get("fields") is not None and _fits(field["fields"], path[1:], value)
    return "type" in field and _value_fits(field["type"], value)


def _value_fits(kind: Any, value: str) -> bool:
    """Whether Hydra surely reads ``value`` as a value of the described type."""
    if isinstance(kind, dict) and "union" in kind and "None" in kind["union"]:
        others = [item for item in kind["union"] if item != "None"]
        return value == "null" or (len(others) == 1 and _value_fits(others[0], value))
    if value == "null" or not _is_plain(value):
        return False
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return _is_int(value) or _is_float(value)
    if kind == "bool":
        return value.lower() in ("true", "false")
    return kind in ("str", "Any")


def _yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
