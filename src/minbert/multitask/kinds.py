"""The one check between heads, losses and tasks (TrainConfig.validate runs it for every task): each head declares
the kinds of output it gives (`HeadKind.kinds`), each loss the kind it needs (`Loss.needs`), and each task what its
predictions read; every loss must get what it needs and the main loss must train what the predictions read."""

from __future__ import annotations

from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.model.heads import HEADS

# the kinds of output a head gives and a loss needs (HeadKind.kinds, Loss.needs), as the error messages name them
KIND_NAMES = {
    "logits": "class logits",
    "logit": "a logit",
    "score": "a score",
    "similarity": "a similarity on the label scale",
    "embeddings": "bi-encoder embeddings (u, v)",
    "sentence": "a sentence's embedding",
}


def _named(kinds) -> str:
    return ", ".join(KIND_NAMES[k] for k in KIND_NAMES if k in kinds)


def reads(task) -> frozenset[str]:
    """What a task's predictions read from its head's output (Task.soft): class logits for several classes; class
    logits, a logit or a similarity (against its scale) for two; a score for a real value."""
    classes = task.dataset.num_labels
    return frozenset({"logits"} if classes > 2 else {"logits", "logit", "similarity"} if classes == 2 else {"score"})


def trains(loss: str, head: str) -> frozenset[str]:
    """What a loss trains of a head's output: what it needs, and a similarity head's score (a similarity on the label
    scale) when the loss trains that score or the embeddings it is the cosine of (the head has no weights after
    them)."""
    needs = LOSSES[loss].needs
    similar = HEADS[head].similarity and needs in ("score", "embeddings")
    return frozenset({needs, "score", "similarity"} if similar else {needs})


def fits(task, head: str, loss: str) -> bool:
    """The loss can be the task's main loss with this head: the head gives what it needs, and it trains what the
    task's predictions read."""
    return LOSSES[loss].needs in HEADS[head].kinds(num_outputs(task, loss)) and bool(trains(loss, head) & reads(task))


def check_kinds(where: str, task, head: str, loss: str, extra: list[str]) -> None:
    """The one check between heads, losses and tasks: every loss gets the kind of output it needs from the head,
    and the main loss trains what the task's predictions read (else it would train, then score nonsense)."""
    kinds = HEADS[head].kinds(num_outputs(task, loss))
    for key, name in [("loss", loss)] + [(f"extra_losses.{e}", e) for e in extra]:
        needs = LOSSES[name].needs
        if needs not in kinds:
            ok = [k for k in LOSSES if fits(task, head, k)] if key == "loss" else [
                k for k, c in LOSSES.items() if c.needs in kinds
            ]  # fmt: skip
            raise MinbertError(
                f"{where}.{key}: {name!r} needs {KIND_NAMES[needs]}, and head {head!r} gives {_named(kinds)}; "
                + (f"losses that fit: {', '.join(ok)}" if ok else "no loss fits it")
            )
    if trains(loss, head) & reads(task):
        return
    classes, ok = task.dataset.num_labels, [k for k in LOSSES if fits(task, head, k)]
    label = f"{classes} classes" if classes > 1 else f"a real value, 0..{task.label_max:g}"
    heads = [h for h, k in HEADS.items() if k.pair == task.pair and fits(task, h, loss)]
    use = [f"loss {', '.join(ok)}"] if ok else []
    use += [f"head {', '.join(heads)}"] if heads else []
    raise MinbertError(
        f"{where}.loss: {loss!r} trains {_named(trains(loss, head))} of head {head!r}, but {task.name}'s predictions "
        f"read {_named(reads(task))} ({label}); use {' or '.join(use) or 'another head and loss'}"
        # a loss on the embeddings can still help as an extra loss beside one that trains the predictions
        + (f", or add {loss!r} under extra_losses" if LOSSES[loss].needs in ("embeddings", "sentence") else "")
    )


def num_outputs(task, loss: str) -> int:
    """Head width: class logits for a loss that needs them, one score otherwise."""
    return max(task.dataset.num_labels, 2) if LOSSES[loss].needs == "logits" else 1
