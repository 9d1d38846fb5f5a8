"""SMART and Bregman proximal point against hand computations and MT-DNN's reference."""

import pytest
import torch
import torch.nn.functional as F

from minbert.model.outputs import HeadOutput
from minbert.regularizers import REGULARIZERS
from minbert.regularizers.divergence import divergence, toward
from minbert.regularizers.smart import adversarial_delta
from tests.helpers import QUIET_BERT, TINY_BERT, sst_batch, tiny_model


def test_divergences_are_symmetric_kl_and_mse():
    a, b = torch.randn(3, 5), torch.randn(3, 5)
    p, q = a.softmax(-1), b.softmax(-1)
    kl = lambda x, y: (x * (x / y).log()).sum(-1).mean()  # noqa: E731
    assert torch.allclose(
        divergence(HeadOutput(logits=a), HeadOutput(logits=b), "logits"), kl(p, q) + kl(q, p), atol=1e-6
    )
    x, y = torch.randn(6), torch.randn(6)
    bern = lambda s: torch.stack([1 - torch.sigmoid(s), torch.sigmoid(s)], -1)  # noqa: E731
    assert torch.allclose(
        divergence(HeadOutput(score=x), HeadOutput(score=y), "logit"),
        kl(bern(x), bern(y)) + kl(bern(y), bern(x)),
        atol=1e-6,
    )
    assert torch.allclose(divergence(HeadOutput(score=x), HeadOutput(score=y), "score"), F.mse_loss(x, y))


def test_smart_with_zero_weight_adds_nothing():
    model, batch = tiny_model(), sst_batch()
    out = model.task_output("sst", batch)
    assert REGULARIZERS["smart"](weight=0.0)(model, "sst", batch, out, "logits").item() == 0.0


def test_smart_ascent_moves_every_token_by_eta_in_its_worst_direction():
    torch.manual_seed(1)
    lin = torch.nn.Linear(8, 3)
    f = lambda e: HeadOutput(logits=lin(torch.tanh(e)).sum(1))  # noqa: E731
    x = torch.randn(4, 5, 8)
    clean = HeadOutput(logits=f(x).logits.detach())
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
    adv_logits = model.task_output(task, batch, embedded=embed + noise).logits
    adv_loss = F.kl_div(
        F.log_softmax(adv_logits, dim=-1), F.softmax(clean_logits.detach(), dim=-1), reduction="batchmean"
    )
    (delta_grad,) = torch.autograd.grad(adv_loss, noise)
    direction = delta_grad / (delta_grad.abs().max(-1, keepdim=True)[0] + eps)
    adv_logits = model.task_output(task, batch, embedded=(embed + direction * eta).detach()).logits
    a, b = clean_logits, adv_logits
    return F.kl_div(F.log_softmax(a, -1), F.softmax(b.detach(), -1), reduction="batchmean") + F.kl_div(
        F.log_softmax(b, -1), F.softmax(a.detach(), -1), reduction="batchmean"
    )


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_smart_matches_mt_dnn_reference(dropout):
    """With dropout on as well: every pass runs in the model's mode, as in the reference, drawing its dropout masks in
    the same order (adversarial passes in eval mode would fail here)."""
    model = tiny_model(config=QUIET_BERT if dropout == 0 else TINY_BERT, dropout=dropout)
    batch = sst_batch()
    model.train()
    out = model.task_output("sst", batch)
    # sigma 1e-3 rather than the default 1e-5: at 1e-5 the divergence (~1e-12) is below fp32's resolution, and the
    # rounding of two implementations gives directions a few percent apart
    torch.manual_seed(5)
    ours = REGULARIZERS["smart"](weight=1.0, eta=1e-2, sigma=1e-3)(model, "sst", batch, out, "logits")
    torch.manual_seed(5)
    ref = reference_smart(model, "sst", batch, out.logits, sigma=1e-3, eta=1e-2, eps=1e-30)
    assert ours.item() > 1e-8
    assert ours.item() == pytest.approx(ref.item(), rel=2e-3)
    g_ours = torch.autograd.grad(ours, list(model.parameters()), retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, list(model.parameters()), allow_unused=True)
    for a, b in zip(g_ours, g_ref):
        if a is not None or b is not None:
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-7)


def reference_smart_cceaa00(model, task, batch, clean_logits, sigma, eta, eps, k=1):
    """MT-DNN's current SmartPerturbation.forward (since cceaa00) for a classification task, transcribed: the noise
    kept and (noise + eta g) normalized per token, stable_kl(reduce=False) as the ascent objective, the embedding
    output left attached, SymKlCriterion."""

    def stable_kl(logit, target, epsilon=1e-6):  # mt_dnn/loss.py, reduce=False
        p, y = F.log_softmax(logit.float(), 1).exp(), F.log_softmax(target.float(), 1).exp()
        rp = -(1.0 / (p + epsilon) - 1 + epsilon).detach().log()
        ry = -(1.0 / (y + epsilon) - 1 + epsilon).detach().log()
        return (p * (rp - ry) * 2).sum()

    embed = model.bert.embeddings(batch.ids, batch.types)
    noise = (torch.randn_like(embed) * sigma).requires_grad_()
    for _ in range(k):
        adv_logits = model.task_output(task, batch, embedded=embed + noise).logits
        (delta_grad,) = torch.autograd.grad(stable_kl(adv_logits, clean_logits.detach()), noise, retain_graph=True)
        delta_grad = noise + delta_grad * eta
        noise = (delta_grad / (delta_grad.abs().max(-1, keepdim=True)[0] + eps)).detach().requires_grad_()
    a, b = clean_logits, model.task_output(task, batch, embedded=embed + noise).logits
    return F.kl_div(F.log_softmax(a, -1), F.softmax(b.detach(), -1), reduction="batchmean") + F.kl_div(
        F.log_softmax(b, -1), F.softmax(a.detach(), -1), reduction="batchmean"
    )


@pytest.mark.parametrize("steps", [1, 2])
def test_smart_cceaa00_matches_mt_dnn_current_reference(steps):
    model, batch = tiny_model(config=QUIET_BERT, dropout=0.0), sst_batch()
    model.train()
    out = model.task_output("sst", batch)
    args = dict(weight=1.0, eta=1e-3, sigma=1e-5, steps=steps)
    torch.manual_seed(5)
    ours = REGULARIZERS["smart"](**args, reference="cceaa00")(model, "sst", batch, out, "logits")
    torch.manual_seed(5)
    ref = reference_smart_cceaa00(model, "sst", batch, out.logits, sigma=1e-5, eta=1e-3, eps=1e-6, k=steps)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-3)
    params = list(model.parameters())
    g_ours = torch.autograd.grad(ours, params, retain_graph=True, allow_unused=True)
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    emb = [i for i, (n, _) in enumerate(model.named_parameters()) if "embeddings" in n]
    assert any(g_ours[i] is not None and g_ours[i].abs().sum() > 0 for i in emb)  # the embedding output attached
    for a, b in zip(g_ours, g_ref):
        if a is not None or b is not None:
            assert torch.allclose(a, b, rtol=1e-2, atol=1e-7)
    # the two versions differ by orders of magnitude: the kept noise's per-token inf-norm is about 1, not eta
    torch.manual_seed(5)
    old = REGULARIZERS["smart"](**args)(model, "sst", batch, out, "logits")
    assert ours.item() > 100 * old.item() > 0


def test_smart_term_beats_random_noise_of_the_same_size():
    model, batch = tiny_model(config=QUIET_BERT, dropout=0.0), sst_batch()
    model.train()
    out = model.task_output("sst", batch)
    smart = REGULARIZERS["smart"](weight=1.0, eta=1e-3)
    adv = smart(model, "sst", batch, out, "logits").item()
    x = model.embedded("sst", batch).detach()
    rand = max(
        divergence(
            model.task_output("sst", batch, embedded=x + 1e-3 * torch.sign(torch.randn_like(x))), out, "logits"
        ).item()
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
        A, B = HeadOutput(**{key: x}), HeadOutput(**{key: y})
        assert torch.allclose(toward(A, B, needs) + toward(B, A, needs), divergence(A, B, needs), atol=1e-6)
    y = torch.randn(3, 5, requires_grad=True)
    toward(HeadOutput(logits=a), HeadOutput(logits=y), "logits").backward()
    assert y.grad is None and a.grad is not None  # the second side is held fixed


def test_bregman_with_zero_mu_changes_nothing_and_ema_follows_formula():
    model, batch = tiny_model(), sst_batch()
    out = model.task_output("sst", batch)
    reg = REGULARIZERS["bregman"](mu=0.0, beta=0.75)
    assert reg(model, "sst", batch, out, "logits").item() == 0.0
    reg = REGULARIZERS["bregman"](mu=1.0, beta=0.75)
    reg(model, "sst", batch, model.task_output("sst", batch), "logits")  # makes the EMA copy: theta_tilde_0 = theta_0
    theta0 = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    reg.after_step(model)
    for e, t0, p in zip(reg.ema.parameters(), theta0, model.parameters()):
        assert torch.allclose(e, 0.25 * p + 0.75 * t0)  # (1 - beta) theta_1 + beta theta_tilde_0


def test_bregman_term_is_zero_at_the_ema_in_train_mode_without_dropout_and_positive_away():
    model, batch = tiny_model(config=QUIET_BERT, dropout=0.0), sst_batch()
    model.train()  # the old teacher ran in eval mode against a train-mode student
    reg = REGULARIZERS["bregman"](mu=2.0, beta=0.9)
    assert reg(model, "sst", batch, model.task_output("sst", batch), "logits").item() == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model.heads["sst"].out.weight.add_(0.5)
    assert reg(model, "sst", batch, model.task_output("sst", batch), "logits").item() > 0


def test_bregman_teacher_follows_the_students_mode():
    model, batch = tiny_model(), sst_batch()  # dropout 0.1
    reg = REGULARIZERS["bregman"](mu=1.0)
    model.train()
    reg(model, "sst", batch, model.task_output("sst", batch), "logits")
    assert reg.ema.training
    model.eval()
    assert reg(model, "sst", batch, model.task_output("sst", batch), "logits").item() == pytest.approx(0.0, abs=1e-7)
    assert not reg.ema.training
