"""SMART, Bregman, PALs, ranking/triplet losses, dynamic margin and LR schedules against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F

from minbert.losses import LOSSES
from minbert.losses.dynamic_margin import next_margin
from minbert.lr_schedules import LR_SCHEDULES
from minbert.model import BertConfig, BertModel
from minbert.model.pals import PAL, pal_size
from minbert.multitask.config import PalsConfig, TaskConfig
from minbert.multitask.data import Batch
from minbert.multitask.model import MultitaskModel
from minbert.regularizers import REGULARIZERS
from minbert.regularizers.divergence import divergence
from minbert.regularizers.smart import adversarial_noise

TINY = BertConfig(vocab_size=50, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32, max_position_embeddings=32)


def tiny_model(pals=False, seed=0):
    torch.manual_seed(seed)
    tasks = {"sst": TaskConfig(head="linear", loss="ce"), "sts": TaskConfig(head="cosine", loss="mse", cosine_scale=5.0)}
    return MultitaskModel(BertModel(TINY), tasks, PalsConfig(enabled=pals, size=12, heads=3))


def sst_batch():
    ids = torch.randint(1, 50, (4, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return Batch(ids, mask, None, torch.tensor([0, 1, 2, 4]), pair=False)


def test_divergences_are_symmetric_kl_and_mse():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    p, q = a.softmax(-1), b.softmax(-1)
    kl = lambda x, y: (x * (x / y).log()).sum(-1).mean()  # noqa: E731
    assert torch.allclose(divergence({"logits": a}, {"logits": b}, "logits"), kl(p, q) + kl(q, p), atol=1e-6)
    x, y = torch.randn(6), torch.randn(6)
    bern = lambda s: torch.stack([1 - torch.sigmoid(s), torch.sigmoid(s)], -1)  # noqa: E731
    assert torch.allclose(divergence({"score": x}, {"score": y}, "logit"), kl(bern(x), bern(y)) + kl(bern(y), bern(x)), atol=1e-6)
    assert torch.allclose(divergence({"score": x}, {"score": y}, "score"), F.mse_loss(x, y))


def test_smart_with_zero_weight_adds_nothing():
    model, batch = tiny_model(), sst_batch()
    out = model("sst", batch)
    assert REGULARIZERS["smart"](weight=0.0)(model, "sst", batch, out, "logits").item() == 0.0


def test_smart_ascent_increases_the_divergence():
    torch.manual_seed(1)
    lin = torch.nn.Linear(8, 3)
    f = lambda e: {"logits": lin(torch.tanh(e)).sum(1)}  # noqa: E731
    emb = torch.randn(4, 5, 8)
    clean = {"logits": f(emb)["logits"].detach()}
    torch.manual_seed(2)
    start = adversarial_noise(f, emb, clean, "logits", steps=0, sigma=1e-2, eps=0.05, eta=0.02)
    torch.manual_seed(2)
    moved = adversarial_noise(f, emb, clean, "logits", steps=3, sigma=1e-2, eps=0.05, eta=0.02)
    assert moved.abs().max() <= 0.05 + 1e-7  # stays inside the inf-norm ball
    assert divergence(f(emb + moved), clean, "logits") > divergence(f(emb + start), clean, "logits")


def test_smart_term_on_the_model_is_positive_and_restores_train_mode():
    model, batch = tiny_model(), sst_batch()
    model.train()
    out = model("sst", batch)
    r = REGULARIZERS["smart"](weight=1.0, eps=1e-2, sigma=1e-3)(model, "sst", batch, out, "logits")
    assert r.item() > 0 and r.requires_grad and model.training


def test_bregman_with_zero_mu_changes_nothing_and_ema_follows_formula():
    model, batch = tiny_model(), sst_batch()
    out = model("sst", batch)
    reg = REGULARIZERS["bregman"](mu=0.0, beta=0.75)
    assert reg(model, "sst", batch, out, "logits").item() == 0.0
    reg = REGULARIZERS["bregman"](mu=1.0, beta=0.75)
    reg(model, "sst", batch, model("sst", batch), "logits")  # makes the EMA copy: theta_tilde_0 = theta_0
    theta0 = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    reg.after_step(model)
    for e, t0, p in zip(reg.ema.parameters(), theta0, model.parameters()):
        assert torch.allclose(e, 0.25 * p + 0.75 * t0)  # (1 - beta) theta_1 + beta theta_tilde_0


def test_bregman_term_is_zero_at_the_ema_and_positive_away():
    model, batch = tiny_model(), sst_batch()
    model.eval()
    reg = REGULARIZERS["bregman"](mu=2.0, beta=0.9)
    assert reg(model, "sst", batch, model("sst", batch), "logits").item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model.heads["sst"].out.weight.add_(0.5)
    assert reg(model, "sst", batch, model("sst", batch), "logits").item() > 0


def test_fresh_pals_reproduce_the_plain_model_exactly():
    plain, palled = tiny_model(pals=False), tiny_model(pals=True)
    palled.load_state_dict({**palled.state_dict(), **plain.state_dict()})
    plain.eval(), palled.eval()
    batch = sst_batch()
    assert torch.equal(plain("sst", batch)["logits"], palled("sst", batch)["logits"])
    with torch.no_grad():
        palled.pals["sst"].decoder.weight.normal_()
    assert not torch.allclose(plain("sst", batch)["logits"], palled("sst", batch)["logits"])
    assert torch.equal(plain("sts", Batch(batch.ids, batch.mask, None, None, pair=True))["score"],
                       palled("sts", Batch(batch.ids, batch.mask, None, None, pair=True))["score"])  # other task's PAL untouched


def test_pal_parameter_count_matches_formula():
    for hidden, layers, size in ((24, 2, 12), (384, 6, 96), (768, 12, 204)):
        pal = PAL(hidden, layers, size)
        assert sum(p.numel() for p in pal.parameters()) == PAL.parameter_count(hidden, layers, size) == 2 * hidden * size + layers * (3 * size**2 + 3 * size)
    assert pal_size(768) == 204 and pal_size(384) == 96
    model = tiny_model(pals=True)
    assert sum(p.numel() for p in model.pals.parameters()) == 2 * PAL.parameter_count(24, 2, 12)


def test_mnrl_three_pairs_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1.0, 1.0, 1.0])
    s = 2.0
    cos = [[1.0, 1 / math.sqrt(2), 0.0], [0.0, 1 / math.sqrt(2), 1.0], [1 / math.sqrt(2), 1.0, 1 / math.sqrt(2)]]
    rows = [-math.log(math.exp(s * cos[i][i]) / sum(math.exp(s * c) for c in cos[i])) for i in range(3)]
    got = LOSSES["mnrl"](scale=s)({"u": u, "v": v}, labels)
    assert got.item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    # non-paraphrase pairs are not positives: with the third pair negative only 2 x 2 scores remain
    two = LOSSES["mnrl"](scale=s)({"u": u, "v": v}, torch.tensor([1.0, 1.0, 0.0]))
    r2 = [-math.log(math.exp(s * cos[i][i]) / sum(math.exp(s * cos[i][j]) for j in range(2))) for i in range(2)]
    assert two.item() == pytest.approx(sum(r2) / 2, rel=1e-6)


def test_sentiment_clustering_pairs_classes():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [5.0, 5.0]])
    labels = torch.tensor([0, 3, 0, 3, 4])  # class 4 appears once: left out
    a, b = F.normalize(emb[[0, 1]], dim=-1), F.normalize(emb[[2, 3]], dim=-1)
    expected = F.cross_entropy(20.0 * a @ b.T, torch.arange(2))
    assert torch.allclose(LOSSES["mnrl_sentiment"]()({"emb": emb}, labels), expected)


def test_triplet_by_hand():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    # pair 0: d(u0,v0)=5, negative v1: d=sqrt(2); pair 1: d(u1,v1)=1, negative v0: d=sqrt(4+16)
    labels = torch.tensor([5.0, 2.5])
    expected = (1.0 * max(0, 5 - math.sqrt(2) + 1) + 0.5 * max(0, 1 - math.sqrt(20) + 1)) / 2
    assert LOSSES["triplet"](margin=1.0)({"u": u, "v": v}, labels).item() == pytest.approx(expected)


def test_dynamic_margin_reproduces_algorithm_1():
    # Algorithm 1 on a scripted sequence of dev scores, initial margin 0.5, step 0.1
    scores = [0.40, 0.45, 0.44, 0.44, 0.50]
    margin, previous, seen = 0.5, 0.0, []
    for epoch, current in enumerate(scores, start=1):
        margin = next_margin(margin, previous, current, epoch, 0.1)
        previous = current
        seen.append(round(margin, 10))
    # improved, improved, worse, equal (not an improvement), improved
    expected = [0.5 - 0.1, 0.4 - 0.1 / 2, 0.35 + 0.1 / 3, 0.35 + 0.1 / 3 + 0.1 / 4, 0.35 + 0.1 / 3 + 0.1 / 4 - 0.1 / 5]
    assert seen == [round(x, 10) for x in expected]


def optimizer_at(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_halves_after_three_rising_epochs():
    opt, sched = optimizer_at(), LR_SCHEDULES["plateau"]()
    lrs = []
    for epoch, loss in enumerate([5, 6, 7, 8, 7, 8, 9, 10, 11], start=1):
        sched.on_epoch_end(opt, epoch, loss)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_warmup_linear():
    opt, sched = optimizer_at(2.0), LR_SCHEDULES["warmup_linear"](warmup=0.2)
    lrs = []
    for step in range(10):
        sched.on_step(opt, step, 10)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 2.0, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25])
