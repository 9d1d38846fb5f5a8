import collections

import pytest
from scipy.stats import chisquare

from minbert.registry import build
from minbert.sampling import SAMPLERS
from minbert.sampling.annealed import alpha

SIZES = {"sst": 8544, "quora": 14164, "sts": 6040}
TINY = {"a": 3, "b": 1, "c": 2}  # batches per pass


def test_sequential_exact_order():
    assert SAMPLERS["sequential"]()(TINY, TINY, 1, 3, 0, 0) == [("a",), ("a",), ("a",), ("b",), ("c",), ("c",)]
    assert SAMPLERS["sequential"]()(TINY, TINY, 1, 3, 4, 0) == [("a",), ("a",), ("a",), ("b",)]


def test_round_robin_exact_order():
    assert SAMPLERS["round_robin"]()(TINY, TINY, 1, 3, 0, 0) == [("a", "b", "c")] * 3  # one pass of the largest
    assert SAMPLERS["round_robin"]()(TINY, TINY, 2, 3, 5, 0) == [("a", "b", "c")] * 5


@pytest.mark.parametrize("epoch,expected", [(1, 1.0), (2, 0.6), (3, 0.2)])
def test_annealed_alpha_schedule(epoch, expected):
    assert alpha(epoch, 3) == pytest.approx(expected)
    assert alpha(1, 1) == 1.0


def frequencies(plan):
    c = collections.Counter(t for (t,) in plan)
    return [c[t] for t in SIZES]


@pytest.mark.parametrize(
    "name,epoch", [("proportional", 1), ("proportional", 4), ("annealed", 1), ("annealed", 3), ("annealed", 5)]
)
def test_sampled_frequencies_match_the_formula(name, epoch):
    steps, epochs = 30000, 5
    a = 1.0 if name == "proportional" else alpha(epoch, epochs)
    weights = [n**a for n in SIZES.values()]
    expected = [steps * w / sum(weights) for w in weights]
    plan = SAMPLERS[name]()(SIZES, SIZES, epoch, epochs, steps, 7)
    assert len(plan) == steps
    assert chisquare(frequencies(plan), expected).pvalue > 1e-3


def test_annealing_evens_out_the_tasks():
    first = frequencies(SAMPLERS["annealed"]()(SIZES, SIZES, 1, 5, 20000, 0))
    last = frequencies(SAMPLERS["annealed"]()(SIZES, SIZES, 5, 5, 20000, 0))
    assert max(first) / min(first) > 2.0 > max(last) / min(last)


def test_seeded_by_seed_plus_epoch():
    f = SAMPLERS["proportional"]()
    assert f(SIZES, SIZES, 2, 3, 100, 5) == f(SIZES, SIZES, 2, 3, 100, 5)
    assert f(SIZES, SIZES, 2, 3, 100, 5) == f(SIZES, SIZES, 3, 3, 100, 4)  # same seed + epoch
    assert f(SIZES, SIZES, 2, 3, 100, 5) != f(SIZES, SIZES, 3, 3, 100, 5)


def test_the_same_seed_and_epoch_give_the_same_plan_as_ever():
    """Plans pinned from the sampler functions these classes replaced: a training run's task order, bit for bit."""
    sizes = {"a": 300, "b": 100, "c": 50}
    proportional = SAMPLERS["proportional"]()(sizes, sizes, 2, 3, 24, 7)
    annealed = build(SAMPLERS, "annealed", {"decay": 0.5})(sizes, sizes, 3, 3, 24, 7)
    assert "".join(t for (t,) in proportional) == "aaabaacaaaaababaaaacabab"
    assert "".join(t for (t,) in annealed) == "babaccbabaaccacbaababbab"


def test_annealed_decay_is_a_schedule_arg():
    from minbert.config import load_config
    from minbert.multitask.config import TrainConfig
    from tests.helpers import QUICKSTART

    assert alpha(3, 3, decay=0.5) == pytest.approx(0.5) and alpha(3, 3) == pytest.approx(0.2)
    sizes, batches = {"a": 1000, "b": 10}, {"a": 32, "b": 1}
    cfg = load_config(TrainConfig, QUICKSTART, ["schedule=annealed", "schedule_args.decay=0.0"]).validate()
    plan = build(SAMPLERS, cfg.schedule, cfg.schedule_args)(sizes, batches, 3, 3, 400, 0)
    # decay 0: proportional in every epoch
    assert plan == SAMPLERS["proportional"]()(sizes, batches, 3, 3, 400, 0)
    assert plan != SAMPLERS["annealed"]()(sizes, batches, 3, 3, 400, 0)


@pytest.mark.parametrize("args,weights", [
    ({"T": 1.0}, [8544, 14164, 6040]),  # T = 1: proportional
    ({"T": 2.0}, [8544**0.5, 14164**0.5, 6040**0.5]),
    ({"T": 3.0, "cap": 8000}, [8000 ** (1 / 3), 8000 ** (1 / 3), 6040 ** (1 / 3)]),  # the cap bounds sst and quora
])  # fmt: skip
def test_temperature_sampling_matches_its_formula(args, weights):
    steps = 30000
    plan = build(SAMPLERS, "temperature", args)(SIZES, SIZES, 1, 3, steps, 7)
    expected = [steps * w / sum(weights) for w in weights]
    assert chisquare(frequencies(plan), expected).pvalue > 1e-3


def test_temperature_by_hand():
    """Sizes 100 and 1: T = 2 gives weights 10 and 1, p = 10/11; a cap of 4 at T = 1 gives 4 and 1, p = 4/5; a very
    large T gives 1/2 each."""
    t = build(SAMPLERS, "temperature", {"T": 2.0})
    assert t.probabilities({"a": 100, "b": 1}) == pytest.approx({"a": 10 / 11, "b": 1 / 11})
    capped = build(SAMPLERS, "temperature", {"T": 1.0, "cap": 4})
    assert capped.probabilities({"a": 100, "b": 1}) == pytest.approx({"a": 0.8, "b": 0.2})
    flat = build(SAMPLERS, "temperature", {"T": 1e9})
    assert flat.probabilities({"a": 100, "b": 1}) == pytest.approx({"a": 0.5, "b": 0.5})


def test_weighted_sampling_draws_the_given_probabilities():
    steps, given = 30000, {"sst": 2.0, "quora": 1.0, "sts": 1.0}  # normalized: 1/2, 1/4, 1/4
    plan = build(SAMPLERS, "weighted", {"probabilities": given})(SIZES, SIZES, 1, 3, steps, 7)
    assert chisquare(frequencies(plan), [steps / 2, steps / 4, steps / 4]).pvalue > 1e-3


@pytest.mark.parametrize("probabilities,part", [
    ({"sst": 1, "quora": 1}, "no probability for sts"),
    ({"sst": 1, "quora": 1, "sts": 1, "imdb": 1}, "imdb not among this run's tasks"),
    ({"sst": 1, "quora": 0, "sts": 1}, "probabilities.quora: 0.0 must be > 0"),
])  # fmt: skip
def test_weighted_probabilities_are_checked_with_the_config(probabilities, part):
    from minbert.config import load_config
    from minbert.errors import MinbertError
    from minbert.multitask.config import TrainConfig
    from tests.helpers import QUICKSTART

    args = "{probabilities: {" + ", ".join(f"{k}: {v}" for k, v in probabilities.items()) + "}}"
    with pytest.raises(MinbertError, match=part):
        load_config(TrainConfig, QUICKSTART, ["schedule=weighted", f"schedule_args={args}"]).validate()
