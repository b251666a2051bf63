"""Files and folders the package writes: whole or not at all, one writer at a time, and only its
own folders ever replaced.

Notebook: 00_setup_and_data (where the world goes and what ``--overwrite`` may replace).

* ``exclusive(folder)`` holds a lock for as long as a world, a cache or a run folder is being
  written. A second writer gets a ``BusyError`` naming the process that holds it. The lock is the
  operating system's (``flock``), so a killed process never leaves a stale lock behind.
* ``check_replaceable(out, kind)`` lets ``--overwrite`` replace only a folder the package wrote
  (recognised by its manifest) or an empty one, and never the current folder, one of its parents,
  or a folder that holds (or lies inside) an input of the command.
* ``write_folder(out, what, write)`` writes the replacement beside the target (``new_folder``) and
  swaps it in with two renames (``swap_in``); ``recover(out)``, run under the lock first, finishes
  a swap that a kill interrupted. So a kill leaves either the old folder or the new one complete,
  never a mix.
* ``write_text(path, text)`` writes a file the same way: a temporary file, then a rename.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dsol_lite.errors import ConfigError, StorageError

_HELD: dict[str, tuple[object, int]] = {}  # lock file -> (open file, depth): re-entrant within a process


class BusyError(ConfigError):
    """Another process is writing the same folder."""


def _lock_file(folder: Path) -> Path:
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.dsol-lock"  # beside the folder: it survives the folder being swapped


def _try_lock(handle) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(handle) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _acquire(path: Path, folder: Path, what: str):
    """The open, locked lock file ``path``. A lock file is removed on release, so one whose name now
    points to another file (removed and made again meanwhile) is not the lock: try again."""
    while True:
        handle = open(path, "a+")
        if not _try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise BusyError(f"{folder}: {what} is being written by {holder}; wait until it finishes, or use "
                            f"another folder")
        try:
            if os.name == "nt" or os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


@contextmanager
def exclusive(folder: str | Path, what: str) -> Iterator[None]:
    """Hold the write lock of ``folder`` (``what`` it holds, for the message) inside the block."""
    path = _lock_file(Path(folder))
    key = str(path)
    if key in _HELD:  # this process holds it already (e.g. a pipeline and the trainer it calls)
        handle, depth = _HELD[key]
        _HELD[key] = (handle, depth + 1)
        try:
            yield
        finally:
            _HELD[key] = (handle, _HELD[key][1] - 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _acquire(path, Path(folder), what)
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} (`{' '.join(sys.argv[:6])}`, "
                     f"since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
        handle.flush()
        _HELD[key] = (handle, 1)
        yield
    finally:
        _HELD.pop(key, None)
        if os.name != "nt":
            path.unlink(missing_ok=True)  # still locked: a process that opened it meanwhile sees it is stale
        _unlock(handle)
        handle.close()


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old file or
    the new one, never half of one. A failure (full disk, read-only folder) removes the temporary
    file and raises a ``StorageError`` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(path, f"cannot write this file ({err.strerror or err})") from None
    return path


def read_json_or_none(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def is_empty_folder(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def check_replaceable(out: str | Path, kind: str, made_by_package: Callable[[Path], bool],
                      inputs: tuple[str | Path, ...] = ()) -> None:
    """Refuse to replace ``out`` unless the package made it (``made_by_package``) or it is empty; and
    never the current folder, a parent of it, the file system's root or home folder, or a folder that
    holds or lies inside one of ``inputs``. ``kind`` names what the package would write there."""
    out = Path(out)
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"out={out}: is the current folder or holds it; the {kind} is never written over it. "
                          f"Choose a new folder, e.g. {out / kind.split()[-1]}")
    if target == Path(target.anchor) or target == Path.home().resolve():
        raise ConfigError(f"out={out}: is the root or home folder; choose a new folder for the {kind}")
    for source in inputs:
        source = Path(source).resolve()
        if target == source or target in source.parents or source in target.parents:
            raise ConfigError(f"out={out}: is, holds or lies inside the input {source}; write the {kind} to a "
                              f"folder of its own")
    if out.exists() and not (is_empty_folder(out) or (out.is_dir() and made_by_package(out))):
        raise ConfigError(f"out={out}: holds files that dsol_lite did not write (no {kind} of its own is "
                          f"there), so it is not replaced; nothing was deleted. Choose a new folder")


def new_folder(out: Path) -> Path:
    """A fresh folder beside ``out`` to write its replacement into (under ``exclusive(out)``, after
    ``recover(out)``)."""
    out = Path(os.path.abspath(out))
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def swap_in(new: Path, out: Path) -> None:
    """Put the finished folder ``new`` at ``out``; the folder it replaces (if any) is deleted after."""
    out = Path(os.path.abspath(out))
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)
    shutil.rmtree(old, ignore_errors=True)


def write_folder(out: str | Path, what: str, write: Callable[[Path], None],
                 done: Callable[[], bool] = lambda: False) -> bool:
    """Write the folder ``out`` whole or not at all: under its lock, finish what a killed writer left
    (``recover``), then, unless ``done()`` says it is already there, ``write`` a new folder beside it and
    swap it in. Returns whether it wrote. ``what`` names the folder's content for a busy lock's message."""
    out = Path(out)
    with exclusive(out, what):
        recover(out)
        if done():
            return False
        new = new_folder(out)
        try:
            write(new)
            swap_in(new, out)
        except BaseException:
            recover(out)
            raise
    return True


def recover(out: Path) -> None:
    """Under ``exclusive(out)``: finish what a killed writer left. A folder swapped out but not yet
    replaced goes back to ``out``; every other leftover of this folder's writers is removed."""
    out = Path(os.path.abspath(out))
    if not out.parent.is_dir():
        return
    ours = (f".{out.name}.tmp", f".{out.name}.replaced")
    leftovers = sorted(p for p in out.parent.glob(f".{out.name}.*-*")
                       if p.is_dir() and p.name.rsplit("-", 1)[0] in ours and p.name.rsplit("-", 1)[1].isdigit())
    for p in leftovers:
        if not out.exists() and p.name.startswith(f".{out.name}.replaced-"):
            os.replace(p, out)  # killed between the two renames of swap_in: the old folder is whole
        else:
            shutil.rmtree(p, ignore_errors=True)


__all__ = ["BusyError", "exclusive", "write_text", "check_replaceable", "write_folder", "new_folder", "swap_in",
           "recover", "is_empty_folder"]
