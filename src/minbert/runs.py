"""What every run shares: its directory, atomic file writes, the metrics log, device and precision, seeding."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from minbert import allocator
from minbert import torch_private as private
from minbert.errors import MinbertError
from minbert.files import atomic_write_text, check_writable, read_jsonl  # noqa: F401 (atomic_write_text: used from here)

log = logging.getLogger(__name__)


def new_run_dir(root: str | Path, name: str) -> Path:
    base = Path(root) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    path.mkdir(parents=True)
    return path


RUN_FILES = (
    "config.yaml",
    "metrics.jsonl",
    "summary.json",
    "last.json",
    "best.json",
    "checkpoints",
    "predictions",
    "plots",
    "teacher.safetensors",
)


def check_run_dir(run: Path, resume: bool, overwrite: bool) -> None:
    """Before any work: `run` can be written, and holds no run unless `--resume` continues it or `--overwrite`
    replaces it."""
    check_writable(run, "another out=")
    held = [f for f in RUN_FILES[:5] if (run / f).exists()]
    if held and not resume and not overwrite:
        if not (run / "last.json").exists() and not (run / "summary.json").exists():
            raise MinbertError(
                f"{run}: holds a run that stopped before its first checkpoint ({held[0]}); start it again with "
                f"--overwrite, or choose another out="
            )
        raise MinbertError(
            f"{run}: already holds a run ({held[0]}); continue it with `minbert train --resume {run}`, "
            f"replace it with --overwrite, or choose another out="
        )
    others = sorted(p.name for p in run.iterdir() if p.name != ".lock") if run.is_dir() and not held else []
    if others and not resume:  # a run's files among the user's: a later --overwrite would empty the folder whole
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise MinbertError(
            f"{run}: holds files that are not a run's ({others[0]}{more}); a run needs a folder of its own: choose a "
            "new or empty out="
        )
    here = Path.cwd().resolve()
    if held and overwrite and not resume and (run.resolve() == here or run.resolve() in here.parents):
        raise MinbertError(
            f"{run}: holds the current folder, which --overwrite would empty; choose another out= (or run from "
            "another folder)"
        )


def clear_run_dir(run: Path) -> None:
    """--overwrite: a folder that holds a run is emptied whole - all but the lock this process holds - so nothing of
    the earlier run (tensorboard/, adapters/, files an older version wrote) is left beside the new one; any other
    folder loses only the files a run writes."""
    # a run: its config and something training wrote (a lone config.yaml may be the user's own)
    held = (run / "config.yaml").is_file() and any((run / f).exists() for f in RUN_FILES[1:6])
    for target in list(run.iterdir()) if held else [run / f for f in RUN_FILES]:
        if target.name == ".lock":
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


class RunLock:
    """`run/.lock` holds the training process's pid and start time while it runs: a second live writer - a second
    `train`, or a `--resume` of a run that is still training - is refused; a lock left by a process that is gone
    (killed, a zombie not yet reaped, or its pid now another process's) is taken over."""

    def __init__(self, run: Path):
        self.path = run / ".lock"

    def __enter__(self) -> "RunLock":
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                try:
                    pid, _, started = self.path.read_text().strip().partition(" ")
                    pid = int(pid or 0)
                except (OSError, ValueError):
                    pid, started = 0, ""
                if pid and pid != os.getpid() and _alive(pid, started) and not _gone_soon(pid, started):
                    raise MinbertError(
                        f"{self.path.parent}: another process (pid {pid}) is training into this directory; "
                        f"wait for it, or stop it, or choose another out="
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {_start_time(os.getpid())}")
            return self
        raise MinbertError(
            f"{self.path}: could not take the run's lock file; remove it if no run is using this directory"
        )

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


LOCK_GRACE_S = 5.0  # how long a lock's live holder may take to go before a second writer is refused


def _gone_soon(pid: int, started: str) -> bool:
    """Whether the lock's holder exits within LOCK_GRACE_S: a process killed a moment ago (a resume right after a
    kill) is still being torn down, while a live writer stays."""
    deadline = time.time() + LOCK_GRACE_S
    while time.time() < deadline or (_dying(pid) and time.time() < deadline + 60):
        time.sleep(0.1)
        if not _alive(pid, started):
            return True
    return _dying(pid)  # killed, but still finishing a write (a busy disk): it runs no more of its own code


def _dying(pid: int) -> bool:
    """Whether a SIGKILL is pending for the process (it is being torn down, e.g. still in an fsync)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    pending = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(p & (1 << (signal.SIGKILL - 1)) for p in pending)


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name (state first); [] where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str:
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""  # field 22 of stat: start time in clock ticks since boot


def _alive(pid: int, started: str = "") -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    if not fields:
        return True  # no /proc to tell: assume it lives
    if fields[0] == "Z":  # a killed process not yet reaped by its parent holds nothing
        return False
    return not started or _start_time(pid) == started  # another process that got the pid later is not the writer


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically (temporary file + fsync + rename). safetensors reports a failed write
    (a full disk) as its own SafetensorError: that becomes the OSError it is, so the command's boundary names it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        try:
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        except SafetensorError as e:
            raise OSError(_errno_of(str(e)), f"could not write the file ({e})", str(path)) from None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _errno_of(message: str) -> int:
    """The errno a SafetensorError's message describes (it keeps only the text of the OS error)."""
    import errno

    for code, words in ((errno.ENOSPC, "No space left"), (errno.EDQUOT, "quota"), (errno.EACCES, "ermission")):
        if words in message:
            return code
    return errno.EIO


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a missing, truncated or damaged file is one MinbertError naming it."""
    if not path.is_file():
        raise MinbertError(f"{path}: no such checkpoint file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise MinbertError(
            f"{path}: not a readable safetensors file ({e}); it is truncated or damaged: restore or re-download it"
        ) from None


LOGGERS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # sink -> the package it needs


def check_loggers(loggers) -> None:
    """Before any work: each sink is known and its package installed."""
    import importlib.util

    for name in loggers:
        if name not in LOGGERS:
            raise MinbertError(f"loggers: {name!r} unknown; valid: {', '.join(LOGGERS)}")
        if importlib.util.find_spec(LOGGERS[name]) is None:
            raise MinbertError(f"loggers: {name} needs its package: pip install {LOGGERS[name]}")


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed as written so a crash loses nothing logged; and the same
    numbers to TensorBoard (RUN/tensorboard) or W&B when `loggers` names them. Each record's "step" is its x."""

    def __init__(self, path: Path, loggers=(), config: dict | None = None):
        self.path = path
        self.sinks = []
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.sinks.append(("tensorboard", SummaryWriter(str(path.parent / "tensorboard"))))
        if "wandb" in loggers:
            import wandb

            self.sinks.append(("wandb", wandb.init(dir=str(path.parent), name=path.parent.name, config=config)))

    def write(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items() if k not in ("step", "epoch") and isinstance(v, (int, float))}
        if "time" in record:  # an epoch's record: its training losses are the epoch's means, kept apart from the steps'
            scalars = {("epoch_mean/" + k if k.startswith("train/") else k): v for k, v in scalars.items()}
        for kind, sink in self.sinks:
            if kind == "tensorboard":
                for k, v in scalars.items():
                    sink.add_scalar(k, v, record.get("step", 0))
                sink.flush()
            else:
                sink.log(scalars, step=record.get("step", 0))

    def close(self) -> None:
        for kind, sink in self.sinks:
            sink.close() if kind == "tensorboard" else sink.finish()

    def truncate_after(self, step: int) -> None:
        """Drop records past `step`: a resumed run replays those steps and writes them again."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        for i, (kind, sink) in enumerate(self.sinks):
            if kind == "tensorboard":  # a writer with purge_step hides the old events from `step + 1` on in TensorBoard
                from torch.utils.tensorboard import SummaryWriter

                sink.close()
                self.sinks[i] = (kind, SummaryWriter(sink.log_dir, purge_step=step + 1))

    def read(self) -> list[dict]:
        """The records; a last line cut off by a kill during its write is dropped with a warning."""
        if not self.path.is_file():
            return []
        return read_jsonl(self.path, "metrics log", torn_last=True)


class NoLog(MetricsLog):
    """What ranks other than 0 of a distributed run write: nothing."""

    def __init__(self):
        super().__init__(Path(os.devnull))

    def write(self, record: dict) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass


def progress(iterable, desc: str, **kw):
    """A tqdm bar (task, step, loss, ETA); redrawn every 30 s instead of every step when the output is a log file."""
    interactive = sys.stderr.isatty()
    return tqdm(
        iterable, desc=desc, mininterval=0.5 if interactive else 30.0, leave=interactive, dynamic_ncols=True, **kw
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MinbertError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX-512 BF16 or AMX). Without them (e.g. Ice Lake Xeons)
    PyTorch emulates bf16 and an autocast step is much slower than fp32 (benchmarks/bench_encoder.py)."""
    return bool({"avx512_bf16", "amx_bf16"} & private.cpu_flags())


def resolve_precision(device: torch.device, precision: str) -> str:
    """ "auto": bf16 where it is fast (a CPU with AVX-512 BF16 or AMX, a GPU with bf16), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The autocast context maker of a run, resolved once (each call gives a fresh context): bf16 (CPUs with AVX-512
    bf16 or AMX, GPUs with bf16) or fp16 (older GPUs, with a gradient scaler in training); a no-op context for fp32;
    "auto" picks bf16 where it is fast (resolve_precision)."""
    dtype = PRECISIONS[resolve_precision(device, precision)]
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_bf16():
        _warn_emulated_bf16()
    if dtype is torch.float16 and device.type == "cpu":
        _warn_cpu_fp16()
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=dtype)


@functools.cache
def _warn_emulated_bf16() -> None:
    """Once per process: bf16 asked for by name where the CPU lacks it is emulated - measured 2x slower than fp32 on
    an Ice Lake Xeon and 7.6x on an AVX2-only EPYC (benchmarks/RESULTS.md) - with no gain in return."""
    log.warning(
        "bf16 on a CPU without native bf16 (no avx512_bf16 or amx_bf16 among its CPU flags) is emulated and several "
        "times slower than fp32; precision=auto picks fp32 here"
    )


@functools.cache
def _warn_cpu_fp16() -> None:
    """Once per process: fp16 autocast on a CPU has no fast kernels for most ops; it runs many times slower than
    fp32 and gains nothing (fp16 is for GPUs without bf16)."""
    best = "bf16 (native on this CPU)" if cpu_has_bf16() else "fp32"
    log.warning(f"fp16 on a CPU is emulated and many times slower than fp32; use precision={best.split()[0]} here")


def set_threads(threads: int, local_processes: int = 1) -> int:
    """CPU threads for this process: `threads`, or the CPUs this process may use shared among the processes on the
    machine (torchrun's default of one thread per process would leave cores idle)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = threads or max(1, cpus // local_processes)
    torch.set_num_threads(n)
    return n


@functools.cache
def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return None


def release_memory() -> None:
    """Hand the heap's free pages back to the operating system (glibc's malloc_trim), every `trim_every` steps and
    after each evaluation. Batches of varying length leave the heap fragmented, and glibc keeps what was freed:
    without this, resident memory keeps rising long after the working set stops growing (benchmarks/RESULTS.md,
    "memory"). Nothing to do under jemalloc or another malloc replacement (minbert/allocator.py), which reuses and
    returns memory on its own."""
    if allocator.loaded() is not None:
        return
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
