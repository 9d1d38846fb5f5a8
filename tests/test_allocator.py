"""minbert/allocator.py: that the `minbert` command runs as it was started unless MINBERT_ALLOCATOR=jemalloc asks
for a re-execution under jemalloc, which never happens twice or over the user's own preload; that its log names the
command that would use jemalloc; that the heap trims stop under jemalloc; and that a run records its allocator."""

import ctypes.util
import json
import os
import subprocess
import sys

import pytest

from minbert import allocator, runs
from minbert.errors import MinbertError

FOUND = "libjemalloc.so.2"


@pytest.fixture
def linux_without_jemalloc(monkeypatch):
    """A Linux process not yet under jemalloc, with no choice made, where the library is installed."""
    for key in (allocator.VARIABLE, allocator._TRIED):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(allocator, "loaded", lambda: None)
    monkeypatch.setattr(allocator, "_command", None)
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: FOUND if name == "jemalloc" else None)
    return monkeypatch


@pytest.fixture
def started_as(linux_without_jemalloc):
    """`minbert train cfg.yaml 'out=my run'` started as the console script; os.execve recorded, not run."""
    mp, execs = linux_without_jemalloc, []
    mp.setattr(allocator.sys, "argv", ["/venv/bin/minbert", "train", "cfg.yaml", "out=my run"])
    mp.setattr(allocator.sys, "orig_argv", ["/usr/bin/python3", "/venv/bin/minbert", "train", "cfg.yaml", "out=my run"])
    mp.setattr(allocator.os, "execve", lambda *a: execs.append(a))
    return execs


def test_by_default_the_command_runs_as_it_was_started(started_as):
    assert allocator.preload_environment({}) is None
    allocator.reexecute()
    assert started_as == []


def test_by_default_the_log_names_the_command_that_would_use_jemalloc(started_as):
    allocator.reexecute()
    assert allocator.describe() == (
        "glibc's malloc (jemalloc is installed and trains faster: "
        "`MINBERT_ALLOCATOR=jemalloc minbert train cfg.yaml 'out=my run'`)"
    )


def test_the_command_is_named_as_typed_under_python_m():
    argv = ["/src/minbert/__main__.py", "train", "a b.yaml"]
    assert allocator.command_line(argv, ["python3", "-X", "dev", "-m", "minbert", "train", "a b.yaml"]) == (
        "python3 -X dev -m minbert train 'a b.yaml'"
    )


def test_jemalloc_asked_for_re_executes_the_same_command_under_it(started_as, monkeypatch):
    monkeypatch.setenv(allocator.VARIABLE, "jemalloc")
    monkeypatch.setenv("LD_PRELOAD", "libmine.so")
    allocator.reexecute()
    [(executable, argv, environ)] = started_as
    assert executable == sys.executable and argv == allocator.sys.orig_argv
    assert environ["LD_PRELOAD"] == f"{FOUND} libmine.so" and environ[allocator._TRIED] == "1"
    assert environ[allocator.VARIABLE] == "jemalloc"


def test_preloads_jemalloc_in_front_of_what_was_preloaded(linux_without_jemalloc):
    linux_without_jemalloc.setenv(allocator.VARIABLE, "jemalloc")
    env = allocator.preload_environment({"LD_PRELOAD": "libmine.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{FOUND} libmine.so"
    assert env[allocator._TRIED] == "1" and env["PATH"] == "/bin"
    assert allocator.preload_environment({})["LD_PRELOAD"] == FOUND


@pytest.mark.parametrize(
    "case",
    ["not asked for", "glibc chosen", "already preloaded", "re-executed once", "another allocator", "macOS"],
)
def test_stays_as_it_is(linux_without_jemalloc, case):
    mp, environ = linux_without_jemalloc, {}
    mp.setenv(allocator.VARIABLE, "jemalloc")
    if case == "not asked for":
        mp.delenv(allocator.VARIABLE)
    elif case == "glibc chosen":
        mp.setenv(allocator.VARIABLE, "glibc")
    elif case == "already preloaded":
        mp.setattr(allocator, "loaded", lambda: "jemalloc")
    elif case == "re-executed once":  # the preload did not take (ld.so ignores a library it cannot load): no loop
        environ = {allocator._TRIED: "1"}
    elif case == "another allocator":
        environ = {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}
    else:
        mp.setattr(allocator.sys, "platform", "darwin")
    assert allocator.preload_environment(environ) is None


def test_jemalloc_asked_for_but_missing_warns(linux_without_jemalloc, caplog):
    linux_without_jemalloc.setenv(allocator.VARIABLE, "jemalloc")
    linux_without_jemalloc.setattr(ctypes.util, "find_library", lambda name: None)
    assert allocator.preload_environment({}) is None
    assert "no jemalloc library is installed" in caplog.text


def test_an_unknown_choice_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, allocator.VARIABLE: "tcmalloc"}
    p = subprocess.run(
        [sys.executable, "-m", "minbert", "train", "configs/quickstart.yaml", f"out={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1] == "minbert: error: MINBERT_ALLOCATOR='tcmalloc': unknown allocator; use one of glibc, jemalloc"
    assert "Traceback" not in p.stderr and not (tmp_path / "run").exists()


def test_the_choice_is_read_case_blind_and_checked(monkeypatch):
    monkeypatch.delenv(allocator.VARIABLE, raising=False)
    assert allocator.choice() == "glibc"
    monkeypatch.setenv(allocator.VARIABLE, " JEMALLOC ")
    assert allocator.choice() == "jemalloc"
    for unknown in ("tcmalloc", "auto"):  # `auto` (jemalloc where found) was the default before jemalloc was opt-in
        monkeypatch.setenv(allocator.VARIABLE, unknown)
        with pytest.raises(MinbertError, match="use one of glibc, jemalloc"):
            allocator.choice()


def test_no_heap_trim_under_jemalloc(monkeypatch):
    class Libc:
        trims = 0

        def malloc_trim(self, pad):
            Libc.trims += 1

    monkeypatch.setattr(runs, "_glibc", lambda: Libc())
    monkeypatch.setattr(allocator, "loaded", lambda: "jemalloc")
    runs.release_memory()
    assert Libc.trims == 0
    monkeypatch.setattr(allocator, "loaded", lambda: None)
    runs.release_memory()
    assert Libc.trims == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the re-execution is for Linux")
def test_a_run_started_as_a_program_records_the_allocator_it_ran_under(tiny_run):
    """The tiny quickstart run of the suite went through `python -m minbert train`: under jemalloc where
    MINBERT_ALLOCATOR=jemalloc asks for it and the system has it, glibc's malloc otherwise - its heap trimmed, and
    the log naming the command that would use jemalloc where the system has it."""
    run, out = tiny_run
    summary = json.loads((run / "summary.json").read_text())
    installed = ctypes.util.find_library("jemalloc")
    wanted = os.environ.get(allocator.VARIABLE, "").strip().lower() == "jemalloc" and installed
    assert summary["allocator"] == ("jemalloc" if wanted else "glibc")
    assert f"memory allocator: {'jemalloc' if wanted else 'glibc'}" in out
    if not wanted:
        assert "the heap trimmed every" in out
    if installed and not os.environ.get(allocator.VARIABLE, "").strip():
        assert f"`MINBERT_ALLOCATOR=jemalloc {sys.executable} -m minbert train " in out


def test_the_log_names_what_is_loaded_and_what_would_help(linux_without_jemalloc):
    mp = linux_without_jemalloc
    assert allocator.describe() == (  # an API caller's own process: the variable is for the command
        f"glibc's malloc (jemalloc is installed: `LD_PRELOAD={FOUND} python ...` runs Python under it)"
    )
    mp.setenv(allocator.VARIABLE, "glibc")  # the user's own choice: nothing to suggest
    assert allocator.describe() == "glibc"
    mp.delenv(allocator.VARIABLE)
    mp.setattr(ctypes.util, "find_library", lambda name: None)
    assert "apt install libjemalloc2" in allocator.describe()
    mp.setattr(allocator, "loaded", lambda: "tcmalloc")  # a user's own preloaded allocator
    assert allocator.name() == allocator.describe() == "tcmalloc"
