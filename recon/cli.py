"""The headless command line: ``python -m recon fit ...``, ``export-views`` and ``list``.

``fit`` drives the same :class:`recon.runner.Run` as the page and writes the same files (see
:mod:`recon.export`). Settings are layered, later wins:

    method defaults  <  --config FILE  <  --preset NAME  <  --set NAME=VALUE ...  <  --iters / --seed

Without --config or --preset the method's preset for the device is used, as the page does. The run
is priced before it starts (memory and time, :mod:`recon.cost`) and refused when it would not fit
this machine (``--force`` runs it anyway). A target is a built-in name, a mesh file, or a multi-view
dataset (a folder or a .zip in the NeRF-synthetic layout). Any bad argument ends with a one-line
message and exit status 2; a run that fails exits with 1.

The subcommands import what they use when they run (no cycle is behind it): ``--help`` and a bad
argument answer at once, without loading torch and PyTorch3D.
"""

from __future__ import annotations

import argparse
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
    sub = p.add_subparsers(dest="command", metavar="{fit,export-views,list}")
    sub.required = True
    sub.add_parser("list", help="methods, built-in targets and presets")
    v = sub.add_parser("export-views", help="write a target's views in the NeRF-synthetic layout",
                       description="Write a target's training and held-out views as a multi-view dataset "
                                   "(transforms_train.json, transforms_test.json, RGBA PNGs), as a method sees them.")
    v.add_argument("--target", default="cow", help="built-in target name or a mesh file (default: cow)")
    v.add_argument("--method", default="volume", help="whose cameras: textured_mesh (its sweep, white background) or "
                                                     "volume / nerf / splats (the ring); default volume")
    v.add_argument("--views", type=int, default=40, help="training views (default 40)")
    v.add_argument("--test-views", type=int, default=8, help="held-out views (default 8)")
    v.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    v.add_argument("--out", required=True, metavar="DIR_OR_ZIP", help="a folder, or a path ending in .zip")
    f = sub.add_parser("fit", help="run one method on one target and write its files",
                       description="Run one method on one target and write the mesh, videos, history and config.")
    f.add_argument("--method", help="method name (see `list`); default: the config's, else deform")
    f.add_argument("--target", help="built-in target name, a mesh file (.obj .ply .off .stl .glb), or a dataset "
                                    "folder or .zip (NeRF-synthetic layout); default: the config's, else cow")
    f.add_argument("--center", nargs=3, type=float, metavar=("X", "Y", "Z"),
                   help="datasets: the scene point to place at the origin (default: nearest to all optical axes)")
    f.add_argument("--scale", type=float, help="datasets: the scene's scale factor (default: cameras at 2.7)")
    f.add_argument("--force", action="store_true", help="run even when the estimate exceeds this machine's budget")
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
    f.add_argument("--frames", type=int, help="turntable frames (default 36 on a GPU, 24 on a CPU, as the page)")
    f.add_argument("--size", type=int, help="video frame size in pixels (default 128 on a GPU, 96 on a CPU)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# --- list -------------------------------------------------------------------------------------


def cmd_list(out=sys.stdout) -> int:
    from .assets import BUILTINS
    from .methods import METHODS
    from .targets import BUILTIN_DATASETS

    print("Methods:", file=out)
    width = max(map(len, METHODS))
    for name, (cls, line) in METHODS.items():
        print(f"  {name:<{width}}  {line}", file=out)
    print("\nBuilt-in targets (or give a mesh file, or a dataset folder or .zip):", file=out)
    targets = {**{k: v[1] for k, v in BUILTINS.items()}, **{k: v[1] for k, v in BUILTIN_DATASETS.items()}}
    width = max(map(len, targets))
    for name, line in targets.items():
        shown = f'"{name}"' if " " in name else name
        print(f"  {shown:<{width + 2}}  {line}", file=out)
    print("\nPresets:", file=out)
    for name, (cls, _) in METHODS.items():
        presets = ", ".join(f'"{p}"' if " " in p else p for p in cls.presets) or "(none)"
        by_device = ", ".join(f"{d}: {p}" for d, p in cls.device_presets.items())
        print(f"  {name}: {presets}" + (f"  [default on {by_device}]" if by_device else ""), file=out)
    return 0


# --- fit --------------------------------------------------------------------------------------


def parse_set(items: Sequence[str], cfg_cls: type) -> dict[str, str]:
    """``NAME=VALUE`` strings -> raw values by name (checked by :func:`recon.params.validate`)."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set wants NAME=VALUE, got {item!r}")
        values[name.strip()] = raw.strip()
    return values


def _resolve_target(spec: str, center: Sequence[float] | None = None, scale: float | None = None):
    """(target, name, source) for a built-in name, a mesh file, or a dataset folder or zip."""
    from .assets import AssetError
    from .datasets import DatasetError, read_dataset
    from .targets import TargetChoice
    from .uploads import load_upload

    try:
        if TargetChoice.is_builtin(spec):
            return TargetChoice().resolve(spec), spec, "builtin"
        path = Path(spec)
        if path.is_dir() or (path.is_file() and path.suffix.lower() == ".zip"):
            return read_dataset(path, center=center, scale=scale), spec, "file"
        if path.is_file():
            return load_upload(spec), spec, "file"
    except (AssetError, DatasetError) as exc:
        raise UsageError(str(exc)) from None
    if path.exists():
        raise UsageError(f"target {spec!r} is not a file or a dataset folder")
    raise UsageError(f"unknown target {spec!r}: not a built-in ({', '.join(TargetChoice.names()[:-2])}) and no "
                     "such file or folder")


def build_config(args: argparse.Namespace) -> tuple[str, str, Any, list[str]]:
    """(method, target spec, config, warnings) from the layered arguments."""
    import dataclasses

    from .config import ConfigError, load_config
    from .methods import METHODS, get_method
    from .params import SettingError, validate

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
        cfg, msgs = validate(cls.Config, cls.presets[preset], base=cfg)
        warnings += msgs
    values: dict[str, Any] = parse_set(args.sets, cls.Config)
    if args.iters is not None:
        values["iterations"] = args.iters
    if args.seed is not None:
        if not any(f.name == "seed" for f in dataclasses.fields(cls.Config)):
            raise UsageError(f"{method} has no seed setting")
        values["seed"] = args.seed
    try:
        cfg, msgs = validate(cls.Config, values, base=cfg, strict=True)
    except SettingError as exc:
        raise UsageError(f"--set {exc}") from None
    warnings += msgs
    return method, target, cfg, warnings


def _progress(run, quiet: bool) -> None:
    """Follow the run with a tqdm bar (it/s, the loss and the live quality) until it has been scored."""
    from tqdm import tqdm

    bar = tqdm(total=run.total, unit="it", disable=quiet, dynamic_ncols=True, file=sys.stderr)
    try:
        cursor, state = None, None
        while True:
            view = run.poll(cursor)
            cursor = view.cursor
            if view.state != state:
                state = view.state
                bar.set_description_str(state)
            bar.update(view.iteration - bar.n)
            parts = [f"loss={view.last_loss['total']:.5g}"] if "total" in view.last_loss else []
            parts += [f"{k}={v:.4g}" for k, v in view.last_live.items() if k not in ("iteration", "time")]
            if parts:
                bar.set_postfix_str(" ".join(parts), refresh=False)
            if view.settled:
                break
            time.sleep(0.1)
    finally:
        bar.close()


def cmd_fit(args: argparse.Namespace) -> int:
    from .budget import Limits
    from .cost import advice
    from .device import describe, pick_device
    from .export import video_size
    from .server import run_limits
    from .targets import adapt_settings
    from .text import safe_name

    try:
        device = pick_device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {args.device}: {exc}") from None
    frames, size = video_size(device)
    args.frames = frames if args.frames is None else args.frames
    args.size = size if args.size is None else args.size
    if not 1 <= args.frames <= 720:
        raise UsageError(f"--frames must be between 1 and 720, not {args.frames}")
    if not (16 <= args.size <= 1024 and args.size % 16 == 0):
        raise UsageError(f"--size must be a multiple of 16 between 16 and 1024 (video codecs want that), "
                         f"not {args.size}")
    if args.iters is not None and args.iters < 1:
        raise UsageError(f"--iters must be at least 1, not {args.iters}")
    args.device_type = device.type
    method, target_spec, cfg, warnings = build_config(args)
    target, name, source = _resolve_target(target_spec, args.center, args.scale)
    from .methods import get_method

    cls = get_method(method)
    if not cls.fits_images and not hasattr(target, "verts"):
        raise UsageError(f"{method} fits a mesh's surface; {name!r} is an image dataset: give a mesh target")
    cfg, notes = adapt_settings(cfg, target)
    warnings += [f"adapted to the dataset: {n}" for n in notes] + [f"dataset: {n}" for n in getattr(target, "notes", ())]
    try:
        limits = run_limits(1, device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    est = cls.estimate(cfg, device)
    fits = ((limits.memory_bytes is None or est.memory_bytes <= limits.memory_bytes)
            and (limits.seconds is None or est.total_seconds <= limits.seconds))
    out = Path(args.out or Path("runs") / f"{method}_{safe_name(target.name)}")
    for w in warnings:
        print(f"recon: warning: {w}", file=sys.stderr)
    print(f"recon: {method} on {target.name} · {cfg.iterations} iterations · device {describe(device)} · "
          f"estimate {est.describe()}", file=sys.stderr)
    if not fits and not args.force:
        raise UsageError(advice(method, cfg, device, limits.memory_bytes, limits.seconds) + " (--force runs it anyway)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None

    from .export import describe_files, export_run
    from .runner import Run

    run = Run(cls, target, cfg, device, limits=limits if not args.force else Limits()).start()
    try:
        _progress(run, args.quiet)
    except KeyboardInterrupt:
        print("recon: interrupted; stopping and saving what there is", file=sys.stderr)
        run.stop()
    run.wait_settled()
    notes = []
    try:
        files = export_run(run, out, name if source == "builtin" else target.name, source, threshold=args.threshold,
                           frames=args.frames, size=args.size, notes=notes)
    except OSError as exc:
        print(f"recon: error: writing the files into {out} failed ({exc.strerror or exc})", file=sys.stderr)
        run.close()
        return EXIT_RUN_FAILED
    for n in notes:
        print(f"recon: note: {n}", file=sys.stderr)
    view = run.poll()
    score = " · ".join(f"{k} {v:.4g}" for k, v in view.final.items())
    print(f"recon: {view.state}: {view.message}" + (f" Held-out score: {score}." if score else ""), file=sys.stderr)
    print(f"recon: wrote {len(files)} files to {out}:\n" + describe_files(files))
    run.close()
    return EXIT_RUN_FAILED if view.state == "error" else 0


def cmd_export_views(args: argparse.Namespace) -> int:
    from .methods import METHODS, get_method
    from .targets import ViewSettings, views_for, write_views

    if args.method not in METHODS or not get_method(args.method).fits_images:
        raise UsageError(f"--method {args.method!r}: choose a method that fits images "
                         f"({', '.join(m for m, (c, _) in METHODS.items() if c.fits_images)})")
    for flag, value, lo, hi in (("--views", args.views, 2, 300), ("--test-views", args.test_views, 1, 100),
                                ("--size", args.size, 16, 1024)):
        if not lo <= value <= hi:
            raise UsageError(f"{flag} must be between {lo} and {hi}, not {value}")
    target, _, _ = _resolve_target(args.target)
    if not hasattr(target, "verts"):
        raise UsageError(f"{args.target!r} is a dataset already: nothing to render")
    settings = ViewSettings(num_views=args.views, image_size=args.size, sweep=getattr(get_method(args.method), "sweep",
                                                                                      "ring"),
                            heldout_views=args.test_views, eval_size=args.size)
    try:
        out = write_views(views_for(target, settings), args.out)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: {exc.strerror or exc}") from None
    print(f"recon: wrote {args.views} training and {args.test_views} held-out views of {target.name} "
          f"({args.size} px) to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and its message
        return int(exc.code or 0)
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "export-views":
            return cmd_export_views(args)
        return cmd_fit(args)
    except UsageError as exc:
        print(f"recon: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
