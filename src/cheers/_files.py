"""Writing a folder of files so that a crash never leaves a half-written file under a final name.

Files are written into a hidden staging folder inside the destination (same file system, so the
final ``os.replace`` is atomic), then moved into place one by one. A process killed while writing
leaves the previous files untouched and at most a ``.saving-*`` folder behind, which the next
save removes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cheers.errors import CheckpointError, CheersError

STAGING_PREFIX = ".saving-"


def folder_problem(folder: Path) -> str | None:
    """Create ``folder`` (and parents); ``None`` when it is a writable folder, else what is in
    the way, worded to follow "cannot use ``folder``: ". The two wrappers below raise it as the
    error of their callers (the API's, the command line's)."""
    if folder.exists() and not folder.is_dir():
        return "it is an existing file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        return f"a file is in the way: a part of the path is a file ({exc})"
    except OSError as exc:
        return f"it cannot be created ({exc.strerror or exc})"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "it is not writable (permission denied)"
    return None


def ensure_folder(folder: Path, what: str = "model folder") -> Path:
    """Create ``folder`` (and parents), or raise :class:`CheckpointError` saying why not."""
    problem = folder_problem(folder)
    if problem is not None:
        raise CheckpointError(
            f"Cannot save the {what} to {str(folder)!r}: {problem}. Pass a writable folder path "
            "(it is created if missing), or remove what is in the way."
        )
    return folder


def output_folder(folder: Path, flag: str) -> Path:
    """Create the output ``folder`` a command-line flag names (``flag``, e.g. ``"--out runs"``),
    or raise :class:`CheersError` naming the flag, the problem and the fix."""
    problem = folder_problem(folder)
    if problem is not None:
        raise CheersError(f"{flag}: cannot use {folder}: {problem}; pass another, writable path")
    return folder


@contextlib.contextmanager
def staged_files(folder: Path, what: str = "model folder") -> Iterator[tuple[Path, list[str]]]:
    """Yield ``(staging, names)``: write files into ``staging`` and append their names.

    On normal exit every named file is moved into ``folder`` with ``os.replace``; on an
    exception nothing is moved. The staging folder is removed either way, as are the leftovers
    of earlier saves that were killed.
    """
    ensure_folder(folder, what)
    for old in folder.glob(STAGING_PREFIX + "*"):
        # A leftover of a killed save (ours are removed on the way out); a concurrent save into
        # the same folder is not supported anyway.
        shutil.rmtree(old, ignore_errors=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise CheckpointError(
            f"Cannot write into the {what} {str(folder)!r} ({exc}). Choose a writable location."
        ) from exc
    names: list[str] = []
    try:
        yield staging, names
        mode = _new_file_mode(staging)
        for name in names:
            # safetensors creates its files owner-only (0600); a saved model should be readable
            # like any other file written here (a server running as another user loads it).
            os.chmod(staging / name, mode)
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _new_file_mode(folder: Path) -> int:
    """The permissions ``open(path, "w")`` gives a new file in ``folder`` (0666 less the umask,
    or what the folder's default ACL says), read from a probe file: ``os.umask`` can only be
    read by setting it, which would race with other threads creating files."""
    probe = folder / f".mode-{secrets.token_hex(4)}"
    os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        return stat.S_IMODE(probe.stat().st_mode)
    finally:
        probe.unlink()


def atomic_write(path: Path, write: Callable[[Any], None]) -> Path:
    """Call ``write(binary file)`` on a temporary sibling of ``path``, then move it in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise CheersError(f"cannot write {path} ({err.strerror or err})") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
