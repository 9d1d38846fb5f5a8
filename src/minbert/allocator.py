"""The memory allocator the `minbert` command runs under: glibc's malloc, or jemalloc when asked for
(`MINBERT_ALLOCATOR=jemalloc`).

Under glibc's malloc, training's batches of ever different sizes fragment the heap and resident memory grows for as
long as a run lasts unless the heap is trimmed; `trim_every: 1` (a malloc_trim after every step) keeps it flat, but
hands back pages that the next step faults in again, which costs a CPU run a large part of its step time
(benchmarks/RESULTS.md, "allocator"). jemalloc's size classes reuse freed memory without that growth and give back
what stays unused on their own schedule, so a run under it needs no trims and is faster with less resident memory.
The allocator changes no result: the same run reaches the same metrics under either.

A library cannot swap the allocator of the process it runs in, and a command that re-executes itself surprises a
debugger, a profiler or a wrapper, so `minbert` runs as it was started unless MINBERT_ALLOCATOR says otherwise:
`glibc` (the default) runs as it is and trims the heap (`trim_every`); its log names the command that would use
jemalloc where the system has the library (Debian and Ubuntu: `apt install libjemalloc2`). `jemalloc` makes
`minbert`, started as a program on Linux, re-execute itself once, before it imports torch, with jemalloc preloaded
(LD_PRELOAD), with a warning when the library is not found. The re-executed process has the same PID, arguments and
environment, and passes LD_PRELOAD on to any process it starts. Under jemalloc (or another malloc replacement a user
preloads) `runs.release_memory` does nothing: glibc's heap then holds nothing to hand back.
"""

from __future__ import annotations

import ctypes.util
import functools
import logging
import os
import shlex
import sys
from pathlib import Path

from minbert.errors import MinbertError

log = logging.getLogger(__name__)

VARIABLE = "MINBERT_ALLOCATOR"
CHOICES = ("glibc", "jemalloc")  # the first is the default
_TRIED = "MINBERT_ALLOCATOR_PRELOADED"  # set in the re-executed process: never re-execute twice
_command: str | None = None  # the `minbert` command line this process runs, once `reexecute` has seen it


def choice() -> str:
    value = os.environ.get(VARIABLE, "").strip().lower() or CHOICES[0]
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


def command_line(argv: list[str] | None = None, orig_argv: list[str] | None = None) -> str:
    """This process's command line as its user typed it: `minbert train ...`, or `python -m minbert train ...`."""
    argv = sys.argv if argv is None else argv
    orig_argv = sys.orig_argv if orig_argv is None else orig_argv
    if Path(argv[0]).name == "minbert" or len(orig_argv) < len(argv):  # the console script
        head = ["minbert"]
    else:  # the interpreter and its options, up to and with `-m minbert`
        head = orig_argv[: len(orig_argv) - len(argv) + 1]
    return shlex.join(head + argv[1:])


def describe() -> str:
    """The allocator for a run's log, with what would make it jemalloc where it is not."""
    if loaded() or not sys.platform.startswith("linux") or os.environ.get(VARIABLE, "").strip().lower() == "glibc":
        return name()
    lib = ctypes.util.find_library("jemalloc")
    if lib is None:
        return "glibc's malloc (no jemalloc installed; with it, e.g. `apt install libjemalloc2`, training runs faster)"
    if _command is not None:
        return f"glibc's malloc (jemalloc is installed and trains faster: `{VARIABLE}=jemalloc {_command}`)"
    return f"glibc's malloc (jemalloc is installed: `LD_PRELOAD={lib} python ...` runs Python under it)"


def preload_environment(environ: dict[str, str] | None = None) -> dict[str, str] | None:
    """The environment to re-execute under jemalloc with, or None when this process should stay as it is: jemalloc
    was not asked for, it is not Linux, a malloc replacement is already in or about to be preloaded, this is the
    re-executed process, or no jemalloc is installed."""
    environ = dict(os.environ if environ is None else environ)
    if choice() != "jemalloc" or not sys.platform.startswith("linux") or loaded() or environ.get(_TRIED):
        return None
    if "malloc" in environ.get("LD_PRELOAD", ""):  # an allocator of the user's own is to be preloaded (tcmalloc, ...)
        return None
    lib = ctypes.util.find_library("jemalloc")  # e.g. "libjemalloc.so.2", which the dynamic loader finds by name
    if lib is None:
        log.warning("%s=jemalloc, but no jemalloc library is installed; running with glibc's malloc", VARIABLE)
        return None
    environ["LD_PRELOAD"] = " ".join(p for p in (lib, environ.get("LD_PRELOAD", "")) if p)
    environ[_TRIED] = "1"
    return environ


def reexecute() -> None:
    """At the start of the `minbert` program: replace this process by the same command under jemalloc where
    MINBERT_ALLOCATOR=jemalloc asks for it (`preload_environment`); otherwise note the command line for the log
    (`describe`) and return. Also returns when the system refuses the exec, which is then logged."""
    global _command
    _command = command_line()
    environ = preload_environment()
    if environ is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, sys.orig_argv, environ)
    except OSError as e:
        log.warning("could not re-execute under jemalloc (%s); running with glibc's malloc", e)
