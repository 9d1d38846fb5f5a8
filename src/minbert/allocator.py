"""The memory allocator the `minbert` command runs under: jemalloc where the system has it, glibc's malloc otherwise.

Under glibc's malloc, training's batches of ever different sizes fragment the heap and resident memory grows for as
long as a run lasts unless the heap is trimmed; `trim_every: 1` (a malloc_trim after every step) keeps it flat, but
hands back pages that the next step faults in again, which costs a CPU run a large part of its step time
(benchmarks/RESULTS.md, "allocator"). jemalloc's size classes reuse freed memory without that growth and give back
what stays unused on their own schedule, so a run under it needs no trims and is faster with less resident memory.
The allocator changes no result: the same run reaches the same metrics under either.

A library cannot swap the allocator of the process it runs in, so `minbert`, started as a program on Linux,
re-executes itself once, before it imports torch, with jemalloc preloaded (LD_PRELOAD) when the system has the
library (Debian and Ubuntu: `apt install libjemalloc2`). The re-executed process has the same PID, arguments and
environment (and passes LD_PRELOAD on to any process it starts). Under jemalloc (or another malloc replacement a
user preloads) `runs.release_memory` does nothing: glibc's heap then holds nothing to hand back. MINBERT_ALLOCATOR
chooses: `auto` (the default: jemalloc if found), `jemalloc` (the same, with a warning when it is not found),
`glibc` (no re-execution).
"""

from __future__ import annotations

import ctypes.util
import functools
import logging
import os
import sys

from minbert.errors import MinbertError

log = logging.getLogger(__name__)

VARIABLE = "MINBERT_ALLOCATOR"
CHOICES = ("auto", "jemalloc", "glibc")
_TRIED = "MINBERT_ALLOCATOR_PRELOADED"  # set in the re-executed process: never re-execute twice


def choice() -> str:
    value = os.environ.get(VARIABLE, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise MinbertError(f"{VARIABLE}={value!r}: unknown allocator; use one of {', '.join(CHOICES)}")
    return value


ALTERNATIVES = ("jemalloc", "tcmalloc", "mimalloc")  # malloc replacements a process may have preloaded


@functools.cache
def loaded() -> str | None:
    """The malloc replacement loaded into this process (preloaded, or linked in), or None: the C library's."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:  # no /proc (not Linux)
        return None
    return next((a for a in ALTERNATIVES if f"/lib{a}" in maps), None)


def name() -> str:
    """The allocator of this process, for logs and a run's summary."""
    return loaded() or ("glibc" if sys.platform.startswith("linux") else "system")


def describe() -> str:
    """The allocator for a run's log, with what would make it jemalloc where it is not."""
    if loaded() or choice() == "glibc" or not sys.platform.startswith("linux"):
        return name()
    if ctypes.util.find_library("jemalloc"):  # installed, but this process did not start as the `minbert` command
        return "glibc's malloc (jemalloc is installed: the `minbert` command runs under it, LD_PRELOAD gives it Python)"
    return "glibc's malloc (no jemalloc installed; with it, e.g. `apt install libjemalloc2`, training runs faster)"


def preload_environment(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute under jemalloc with, or None when this process should stay as it is: the
    choice is glibc, it is not Linux, a malloc replacement is already in or about to be preloaded, this is the
    re-executed process, or no jemalloc is installed."""
    environ = dict(os.environ if environ is None else environ)
    wanted = choice()
    if wanted == "glibc" or not sys.platform.startswith("linux") or loaded() or environ.get(_TRIED):
        return None
    if "malloc" in environ.get("LD_PRELOAD", ""):  # an allocator of the user's own is to be preloaded (tcmalloc, ...)
        return None
    lib = ctypes.util.find_library("jemalloc")  # e.g. "libjemalloc.so.2", which the dynamic loader finds by name
    if lib is None:
        if wanted == "jemalloc":
            log.warning("%s=jemalloc, but no jemalloc library is installed; running with glibc's malloc", VARIABLE)
        return None
    environ["LD_PRELOAD"] = " ".join(p for p in (lib, environ.get("LD_PRELOAD", "")) if p)
    environ[_TRIED] = "1"
    return environ


def reexecute() -> None:
    """Replace this process by the same command under jemalloc, where `preload_environment` says so; returns only
    when it does not (or when the system refuses the exec, which is then logged)."""
    environ = preload_environment()
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError as e:
        log.warning("could not re-execute under jemalloc (%s); running with glibc's malloc", e)
