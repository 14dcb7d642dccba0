"""The config JSON: the reproducible description of a run, and the one input format of every caller.

The page downloads it with each run, ``python -m recon fit --config`` reads it, and the public API
(``/fit``, ``/estimate``) takes it as text: ``format``, ``method``, ``target``, ``settings``,
``seed`` (and, written by recon, ``device``, library ``versions``, what the run did). Reading it
validates every field and raises :class:`ConfigError` with a message meant for the person who
wrote the file; values out of bounds are clamped and said so (:func:`recon.params.validate`).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch3d
import torch

from . import __version__
from .methods import METHODS, get_method
from .params import SettingError, knobs, to_values, validate

CONFIG_FORMAT = "recon-config"
CONFIG_VERSION = 1
#: A config is a few kB; anything much bigger is not one (and is not parsed).
MAX_CONFIG_BYTES = 1_000_000


class ConfigError(ValueError):
    """A config that cannot be used; the message says what is wrong with it."""


def versions() -> dict[str, str]:
    return {"recon": __version__, "torch": torch.__version__, "pytorch3d": pytorch3d.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def plain(value: Any) -> Any:
    """A numpy or torch scalar as the Python value JSON can hold."""
    return value.item() if hasattr(value, "item") else value


def config_dict(method: str, target: str, cfg: Any, device: Any = "cpu", target_source: str = "builtin",
                **extra: Any) -> dict[str, Any]:
    """The reproducible description of a run, as plain JSON-able data.

    `target_source` is "builtin" (target is a built-in name), "file" (a path) or "upload" (the
    page's uploaded mesh or dataset; target is its display name).
    """
    settings = {k: plain(v) for k, v in to_values(cfg).items()}
    out = {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, "method": method, "target": target,
           "target_source": target_source, "settings": settings, "seed": settings.get("seed"),
           "device": str(device), "versions": versions()}
    out.update(extra)
    return out


def write_config(config: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    return path


@dataclass
class LoadedConfig:
    method: str
    target: str | None
    target_source: str
    cfg: Any
    messages: list[str]  # values that were clamped or settings that were ignored
    seed: int | None = None


def parse_config(data: str | bytes | dict, strict: bool = False) -> LoadedConfig:
    """A config JSON (text or parsed) -> method, target and a validated config.

    Raises :class:`ConfigError` for anything structural (not JSON, nested too deep, not an object,
    no or unknown method, settings not an object). Out-of-range values are clamped and reported in
    ``messages``; unknown settings and values of the wrong kind are reported too, or raise with
    ``strict=True``.
    """
    if isinstance(data, (str, bytes)):
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config is larger than {MAX_CONFIG_BYTES // 1000} kB; that is not a recon config")
        try:
            data = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the config is not valid JSON ({exc})") from None
        except RecursionError:  # e.g. "[[[[...]]]]" thousands deep
            raise ConfigError("the config is nested too deeply to be a recon config") from None
    if not isinstance(data, dict):
        raise ConfigError("the config must be a JSON object with at least a \"method\" field")
    if data.get("format", CONFIG_FORMAT) != CONFIG_FORMAT:
        raise ConfigError(f"not a recon config (format {str(data.get('format'))[:40]!r})")
    version = data.get("version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > CONFIG_VERSION:
        raise ConfigError(f"config version {str(version)[:20]!r} is newer than this recon understands "
                          f"({CONFIG_VERSION})")
    method = data.get("method")
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError(f"unknown or missing method {str(method)[:40]!r}; methods are {', '.join(METHODS)}")
    target = data.get("target")
    if target is not None and not isinstance(target, str):
        raise ConfigError(f"\"target\" must be a string, not {type(target).__name__}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise ConfigError("\"settings\" must be a JSON object of setting name -> value")
    settings = dict(settings)
    seed = data.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"\"seed\" must be an integer, not {str(seed)[:20]!r}")
        if "seed" in {k.name for k in knobs(get_method(method).Config)}:
            settings.setdefault("seed", seed)
    try:
        cfg, messages = validate(get_method(method).Config, settings, strict=strict)
    except SettingError as exc:
        raise ConfigError(f"{exc} (method {method})") from None
    return LoadedConfig(method=method, target=target, target_source=str(data.get("target_source", "builtin"))[:20],
                        cfg=cfg, messages=messages, seed=seed)


def load_config(path: str | Path, strict: bool = False) -> LoadedConfig:
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"the config file is larger than {MAX_CONFIG_BYTES // 1000} kB; that is not a recon "
                              "config")
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {Path(path).name!r} ({exc.strerror or exc})") from None
    return parse_config(text, strict=strict)
