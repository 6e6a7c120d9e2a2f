"""Training settings in a TOML file: `mnistlab train --config run.toml`, and `--print-config`.

A file holds any of the train command's settings, named as its flags are without the dashes
(`batch_size = 128`; `batch-size` is read too), a `preset`, and where the run reads and writes
(`data_dir`, `out`, `tensorboard`). For example:

    preset = "fast"
    epochs = 2
    model_config = {channels = [16, 32], hidden = 128}
    augment = {degrees = 10}

Flags given on the command line override the file. `--print-config` writes the resolved config,
every field, in this form, so that the printed text, fed back with --config, gives the same run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import typing
from pathlib import Path
from typing import Any

from ..errors import MnistlabError
from .config import PRESETS, RunConfig, from_preset

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

# the settings that are not the recipe (RunConfig) but where the run reads and writes, with their types
RUN_OPTIONS: dict[str, tuple[type, ...]] = {"preset": (str,), "data_dir": (str,), "out": (str,),
                                            "tensorboard": (bool, str)}
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false", dict: "a table"}


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in a TOML file, each checked: RunConfig fields and RUN_OPTIONS, by field name."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MnistlabError(f"{path}: no such config file.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MnistlabError(f"{path}: cannot read this config file ({getattr(e, 'strerror', None) or e}).") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MnistlabError(f"{path}: not valid TOML ({e}).") from None
    expected = _expected_types()
    settings = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in expected:
            raise MnistlabError(f"{path}: unknown key '{key}'; a config file takes the train command's settings "
                                f"(e.g. batch_size, lr, model), preset, data_dir, out and tensorboard.")
        if not _is(value, expected[name]):
            kinds = " or ".join(_TYPE_NAMES[t] for t in expected[name] if t is not int or float not in expected[name])
            raise MnistlabError(f"{path}: '{key}' must be {kinds}, not {_shown(value)}.")
        settings[name] = value
    _check_values(path, settings)
    return settings


def _expected_types() -> dict[str, tuple[type, ...]]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: (int, float) if hints[f.name] is float else (hints[f.name],)
            for f in dataclasses.fields(RunConfig)} | RUN_OPTIONS


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # a bool is an int to Python, not to a config file
        return bool in types
    return isinstance(value, types)


def _check_values(path: str | os.PathLike, settings: dict[str, Any]) -> None:
    """The file's values on their own: each within its range, and names that exist."""
    from ..data.mnist import DATASETS
    from ..models import MODELS

    for key, known in (("preset", PRESETS), ("model", MODELS), ("dataset", DATASETS)):
        if key in settings and settings[key] not in known:
            raise MnistlabError(f"{path}: {key} '{settings[key]}' is not one of: {', '.join(known)}.")
    recipe = {k: v for k, v in settings.items() if k not in RUN_OPTIONS}
    try:
        from_preset(settings.get("preset"), **recipe)  # over its preset, as the run will take it
    except MnistlabError as e:
        raise MnistlabError(f"{path}: {e}") from None


def config_toml(cfg: RunConfig, options: dict[str, Any] | None = None, comment: str = "") -> str:
    """`cfg`, every field, as a TOML file that read_config reads back to the same RunConfig; then
    the RUN_OPTIONS in `options` that are set."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines += [f"{name} = {_value(value)}" for name, value in cfg.to_dict().items()]
    lines += [f"{name} = {_value(value)}" for name, value in (options or {}).items()
              if name in RUN_OPTIONS and value is not None]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    """One TOML value: tables inline, as JSON would show them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # 0.1, 1e-05, inf, nan: each TOML as Python writes it
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_value, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise MnistlabError(f"{value!r} cannot be written as TOML (it has no null).")


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _string(key)


def _string(s: str) -> str:
    """A TOML basic string: quotes and backslashes escaped, control characters as \\uXXXX."""
    escaped = (f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else "\\" + c if c in '"\\' else c for c in s)
    return '"' + "".join(escaped) + '"'


def _shown(value: Any) -> str:
    """A value as the file has it."""
    try:
        return _value(value)
    except MnistlabError:  # a date, or a null inside a table
        return str(value)
