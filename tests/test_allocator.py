"""minbert/allocator.py: when the `minbert` command re-executes itself under jemalloc, that it never does so twice or
against the user's choice, that the heap trims stop under jemalloc, and that a run records its allocator."""

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
    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: FOUND if name == "jemalloc" else None)
    return monkeypatch


def test_preloads_jemalloc_in_front_of_what_was_preloaded(linux_without_jemalloc):
    env = allocator.preload_environment({"LD_PRELOAD": "libmine.so", "PATH": "/bin"})
    assert env["LD_PRELOAD"] == f"{FOUND} libmine.so"
    assert env[allocator._TRIED] == "1" and env["PATH"] == "/bin"
    assert allocator.preload_environment({})["LD_PRELOAD"] == FOUND


@pytest.mark.parametrize(
    "case", ["glibc chosen", "already preloaded", "re-executed once", "another allocator", "not installed", "macOS"]
)
def test_stays_as_it_is(linux_without_jemalloc, case):
    mp, environ = linux_without_jemalloc, {}
    if case == "glibc chosen":
        mp.setenv(allocator.VARIABLE, "glibc")
    elif case == "already preloaded":
        mp.setattr(allocator, "loaded", lambda: "jemalloc")
    elif case == "re-executed once":  # the preload did not take (ld.so ignores a library it cannot load): no loop
        environ = {allocator._TRIED: "1"}
    elif case == "another allocator":
        environ = {"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}
    elif case == "not installed":
        mp.setattr(ctypes.util, "find_library", lambda name: None)
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
    assert lines[-1].startswith("minbert: error: MINBERT_ALLOCATOR='tcmalloc': unknown allocator")
    assert "Traceback" not in p.stderr and not (tmp_path / "run").exists()


def test_the_choice_is_read_case_blind_and_checked(monkeypatch):
    monkeypatch.setenv(allocator.VARIABLE, " GLIBC ")
    assert allocator.choice() == "glibc"
    monkeypatch.setenv(allocator.VARIABLE, "tcmalloc")
    with pytest.raises(MinbertError, match="auto, jemalloc, glibc"):
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
    """The tiny quickstart run of the suite went through `python -m minbert train`: under jemalloc where the system
    has it (and MINBERT_ALLOCATOR does not say glibc), glibc's malloc otherwise."""
    run, out = tiny_run
    summary = json.loads((run / "summary.json").read_text())
    wanted = os.environ.get(allocator.VARIABLE, "auto") != "glibc" and ctypes.util.find_library("jemalloc")
    assert summary["allocator"] == ("jemalloc" if wanted else "glibc")
    assert f"memory allocator: {'jemalloc' if wanted else 'glibc'}" in out


def test_the_log_names_what_is_loaded_and_what_would_help(linux_without_jemalloc):
    mp = linux_without_jemalloc
    assert allocator.describe().startswith("glibc's malloc (jemalloc is installed")  # an API caller's own process
    mp.setattr(ctypes.util, "find_library", lambda name: None)
    assert "apt install libjemalloc2" in allocator.describe()
    mp.setattr(allocator, "loaded", lambda: "tcmalloc")  # a user's own preloaded allocator
    assert allocator.name() == allocator.describe() == "tcmalloc"
