"""Typed stage configs loaded from YAML files with ``key=value`` command-line overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mrimaster.errors import ConfigError

C = TypeVar("C")


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        is_none = value is None or (isinstance(value, str)
                                    and value.lower() in ("none", "null", ""))
        if is_none and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], value)
    if isinstance(value, str) and hint is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse {name}={value!r}") from exc
    try:
        if hint is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if hint in (int, float, str):
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(value)
        if hint is Path:
            return None if value is None else Path(str(value))
        if origin in (list, tuple):
            seq = value if isinstance(value, list | tuple) else [value]
            item = args[0] if args else Any
            items = [_coerce(name, item, v) if item is not Any else v for v in seq]
            return tuple(items) if origin is tuple else items
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: {value!r} is not a valid {getattr(hint, '__name__', hint)}"
                          ) from exc
    return value


def load_config(cls: type[C], path: Path | None = None, overrides: list[str] | None = None,
                **values: Any) -> C:
    """Build a config dataclass from a YAML file, then ``key=value`` overrides, then kwargs.

    Raises:
        ConfigError: unknown keys (the valid ones are listed) or values of the wrong type.
    """
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    raw: dict[str, Any] = {}
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} not found")
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {path} is not UTF-8 text ({exc.reason} at byte "
                              f"{exc.start})", "save the config as UTF-8 YAML") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        odd = [k for k in loaded if not isinstance(k, str)]
        if odd:
            raise ConfigError(f"config file {path} has keys that are not names: "
                              f"{', '.join(map(repr, odd))}", "write keys as plain words")
        raw.update(loaded)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        raw[key.strip().replace("-", "_")] = value
    raw.update({k: v for k, v in values.items() if v is not None})
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}",
                          f"valid keys: {', '.join(sorted(fields))}")
    kwargs = {k: _coerce(k, hints[k], v) for k, v in raw.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A YAML/JSON-safe dict of a config dataclass (paths as strings)."""
    out = {}
    for key, value in dataclasses.asdict(cfg).items():
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[key] = value
    return out


def save_config(cfg: Any, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
