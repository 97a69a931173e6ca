"""Process memory, environment facts and the JSON record written by every benchmark's --json."""
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata

import jax

import jaxrnn


# Environment variables that change how this process allocates memory (and so page faults).
ALLOCATOR_ENV = ("XLA_FLAGS", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_",
                 "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")


def peak_rss_bytes():
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_rss_high_water():
    """Reset the kernel's resident high-water mark (VmHWM) of this process; False if refused.
    (ru_maxrss cannot be reset, so a window's peak is read from VmHWM instead.)"""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_high_water_bytes():
    """VmHWM: peak resident set since the process started or since `reset_rss_high_water`."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def minor_page_faults():
    """Minor page faults of this process so far (getrusage ru_minflt). Each is the kernel mapping
    a fresh zeroed page on first touch; XLA:CPU maps every call's temporaries anew, so the count
    per call measures memory that call touched for the first time."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _git(*args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info():
    """Package versions, git commit and machine facts for the JSON record."""
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "jaxrnn": jaxrnn.__version__, "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": bool(_git("status", "--porcelain")), "nproc": os.cpu_count(),
            "jax_devices": [str(d) for d in jax.devices()], "loadavg": os.getloadavg(),
            **{name: os.environ.get(name) for name in ALLOCATOR_ENV}}
    for package in ("jax", "jaxlib", "optax", "numpy", "absl-py"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo
                           if line.startswith("model name"))
        cpu_flags = next(line.split(":", 1)[1].split() for line in cpuinfo
                         if line.startswith("flags"))
        info["avx512f"], info["avx2"] = "avx512f" in cpu_flags, "avx2" in cpu_flags
        with open("/proc/meminfo") as f:
            info["mem_total"] = f.readline().split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return info


def _relative(path):
    """``path`` relative to the working folder (a record names no folder of this machine)."""
    return os.path.relpath(path) if os.path.isabs(path) else path


def write_json(path, *, benchmark, config, results, environment=None):
    """Write one benchmark record: name, date, command line, config, environment, results."""
    record = {"benchmark": benchmark,
              "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "argv": [_relative(sys.argv[0])] + sys.argv[1:], "config": config,
              "environment": environment or environment_info(), "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=1, default=str)
    print(f"wrote {path}")
