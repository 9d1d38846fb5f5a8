"""SMART, Bregman, PALs, ranking/triplet losses, dynamic margin and LR schedules against hand computations."""

import dataclasses
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
from minbert.regularizers.divergence import divergence, toward
from minbert.regularizers.smart import adversarial_delta

TINY = BertConfig(
    vocab_size=50,
    hidden_size=24,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    max_position_embeddings=32,
)
QUIET = dataclasses.replace(TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_model(pals=False, seed=0, config=TINY, dropout=0.1):
    torch.manual_seed(seed)
    tasks = {
        "sst": TaskConfig(head="linear", loss="ce", dropout=dropout),
        "sts": TaskConfig(head="cosine", loss="mse", cosine_scale=5.0),
    }
    return MultitaskModel(BertModel(config), tasks, PalsConfig(enabled=pals, size=12, heads=3))


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
    assert torch.allclose(
        divergence({"score": x}, {"score": y}, "logit"), kl(bern(x), bern(y)) + kl(bern(y), bern(x)), atol=1e-6
    )
    assert torch.allclose(divergence({"score": x}, {"score": y}, "score"), F.mse_loss(x, y))


def test_smart_with_zero_weight_adds_nothing():
    model, batch = tiny_model(), sst_batch()
    out = model("sst", batch)
    assert REGULARIZERS["smart"](weight=0.0)(model, "sst", batch, out, "logits").item() == 0.0


def test_smart_ascent_moves_every_token_by_eta_in_its_worst_direction():
    torch.manual_seed(1)
    lin = torch.nn.Linear(8, 3)
    f = lambda e: {"logits": lin(torch.tanh(e)).sum(1)}  # noqa: E731
    x = torch.randn(4, 5, 8)
    clean = {"logits": f(x)["logits"].detach()}
    # at sigma = 1e-5 the gradient is far below the reference's absolute eps = 1e-6: still a full step of eta
    delta = adversarial_delta(f, x, clean, "logits", steps=1, sigma=1e-5, eta=1e-2, eps=1e-6)
    assert torch.allclose(delta.abs().amax(-1), torch.full((4, 5), 1e-2), rtol=1e-4)  # per-token inf-norm eta
    # worse than random perturbations of the same per-token size
    adv = divergence(f(x + delta), clean, "logits")
    rand = torch.stack([divergence(f(x + 1e-2 * torch.sign(torch.randn_like(x))), clean, "logits") for _ in range(20)])
    assert adv > 3 * rand.mean() and adv > rand.max()
    # more steps go further
    assert divergence(f(x + adversarial_delta(f, x, clean, "logits", 3, 1e-5, 1e-2, 1e-6)), clean, "logits") > adv


def reference_smart(model, task, batch, clean_logits, sigma, eta, eps):
    """MT-DNN's SmartPerturbation.forward (mt_dnn/perturbation.py) for a classification task, transcribed: noise on
    the embedding output, one-way KL, per-token inf-norm of the gradient, embed + step * direction, SymKlCriterion.
    `eps` is the reference's absolute guard; called with a negligible one (see smart.py on why ours is relative)."""
    embed = model.bert.embeddings(batch.ids, batch.types)
    noise = torch.randn_like(embed) * sigma
    embed = (embed * batch.mask.unsqueeze(2).float()).detach()  # generate_noise: masked, here held fixed
    noise = (noise * batch.mask.unsqueeze(2).float()).requires_grad_()
    adv_logits = model(task, batch, embedded=embed + noise)["logits"]
    adv_loss = F.kl_div(
        F.log_softmax(adv_logits, dim=-1), F.softmax(clean_logits.detach(), dim=-1), reduction="batchmean"
    )
    (delta_grad,) = torch.autograd.grad(adv_loss, noise)
    direction = delta_grad / (delta_grad.abs().max(-1, keepdim=True)[0] + eps)
    adv_logits = model(task, batch, embedded=(embed + direction * eta).detach())["logits"]
    a, b = clean_logits, adv_logits
    return F.kl_div(F.log_softmax(a, -1), F.softmax(b.detach(), -1), reduction="batchmean") + F.kl_div(
        F.log_softmax(b, -1), F.softmax(a.detach(), -1), reduction="batchmean"
    )


def test_smart_matches_mt_dnn_reference_with_dropout_off():
    model, batch = tiny_model(config=QUIET, dropout=0.0), sst_batch()
    model.train()
    out = model("sst", batch)
    # sigma 1e-3 rather than the default 1e-5: at 1e-5 the divergence (~1e-12) is below fp32's resolution, and the
    # rounding of two implementations gives directions a few percent apart
    torch.manual_seed(5)
    ours = REGULARIZERS["smart"](weight=1.0, eta=1e-2, sigma=1e-3)(model, "sst", batch, out, "logits")
    torch.manual_seed(5)
    ref = reference_smart(model, "sst", batch, out["logits"], sigma=1e-3, eta=1e-2, eps=1e-30)
    assert ours.item() > 1e-8  # no dropout anywhere: the term is the adversarial one alone
    assert ours.item() == pytest.approx(ref.item(), rel=2e-3)
    g_ours = torch.autograd.grad(ours, list(model.parameters()), retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    for a, b in zip(g_ours, g_ref):
        if a is not None or b is not None:
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-7)


def test_smart_term_beats_random_noise_of_the_same_size():
    model, batch = tiny_model(config=QUIET, dropout=0.0), sst_batch()
    model.train()
    out = model("sst", batch)
    smart = REGULARIZERS["smart"](weight=1.0, eta=1e-3)
    adv = smart(model, "sst", batch, out, "logits").item()
    x = model.embedded("sst", batch).detach()
    rand = max(
        divergence(model("sst", batch, embedded=x + 1e-3 * torch.sign(torch.randn_like(x))), out, "logits").item()
        for _ in range(10)
    )
    assert adv > 2 * rand > 0


def test_one_way_halves_add_up_to_the_symmetric_divergence():
    a, b = torch.randn(3, 5, requires_grad=True), torch.randn(3, 5)
    for needs, key, x, y in (
        ("logits", "logits", a, b),
        ("logit", "score", a[:, 0], b[:, 0]),
        ("score", "score", a[:, 0], b[:, 0]),
    ):
        A, B = {key: x}, {key: y}
        assert torch.allclose(toward(A, B, needs) + toward(B, A, needs), divergence(A, B, needs), atol=1e-6)
    y = torch.randn(3, 5, requires_grad=True)
    toward({"logits": a}, {"logits": y}, "logits").backward()
    assert y.grad is None and a.grad is not None  # the second side is held fixed


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


def test_bregman_term_is_zero_at_the_ema_in_train_mode_without_dropout_and_positive_away():
    model, batch = tiny_model(config=QUIET, dropout=0.0), sst_batch()
    model.train()  # the old teacher ran in eval mode against a train-mode student
    reg = REGULARIZERS["bregman"](mu=2.0, beta=0.9)
    assert reg(model, "sst", batch, model("sst", batch), "logits").item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model.heads["sst"].out.weight.add_(0.5)
    assert reg(model, "sst", batch, model("sst", batch), "logits").item() > 0


def test_bregman_teacher_follows_the_students_mode():
    model, batch = tiny_model(), sst_batch()  # dropout 0.1
    reg = REGULARIZERS["bregman"](mu=1.0)
    model.train()
    reg(model, "sst", batch, model("sst", batch), "logits")
    assert reg.ema.training
    model.eval()
    assert reg(model, "sst", batch, model("sst", batch), "logits").item() == pytest.approx(0.0, abs=1e-7)
    assert not reg.ema.training


def test_fresh_pals_reproduce_the_plain_model_exactly():
    plain, palled = tiny_model(pals=False), tiny_model(pals=True)
    palled.load_state_dict({**palled.state_dict(), **plain.state_dict()})
    plain.eval(), palled.eval()
    batch = sst_batch()
    assert torch.equal(plain("sst", batch)["logits"], palled("sst", batch)["logits"])
    with torch.no_grad():
        palled.pals["sst"].decoder.weight.normal_()
    assert not torch.allclose(plain("sst", batch)["logits"], palled("sst", batch)["logits"])
    assert torch.equal(
        plain("sts", Batch(batch.ids, batch.mask, None, None, pair=True))["score"],
        palled("sts", Batch(batch.ids, batch.mask, None, None, pair=True))["score"],
    )  # other task's PAL untouched


def reference_pal_layer(layer, pal, attn, x, mask):
    """Bert-n-Pals' BERTLayer.forward with mult and pals (modeling.py), written out: the PAL reads the layer input
    hidden_states, GELU(aug_dense2(attn(aug_dense(h)))) joins the second add-norm's residual."""
    n_head = attn.n_head
    ext = (1.0 - mask[:, None, None, :].float()) * -10000.0  # the reference's additive mask

    def heads(t):  # (B, T, s) -> (B, nh, T, s / nh)
        return t.view(t.shape[0], t.shape[1], n_head, -1).permute(0, 2, 1, 3)

    h = pal.encoder(x)  # aug_dense
    q, k, v = heads(attn.query(h)), heads(attn.key(h)), heads(attn.value(h))
    p = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + ext).softmax(-1)
    ctx = (p @ v).permute(0, 2, 1, 3).reshape(h.shape)  # (B, T, s)
    extra = F.gelu(pal.decoder(ctx))  # aug_dense2, then gelu
    bert_ext = (1.0 - mask[:, None, None, :].float()) * -10000.0
    a_self = layer.attention.self

    def bh(t):  # noqa: E306
        return t.view(t.shape[0], t.shape[1], a_self.n_head, -1).permute(0, 2, 1, 3)

    q, k, v = bh(a_self.query(x)), bh(a_self.key(x)), bh(a_self.value(x))
    s_ = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bert_ext).softmax(-1)
    ctx = (s_ @ v).permute(0, 2, 1, 3).reshape(x.shape)
    attention_output = layer.attention.output.LayerNorm(layer.attention.output.dense(ctx) + x)
    inter = F.gelu(layer.intermediate.dense(attention_output))
    return layer.output.LayerNorm(layer.output.dense(inter) + attention_output + extra)  # BERTOutput(inter, a + extra)


def test_pal_layer_matches_bert_n_pals_reference():
    model = tiny_model(pals=True, config=QUIET).eval()
    pal = model.pals["sst"]
    with torch.no_grad():
        for p in pal.parameters():
            p.normal_(0, 0.3)  # V^D starts at zero: give every PAL weight a value
    batch = sst_batch()
    x = model.bert.embeddings(batch.ids)
    layer = model.bert.encoder.layer[0]
    ours = layer(x, batch.mask.bool()[:, None, None, :], pal.adapters()[0])
    ref = reference_pal_layer(layer, pal, pal.attention[0], x, batch.mask)
    real = batch.mask.bool()
    assert torch.allclose(ours[real], ref[real], atol=1e-5)


def test_pal_parameter_count_matches_formula():
    for hidden, layers, size, heads in ((24, 2, 12, 3), (384, 6, 102, 6), (768, 12, 204, 6)):
        pal = PAL(hidden, layers, size, heads)
        assert (
            sum(p.numel() for p in pal.parameters())
            == PAL.parameter_count(hidden, layers, size)
            == 2 * hidden * size + hidden + size + layers * (3 * size**2 + 3 * size)
        )
    assert pal_size(768) == 204 and pal_size(384) == 102
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
