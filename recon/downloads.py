"""One session's files: a temporary folder holding its latest export, within a quota.

Each new export replaces the last; the folder is deleted with the session. Every change to the folder
happens under the session's lock, so an export and the session's end never race.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from .export import export_core, export_extras, video_size
from .splatting import write_viewer_copy

#: Bytes of downloads a session may hold.
EXPORT_QUOTA = 200 * 2**20


class Downloads:
    """A session's download folder (created on first use)."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._folder: Path | None = None

    def folder(self) -> Path:
        with self._lock:
            if self._folder is None:
                self._folder = Path(tempfile.mkdtemp(prefix="recon-session-"))
            return self._folder

    def export(self, run: Any, target: str, source: str, threshold: float | None = None,
               extras: bool = False) -> tuple[dict[str, Any], list[str]]:
        """The finished run's core files, replacing the previous export, or with `extras` its videos
        added (left out past the quota); returns (kind -> path, notes). Never raises."""
        notes: list[str] = []
        with self._lock:
            out = self.folder() / f"run{run.ticket}"
            try:
                if not extras:
                    for old in self.folder().iterdir():  # only the latest run's files are kept
                        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
                    files = export_core(run, out, target, source, threshold=threshold, notes=notes)
                    if "splat_ply" in files:  # framed for the page's splat viewer; the download stays as fitted
                        ply = files["splat_ply"]
                        files["viewer_ply"] = write_viewer_copy(ply, out / "viewer" / f"{ply.stem}_framed_for_viewer.ply")
                    return files, notes
                frames, size = video_size(run.device)
                files = export_extras(run, out, target, frames=frames, size=size, notes=notes)
                if sum(p.stat().st_size for p in self.folder().rglob("*") if p.is_file()) > EXPORT_QUOTA:
                    for p in files.values():
                        p.unlink(missing_ok=True)
                    files = {}
                    notes.append("The videos were left out: they would exceed this session's download quota.")
                return files, notes
            except Exception as exc:  # an export problem must not take the page down
                notes.append(f"Export failed ({type(exc).__name__}: {exc})")
                return {}, notes

    def path(self, name: str) -> Path:
        """Where a file named `name` (a safe name) goes in this session's folder."""
        return self.folder() / name

    def delete(self) -> None:
        with self._lock:
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None
