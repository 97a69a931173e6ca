"""Writing files so that a reader never sees half of one, one writer per folder, and the errors a
full or failing disk raises.

`write_atomically` writes the whole payload to a new temporary file in the destination's folder
(created with the mode a new file gets, i.e. 0666 less the umask), fsyncs it, renames it over the
destination (an atomic replace on POSIX) and fsyncs the folder: an error or a crash at any instant
leaves either the old file or the new one. (`jaxrnn.checkpoint` commits its two files with its
own sequence of the same steps, with `fsync_dir`: both temporaries first, the JSON record
renamed last.) `append_line` adds one line to a log whole or not at all.

`folder_lock` is the one writer per folder: an exclusive ``flock`` on ``<folder>/.jaxrnn.lock``,
held for a block, which the operating system releases when the process ends however it ends
(exit, crash, SIGKILL), so a lock is never left behind. The holder writes its process id, host
and command line into the file; a second process is refused with a `FolderBusyError` naming them.
The file itself stays (empty when no one holds it): its presence means nothing.

`storage_errors` turns the errors of a full disk, an exceeded quota or a failing device (ENOSPC,
EDQUOT, EIO) into a one-line `StorageError` naming what was being written, where, the bytes it
needed and the bytes free there.
"""
import contextlib
import errno
import os
import pathlib
import secrets
import shutil
import socket
import sys

try:
    import fcntl
except ImportError:            # not a POSIX system: folders are not locked (README, "Locks")
    fcntl = None

from jaxrnn.errors import ConfigError, FolderBusyError, StorageError

LOCK_FILE = ".jaxrnn.lock"
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})
_HELD = {}  # real path of a folder this process holds the lock of -> nesting depth


def fsync_dir(directory: os.PathLike) -> None:
    """Make renames in ``directory`` durable where the platform can open a folder."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_atomically(path: os.PathLike, payload: bytes) -> pathlib.Path:
    """Write ``payload`` to ``path`` via a same-folder temporary file and a rename; creates the
    folder if needed. Raises OSError (and leaves nothing behind) when it cannot: a
    `StorageError` (an OSError too) when the disk is full or failing."""
    path = pathlib.Path(path)
    with storage_errors(f"writing {path}", len(payload), path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.parent / f".tmp-{secrets.token_hex(6)}"
        handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, path)
        finally:
            if temp.exists():
                temp.unlink()
        fsync_dir(path.parent)
    return path


def append_line(path: os.PathLike, line: str) -> None:
    """Append ``line`` (text ending in a newline) to ``path`` whole or not at all: when a write
    fails the file is cut back to its length before, so a log never ends in half a line. Raises
    the OSError."""
    payload = memoryview(line.encode("utf-8"))
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(handle).st_size
        try:
            while payload:
                payload = payload[os.write(handle, payload):]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(handle, size)
            raise
    finally:
        os.close(handle)


# ----------------------------------------------------------------------------------------------
# A full disk, a quota, a failing device.


def free_bytes(path: os.PathLike):
    """Bytes an unprivileged user may still write on the file system holding ``path`` (or its
    nearest existing parent); None when that cannot be asked. A quota may allow less."""
    path = pathlib.Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def format_bytes(count) -> str:
    """``1,234,567 bytes (1.2 MiB)``, in the largest binary unit that keeps the number >= 1;
    ``an unknown number of bytes`` for None."""
    if count is None:
        return "an unknown number of bytes"
    scaled, unit = float(count), "bytes"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, bigger
    return f"{count:,} bytes" + (f" ({scaled:.1f} {unit})" if unit != "bytes" else "")


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` is a full disk, an exceeded quota or an I/O error of the device."""
    return isinstance(error, OSError) and error.errno in STORAGE_ERRNOS


def storage_error(error: OSError, what: str, needed: int, folder: os.PathLike,
                  note: str = "") -> StorageError:
    """The one-line `StorageError` for ``error`` while ``what`` (e.g. ``"writing PATH"``) in
    ``folder``: the reason, the bytes needed and free, ``note`` (e.g. what is intact), and the
    remedy. Example: ``writing runs/a/metrics.jsonl failed (No space left on device, ENOSPC): it
    needs 180 bytes, 0 bytes are free in runs/a; free space there``."""
    reason = error.strerror or os.strerror(error.errno)
    code = errno.errorcode.get(error.errno, str(error.errno))
    message = (f"{what} failed ({reason}, {code}): it needs {format_bytes(needed)}, "
               f"{format_bytes(free_bytes(folder))} are free in {folder}")
    if error.errno == errno.EDQUOT:
        message += " (your quota may allow less)"
    if error.errno == errno.EIO:
        message += " (an I/O error: check the device too)"
    failure = StorageError(message + (f"; {note}" if note else "") + "; free space there")
    failure.errno = error.errno
    return failure


@contextlib.contextmanager
def storage_errors(what: str, needed: int, folder: os.PathLike, note=""):
    """Within the block, an OSError of `STORAGE_ERRNOS` becomes `storage_error` (``note``: a
    string, or a function giving it, called only on failure); other errors pass unchanged."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        if not is_storage_error(error):
            raise
        raise storage_error(error, what, needed, folder,
                            note() if callable(note) else note) from None


# ----------------------------------------------------------------------------------------------
# One writer per folder.


def _command_line() -> str:
    """This process's command line on one line (``python -m experiments.train --flags``)."""
    try:
        with open("/proc/self/cmdline", "rb") as handle:
            argv = [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        argv = [sys.executable, *sys.argv]
    if argv:
        argv[0] = os.path.basename(argv[0])
    return " ".join(" ".join(argv).split())[:1000]


def holder_text() -> str:
    """What a lock holder writes into the lock file: ``pid N on host H: COMMAND``."""
    return f"pid {os.getpid()} on host {socket.gethostname()}: {_command_line()}"


def _describe(folder, flag):
    return f"{flag}={folder}" if flag else f"folder {folder}"


def _open_lock_file(folder: pathlib.Path, flag) -> int:
    """Create ``folder`` if needed and open its lock file; ConfigError when it is a file or
    cannot be written."""
    what = _describe(folder, flag)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{what} is a file, not a folder; pass a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0),
                       0o666)
    except OSError as error:
        raise ConfigError(f"{what} cannot be written ({error.strerror or error}); pass a folder "
                          "you can write to") from None


def _read_holder(handle: int) -> str:
    try:
        text = os.pread(handle, 2000, 0).decode("utf-8", errors="replace")
    except OSError:
        return ""
    return " ".join(text.split())


def _take(handle: int, folder: pathlib.Path, flag) -> bool:
    """Try the exclusive lock without waiting: True when taken (or when the file system has no
    locks, after a warning), False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as error:                    # ENOLCK, EOPNOTSUPP, ...: no locks here
        print(f"warning: {_describe(folder, flag)} cannot be locked "
              f"({error.strerror or error}): a second run writing into it at the same time "
              "would not be detected", file=sys.stderr)
        return True


@contextlib.contextmanager
def folder_lock(folder: os.PathLike, flag: str = None):
    """Hold the exclusive lock of ``folder`` (created if needed) for the block; yields its path.

    Raises `FolderBusyError` at once when another process holds it (the message names the
    folder, the holder's process id, host and command, and what to do); `ConfigError` when the
    folder is a file or cannot be written. ``flag`` names the folder in messages as the launcher
    flag that set it (``"--output_dir"``). Re-entrant within a process: a block nested in one on
    the same folder holds nothing more. Released when the block ends, or by the operating system
    when the process dies.
    """
    folder = pathlib.Path(folder)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    handle = _open_lock_file(folder, flag)
    try:
        if not _take(handle, folder, flag):
            holder = _read_holder(handle) or "not identified yet"
            remedy = f"pass another {flag}" if flag else "use another folder"
            raise FolderBusyError(f"{_describe(folder, flag)} is being written by another "
                                  f"process ({holder}); wait for it to end or stop it, or "
                                  f"{remedy}")
        with contextlib.suppress(OSError):
            os.ftruncate(handle, 0)
            os.pwrite(handle, (holder_text() + "\n").encode("utf-8"), 0)
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
            with contextlib.suppress(OSError):
                os.ftruncate(handle, 0)
    finally:
        os.close(handle)                      # releases the lock


def locked_by_anyone(folder: os.PathLike) -> bool:
    """Whether some open lock of ``folder`` is held now, this process's own included (a new
    open file, as another process would see it). For tests and diagnostics."""
    try:
        handle = os.open(pathlib.Path(folder) / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(handle)
