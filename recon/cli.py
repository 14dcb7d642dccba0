"""The headless command line: ``python -m recon fit ...`` and ``python -m recon list``.

``fit`` drives the same :class:`recon.runner.Run` as the page and writes the same files (see
:func:`recon.export.export_run`). Settings are layered, later wins:

    method defaults  <  --config FILE  <  --preset NAME  <  --set NAME=VALUE ...  <  --iters / --seed

Without --config or --preset the method's preset for the device is used, as the page does. Any bad
argument ends with a one-line message and exit status 2; a run that fails exits with 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

EXIT_USAGE = 2
EXIT_RUN_FAILED = 1


class UsageError(Exception):
    """A bad argument; the message is printed as ``recon: error: <message>``."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m recon",
                                description="3D reconstruction by differentiable rendering, without the page.")
    sub = p.add_subparsers(dest="command", metavar="{fit,list}")
    sub.required = True
    sub.add_parser("list", help="methods, built-in targets and presets")
    f = sub.add_parser("fit", help="run one method on one target and write its files",
                       description="Run one method on one target and write the mesh, videos, history and config.")
    f.add_argument("--method", help="method name (see `list`); default: the config's, else deform")
    f.add_argument("--target", help="built-in target name or a mesh file (.obj .ply .off .stl .glb); "
                                    "default: the config's, else cow")
    f.add_argument("--iters", type=int, metavar="N", help="iterations (overrides the config)")
    f.add_argument("--out", metavar="DIR", help="output folder (default: runs/<method>_<target>)")
    f.add_argument("--config", metavar="JSON", help="a config written by the page or by fit")
    f.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", dest="sets",
                   help="set one setting (repeatable), e.g. --set chamfer_weight=2")
    f.add_argument("--preset", help="apply a named preset of the method")
    f.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: $RECON_DEVICE, else cuda when present)")
    f.add_argument("--seed", type=int, help="random seed (overrides the config)")
    f.add_argument("--threshold", type=float, help="density threshold of the extracted surface (volumetric "
                                                   "methods; default: half the largest density)")
    f.add_argument("--frames", type=int, default=36, help="turntable frames (default 36)")
    f.add_argument("--size", type=int, default=128, help="video frame size in pixels (default 128)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# --- list -------------------------------------------------------------------------------------


def cmd_list(out=sys.stdout) -> int:
    from .assets import BUILTINS
    from .methods import METHODS

    print("Methods:", file=out)
    width = max(map(len, METHODS))
    for name, (cls, line) in METHODS.items():
        print(f"  {name:<{width}}  {line}", file=out)
    print("\nBuilt-in targets (or give a mesh file path):", file=out)
    width = max(map(len, BUILTINS))
    for name, (_, line) in BUILTINS.items():
        shown = f'"{name}"' if " " in name else name
        print(f"  {shown:<{width + 2}}  {line}", file=out)
    print("\nPresets:", file=out)
    for name, (cls, _) in METHODS.items():
        presets = ", ".join(f'"{p}"' if " " in p else p for p in cls.presets) or "(none)"
        by_device = ", ".join(f"{d}: {p}" for d, p in cls.device_presets.items())
        print(f"  {name}: {presets}" + (f"  [default on {by_device}]" if by_device else ""), file=out)
    return 0


# --- fit --------------------------------------------------------------------------------------


def parse_set(items: Sequence[str], cfg_cls: type) -> dict[str, Any]:
    """``NAME=VALUE`` strings -> values checked against the knobs' kinds (bounds are clamped later)."""
    from .params import knobs

    by_name = {k.name: k for k in knobs(cfg_cls)}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name:
            raise UsageError(f"--set wants NAME=VALUE, got {item!r}")
        k = by_name.get(name)
        if k is None:
            raise UsageError(f"unknown setting {name!r}; settings are {', '.join(by_name)}")
        if k.kind == "bool":
            if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise UsageError(f"--set {name}: {raw!r} is not true/false")
            values[name] = raw.lower() in ("1", "true", "yes", "on")
        elif k.kind == "choice":
            if raw not in k.choices:
                raise UsageError(f"--set {name}: {raw!r} is not one of {', '.join(k.choices)}")
            values[name] = raw
        else:
            try:
                num = float(raw)
            except ValueError:
                raise UsageError(f"--set {name}: {raw!r} is not a number") from None
            if not math.isfinite(num):
                raise UsageError(f"--set {name}: {raw!r} is not finite")
            values[name] = num
    return values


def _resolve_target(spec: str):
    """(asset, name, source) for a built-in name or a mesh file path."""
    from .assets import BUILTINS, AssetError, load_builtin, load_upload

    if spec in BUILTINS:
        return load_builtin(spec), spec, "builtin"
    if os.path.isfile(spec):
        try:
            return load_upload(spec), spec, "file"
        except AssetError as exc:
            raise UsageError(str(exc)) from None
    if os.path.exists(spec):
        raise UsageError(f"target {spec!r} is not a file")
    raise UsageError(f"unknown target {spec!r}: not a built-in ({', '.join(BUILTINS)}) and no such file")


def build_config(args: argparse.Namespace) -> tuple[str, str, Any, list[str]]:
    """(method, target spec, config, warnings) from the layered arguments."""
    import dataclasses

    from .export import ConfigError, load_config
    from .methods import METHODS, get_method
    from .params import from_values

    loaded = None
    if args.config:
        try:
            loaded = load_config(args.config, strict=True)
        except ConfigError as exc:
            raise UsageError(f"--config {args.config}: {exc}") from None
    method = args.method or (loaded.method if loaded else "deform")
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; methods are {', '.join(METHODS)}")
    if loaded and loaded.method != method:
        raise UsageError(f"--method {method} does not match the config's method {loaded.method!r}")
    target = args.target or (loaded.target if loaded and loaded.target else "cow")
    cls = get_method(method)
    warnings = list(loaded.messages) if loaded else []
    cfg = loaded.cfg if loaded else None
    preset = args.preset
    if preset is None and loaded is None:
        preset = cls.device_presets.get(args.device_type)
    if preset is not None and preset != "Defaults":
        if preset not in cls.presets:
            raise UsageError(f"unknown preset {preset!r} for {method}; presets are "
                             f"{', '.join(cls.presets) or '(none)'}")
        cfg, msgs = from_values(cls.Config, cls.presets[preset], base=cfg)
        warnings += msgs
    values = parse_set(args.sets, cls.Config)
    if args.iters is not None:
        values["iterations"] = args.iters
    if args.seed is not None:
        if not any(f.name == "seed" for f in dataclasses.fields(cls.Config)):
            raise UsageError(f"{method} has no seed setting")
        values["seed"] = args.seed
    cfg, msgs = from_values(cls.Config, values, base=cfg)
    warnings += msgs
    return method, target, cfg, warnings


def _progress(run, quiet: bool) -> None:
    """Follow the run with a tqdm bar (it/s and the current loss) until it ends."""
    from tqdm import tqdm

    bar = tqdm(total=run.total, unit="it", disable=quiet, dynamic_ncols=True, file=sys.stderr)
    try:
        shown, state = 0, None
        while True:
            finished = not run.alive
            st = run.status()
            if st["state"] != state:
                state = st["state"]
                bar.set_description_str(state)
            if st["iteration"] > shown:
                bar.update(st["iteration"] - shown)
                shown = st["iteration"]
            total = st["loss"].get("total")
            if total is not None:
                bar.set_postfix_str(f"loss={total:.5g}", refresh=False)
            if finished:
                break
            time.sleep(0.1)
    finally:
        bar.close()


def cmd_fit(args: argparse.Namespace) -> int:
    from .assets import safe_name
    from .device import describe, pick_device

    try:
        device = pick_device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {args.device}: {exc}") from None
    if not 1 <= args.frames <= 720:
        raise UsageError(f"--frames must be between 1 and 720, not {args.frames}")
    if not (16 <= args.size <= 1024 and args.size % 16 == 0):
        raise UsageError(f"--size must be a multiple of 16 between 16 and 1024 (video codecs want that), "
                         f"not {args.size}")
    if args.iters is not None and args.iters < 1:
        raise UsageError(f"--iters must be at least 1, not {args.iters}")
    args.device_type = device.type
    method, target_spec, cfg, warnings = build_config(args)
    asset, target, source = _resolve_target(target_spec)
    out = Path(args.out or Path("runs") / f"{method}_{safe_name(target)}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    for w in warnings:
        print(f"recon: warning: {w}", file=sys.stderr)

    from .export import describe_files, export_run
    from .methods import get_method
    from .runner import Run

    print(f"recon: {method} on {asset.name} · {cfg.iterations} iterations · device {describe(device)}",
          file=sys.stderr)
    run = Run(get_method(method), asset, cfg, device).start()
    try:
        _progress(run, args.quiet)
    except KeyboardInterrupt:
        print("recon: interrupted; stopping and saving what there is", file=sys.stderr)
        run.stop()
    run.join()
    notes: list[str] = []
    try:
        files = export_run(run, out, target, source, threshold=args.threshold, frames=args.frames,
                           size=args.size, notes=notes)
    except OSError as exc:
        print(f"recon: error: writing the files into {out} failed ({exc.strerror or exc})", file=sys.stderr)
        run.close()
        return EXIT_RUN_FAILED
    for n in notes:
        print(f"recon: note: {n}", file=sys.stderr)
    print(f"recon: {run.state}: {run.message}", file=sys.stderr)
    print(f"recon: wrote {len(files)} files to {out}:\n" + describe_files(files))
    run.close()
    return EXIT_RUN_FAILED if run.state == "error" else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and its message
        return int(exc.code or 0)
    try:
        if args.command == "list":
            return cmd_list()
        return cmd_fit(args)
    except UsageError as exc:
        print(f"recon: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
