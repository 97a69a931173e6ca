"""Writing files so that a reader never sees half of one.

`write_atomically` writes the whole payload to a temporary file in the destination's folder,
fsyncs it, gives it the mode a new file would get, then renames it over the destination (an atomic
replace on POSIX): an error or a crash at any instant leaves either the old file or the new one.
(`jaxrnn.checkpoint` commits its two files with the same steps, in a fixed order.)
"""
import os
import pathlib
import tempfile


def _new_file_mode():
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(path: os.PathLike, payload: bytes) -> pathlib.Path:
    """Write ``payload`` to ``path`` via a same-folder temporary file and a rename; creates the
    folder if needed. Raises OSError (nothing is left behind) when the folder is not writable."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temp, _new_file_mode())   # mkstemp's files are private (0600)
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return path
