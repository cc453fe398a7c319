"""Atomic file writes (nothing half-written is left behind by a crash) and output folders
checked before any work (writable, never the place of an input file)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from flipseg.errors import FlipsegError

__all__ = ["ProgressLog", "atomic_write_text", "atomic_write_bytes", "atomic_save", "check_out_dir",
           "new_file_mode", "refuse_replacing"]


def atomic_save(path: str | Path, writer: Callable[[str], Any]) -> Path:
    """Call ``writer(tmp_path)`` then move the temporary file onto ``path``.

    The file gets the usual permissions of a new file (``0o666`` less the umask), not the
    owner-only ones of a temporary file, so model files and results can be shared.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions of a new file: ``0o666`` less the process umask."""
    return 0o666 & ~_umask()


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out_dir(path: str | Path, *, flag: str = "--out",
                  inputs: Iterable[str | Path] = ()) -> Path:
    """An output folder, checked before any work: created when missing, written to once.

    ``inputs`` are the files and folders the command reads: ``path`` may be none of them
    and may hold none of them (outputs get names of their own, so they never replace an
    input).

    Raises
    ------
    FlipsegError
        ``path`` is a file, cannot be created or written to, or is or holds an input.
    """
    out = Path(path).expanduser()
    resolved = out.resolve()
    for item in inputs:
        if item is None:
            continue
        inp = Path(item).expanduser().resolve()
        if _inside(inp, resolved):
            raise FlipsegError(f"{flag} {path} is or holds the input {item}; "
                               "give the outputs a folder of their own")
    if out.exists() and not out.is_dir():
        raise FlipsegError(f"{flag} {path} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".flipseg-write-test.", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise FlipsegError(f"{flag} {path} cannot be written to ({exc.strerror or exc})") from None
    return out


def refuse_replacing(outputs: Iterable[str | Path], inputs: Iterable[str | Path], *,
                     flag: str = "--out") -> None:
    """Raise before any work when one of ``outputs`` is one of the ``inputs`` files.

    Raises
    ------
    FlipsegError
        ``writing NAME would replace the input file PATH``.
    """
    files = {Path(i).expanduser().resolve(): i for i in inputs if i is not None}
    for out in outputs:
        hit = files.get(Path(out).expanduser().resolve())
        if hit is not None:
            raise FlipsegError(f"{flag}: writing {Path(out).name} would replace the input file "
                               f"{hit}; give another {flag}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_save(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


class ProgressLog:
    """The rows of a batch run, appended as its chunks finish, for a re-run to go on from.

    The file holds JSON lines: a ``{"settings": ...}`` header, then one row (a dict) per
    line. Opening it with the same ``settings`` reads the rows back (a line cut short by a
    crash is dropped, so are rows ``keep`` refuses and, per ``key``, all but the first);
    other settings, or no file, start afresh. Either way the file is rewritten at once with
    the header and the kept rows, so the next appends go after whole lines.
    """

    def __init__(self, path: str | Path, settings: Any, *,
                 keep: Callable[[dict], bool] = lambda row: True,
                 key: Callable[[dict], Any] | None = None) -> None:
        import json

        self.path = Path(path)
        settings = json.loads(json.dumps(settings, default=str))
        self.rows: list[dict] = []
        lines: list[str] = []
        if self.path.is_file():
            lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0]) if lines else None
        except ValueError:
            header = None
        if isinstance(header, dict) and header.get("settings") == settings:
            seen = set()
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short when the run stopped
                    continue
                if not isinstance(row, dict) or not keep(row):
                    continue
                k = key(row) if key is not None else None
                if key is None or k not in seen:
                    seen.add(k)
                    self.rows.append(row)
        atomic_write_text(self.path, "".join(json.dumps(x) + "\n"
                                             for x in [{"settings": settings}, *self.rows]))

    def append(self, rows: Iterable[dict]) -> None:
        """Add ``rows``, on disk (fsync) before this returns."""
        import json

        text = "".join(json.dumps(r) + "\n" for r in rows)
        if not text:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def finish(self) -> None:
        """The run is done: the file goes."""
        self.path.unlink(missing_ok=True)
