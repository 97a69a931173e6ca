"""Shared launcher plumbing: config flags (help strings from `Config`'s fields), one-line errors.

No math here: flags become a validated `jaxrnn.config.Config`, then one library call.
"""
import dataclasses
import logging
import shlex
import sys

from absl import app, flags

from jaxrnn import config as config_lib
from jaxrnn.errors import ConfigError, JaxrnnError, StorageError

# How the launchers introduce the command that continues after a `StorageError`, by its rerun.
_RERUN_LABELS = {"--resume": "resume with", "--overwrite": "start it over with",
                 "": "run it again with"}

def define_config_flags():
    """One absl flag per Config field, its help the field's ``metadata["help"]`` (defaults shown
    are the 'default' preset's)."""
    flags.DEFINE_string("preset", "default",
                        f"named defaults: {', '.join(config_lib.PRESETS)} (quick: under a minute)")
    defaults = config_lib.make_config("default")
    for field in dataclasses.fields(config_lib.Config):
        default, help_text = getattr(defaults, field.name), field.metadata["help"]
        if field.name == "split":
            flags.DEFINE_string(field.name, ",".join(str(part) for part in default), help_text)
        elif isinstance(default, bool):
            flags.DEFINE_bool(field.name, default, help_text)
        elif isinstance(default, int):
            flags.DEFINE_integer(field.name, default, help_text)
        elif isinstance(default, float):
            flags.DEFINE_float(field.name, default, help_text)
        else:
            flags.DEFINE_string(field.name, default, help_text)


def _parse_split(text):
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--split must be three comma-separated fractions, got {text!r}") \
            from None


def config_from_flags():
    """The preset, overridden by every flag the user set explicitly, validated."""
    values = flags.FLAGS
    overrides = {field.name: getattr(values, field.name)
                 for field in dataclasses.fields(config_lib.Config) if values[field.name].present}
    if "split" in overrides:
        overrides["split"] = _parse_split(overrides["split"])
    return config_lib.make_config(values.preset, **overrides)


def write_output(path, payload, flag):
    """Write ``payload`` (bytes) to ``path`` atomically (`jaxrnn.files.write_atomically`); an
    OS error is one ConfigError naming ``flag``, a full or failing disk a `StorageError`."""
    from jaxrnn import files
    try:
        files.write_atomically(path, payload)
    except StorageError:
        raise
    except OSError as error:
        raise ConfigError(f"could not write {flag}={path} ({error.strerror or error}); name a "
                          "writable file") from None


def enable_dtype(dtype):
    """float64 needs JAX's x64 mode, switched on for the whole process by the launcher."""
    if dtype == "float64":
        import jax
        jax.config.update("jax_enable_x64", True)


def parse_flags(argv, flag_values=flags.FLAGS):
    """absl ``flags_parser``: a flag that does not parse (a bad value, an unknown or misspelt name)
    is one ``error:`` line on stderr and exit status 2, like every other user mistake."""
    try:
        return flag_values(argv)
    except flags.Error as error:
        message = " ".join(str(error).split())
        print(f"error: {message}; see --helpshort for the flags", file=sys.stderr)
        sys.exit(2)


class _NoTpuProbe(logging.Filter):
    """Drops JAX's "Unable to initialize backend 'tpu'" line: on a machine without a TPU the probe
    failing is expected. Every other record of that logger still passes."""

    def filter(self, record):
        return not record.getMessage().startswith("Unable to initialize backend 'tpu'")


def run(main):
    """``app.run`` of a launcher's main with this module's error convention (`run_main`,
    `parse_flags`)."""
    logging.getLogger("jax._src.xla_bridge").addFilter(_NoTpuProbe())
    app.run(run_main(main), flags_parser=parse_flags)


def resume_command(argv=None, module=None, flag="--resume"):
    """The command line that continues this run: ``python -m <module> <its flags> --resume``
    (``--resume``/``--noresume`` as given are dropped first); ``module`` defaults to the one
    run as ``__main__``. ``flag``: what to add instead, e.g. ``--overwrite`` (whose given forms
    are dropped too) or ``""``: the command as it was given."""
    argv = sys.argv if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = module or (spec.name if spec is not None else None)
    head = ["python", "-m", module] if module else ["python", argv[0]]
    dropped = ("resume", "noresume") + (("overwrite", "nooverwrite") if flag == "--overwrite"
                                        else ())
    flags_given = [arg for arg in argv[1:] if not flag or arg.lstrip("-").split("=")[0]
                   not in dropped]
    return shlex.join(head + flags_given + ([flag] if flag else []))


def error_line(error):
    """The one line a launcher prints for a `JaxrnnError`: ``error: <message>``, and for a
    `StorageError` whose ``rerun`` is known the command that continues once there is room."""
    line = f"error: {error}"
    rerun = getattr(error, "rerun", None)
    if isinstance(error, StorageError) and rerun in _RERUN_LABELS:
        line += f", then {_RERUN_LABELS[rerun]}: {resume_command(flag=rerun)}"
    return line


def run_main(main):
    """Wrap an absl main: user errors (a busy folder and a full disk included) print one line to
    stderr (`error_line`) and exit with status 2; a run
    stopped by SIGINT/SIGTERM (`jaxrnn.interrupt.Interrupted`) prints what was saved and how to
    resume, and exits with 130/143."""
    from jaxrnn.interrupt import Interrupted

    def wrapped(argv):
        if len(argv) > 1:
            print(f"error: unexpected arguments {argv[1:]}; flags look like --name=value",
                  file=sys.stderr)
            sys.exit(2)
        try:
            return main(argv)
        except Interrupted as stop:
            print(f"interrupted: {stop}", file=sys.stderr)
            if stop.resumable:
                print(f"resume with: {resume_command()}", file=sys.stderr)
            sys.exit(stop.exit_code)
        except JaxrnnError as error:
            print(error_line(error), file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; the last checkpoint written is intact", file=sys.stderr)
            sys.exit(130)
    return wrapped
