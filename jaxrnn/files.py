"""Writing files so that a reader never sees half of one.

`write_atomically` writes the whole payload to a new temporary file in the destination's folder
(created with the mode a new file gets, i.e. 0666 less the umask), fsyncs it, renames it over the
destination (an atomic replace on POSIX) and fsyncs the folder: an error or a crash at any instant
leaves either the old file or the new one. (`jaxrnn.checkpoint` commits its two files with its
own sequence of the same steps, with `fsync_dir`: both temporaries first, the JSON record
renamed last.)
"""
import os
import pathlib
import secrets


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
    folder if needed. Raises OSError (and leaves nothing behind) when it cannot."""
    path = pathlib.Path(path)
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
