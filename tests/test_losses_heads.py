"""Losses and heads against PyTorch, sentence-transformers and hand computations: CE, BCE, MSE, cosine losses, the
ranking and triplet losses, the pair heads (the dynamic margin, an updater, is in test_lr_schedules.py)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from minbert.config import load_config
from minbert.errors import MinbertError
from minbert.losses import LOSSES
from minbert.model import BertModel
from minbert.model.heads import HEADS, ConcatPairHead, CosinePairHead, SigmoidPairHead
from minbert.model.multitask import MultitaskModel
from minbert.model.outputs import HeadOutput
from minbert.multitask.config import TrainConfig
from minbert.multitask.data import Batch, TaskData
from minbert.multitask.objective import Objective
from minbert.multitask.runner import Runner
from minbert.tasks import TASKS
from tests.helpers import QUICKSTART, TINY_BERT

torch.manual_seed(0)
U, V = torch.randn(6, 8), torch.randn(6, 8)


def test_ce_bce_mse_equal_pytorch():
    logits, y = torch.randn(6, 5), torch.randint(0, 5, (6,))
    assert torch.allclose(LOSSES["ce"]()(HeadOutput(logits=logits), y), torch.nn.CrossEntropyLoss()(logits, y))
    s, b = torch.randn(6), torch.randint(0, 2, (6,)).float()
    assert torch.allclose(LOSSES["bce"]()(HeadOutput(score=s), b), torch.nn.BCEWithLogitsLoss()(s, b))
    r = torch.rand(6) * 5
    assert torch.allclose(LOSSES["mse"]()(HeadOutput(score=s), r), torch.nn.MSELoss()(s, r))


@pytest.mark.parametrize("margin", [0.0, 0.25, -0.3])
def test_cosine_embedding_equals_pytorch(margin):
    labels = torch.tensor([0.0, 1.2, 3.0, 4.6, 2.9, 5.0])  # STS scores; similar when >= 3
    ours = LOSSES["cosine_embedding"](margin=margin, threshold=3.0)(HeadOutput(u=U, v=V), labels)
    target = torch.where(labels >= 3.0, 1.0, -1.0)
    assert torch.allclose(ours, torch.nn.CosineEmbeddingLoss(margin=margin)(U, V, target), atol=1e-6)


def test_cosine_mse_is_sentence_transformers_formula():
    labels = torch.tensor([0.0, 1.0, 2.5, 5.0, 4.0, 3.0])
    expected = ((F.cosine_similarity(U, V) - labels / 5) ** 2).mean()
    assert torch.allclose(LOSSES["cosine_mse"](label_max=5.0)(HeadOutput(u=U, v=V), labels), expected)


@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_equals_sentence_transformers(scale):
    """sentence-transformers' CoSENTLoss on the same embeddings (its model is never called), with tied labels; and
    a hand-worked two-pair case."""
    from sentence_transformers.sentence_transformer.losses import CoSENTLoss

    labels = torch.tensor([0.0, 1.0, 2.5, 5.0, 2.5, 3.0])
    u, v = U.clone().requires_grad_(True), V.clone().requires_grad_(True)
    ours = LOSSES["cosent"](scale=scale)(HeadOutput(u=u, v=v), labels)
    ours.backward()
    u2, v2 = U.clone().requires_grad_(True), V.clone().requires_grad_(True)
    theirs = CoSENTLoss(model=None, scale=scale).compute_loss_from_embeddings([u2, v2], labels)
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(u.grad, u2.grad, atol=1e-5) and torch.allclose(v.grad, v2.grad, atol=1e-5)
    # two pairs, label 1 < label 2, cosines c1 and c2: log(1 + exp(scale (c1 - c2)))
    a, b = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cosines 1 and 0
    two = LOSSES["cosent"](scale=scale)(HeadOutput(u=a, v=b), torch.tensor([2.0, 1.0]))
    assert torch.isclose(two, torch.tensor(math.log(1 + math.exp(scale * (0.0 - 1.0)))), atol=1e-6)


def test_cosine_head_is_exactly_relu_cos_times_5():
    out = CosinePairHead(8, scale=5.0)(U, V)
    assert torch.equal(out.score, torch.relu(F.cosine_similarity(U, V, dim=-1, eps=1e-8)) * 5)
    assert (out.score >= 0).all() and (out.score <= 5).all()


def test_cosine_head_with_learnable_layer_changes_the_inputs():
    head = CosinePairHead(8, scale=5.0, extra_layers=1)
    assert sum(p.numel() for p in head.parameters()) == 8 * 8 + 8
    out = head(U, V)
    assert not torch.equal(out.u, U)


def test_concat_head_features():
    head = ConcatPairHead(8, 1, 0.0, features=("u", "v", "|u-v|", "u*v"))
    assert head.out.in_features == 32 and head(U, V).score.shape == (6,)
    with pytest.raises(MinbertError, match="valid are u, v"):
        ConcatPairHead(8, 1, 0.0, features=("u", "u+v"))


def test_sigmoid_head_is_report_003s_linear_on_u_v_then_sigmoid_times_5():
    """Report 003's baseline STS head by hand: [u; v] -> linear -> sigmoid x 5 (no dropout in eval)."""
    head = SigmoidPairHead(2, dropout=0.0, features=("u", "v"), scale=5.0)
    with torch.no_grad():
        head.out.weight.copy_(torch.tensor([[1.0, -1.0, 0.5, 2.0]]))
        head.out.bias.fill_(-0.5)
    u, v = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[3.0, -1.0], [0.0, 1.0]])
    logits = [1 - 2 + 1.5 - 2 - 0.5, 0 + 0 + 0 + 2 - 0.5]  # w . [u; v] + b
    want = torch.tensor([5 / (1 + math.exp(-z)) for z in logits])
    assert torch.allclose(head(u, v).score, want, atol=1e-6)
    assert HEADS["concat_sigmoid"].similarity and HEADS["concat_sigmoid"].features


def test_mnrl_hinge_is_report_000s_formula_by_hand():
    """Section 4.4: J_i = (1/K)[ReLU(1 - s_ii) + ReLU(1 - s_ii + sum_{j != i} s_ij)], averaged over the pairs."""
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    r = 1 / math.sqrt(2)
    cos = [[1.0, r, 0.0], [0.0, r, 1.0], [r, 1.0, r]]
    k = 3
    rows = [(max(0.0, 1 - cos[i][i]) + max(0.0, 1 - cos[i][i] + sum(cos[i][j] for j in range(k) if j != i))) / k
            for i in range(k)]  # fmt: skip
    got = LOSSES["mnrl_hinge"]()(HeadOutput(u=u, v=v), torch.ones(3))
    assert got.item() == pytest.approx(sum(rows) / k, rel=1e-6)
    assert got.item() != pytest.approx(LOSSES["mnrl"]()(HeadOutput(u=u, v=v), torch.ones(3)).item())


def test_mnrl_three_pairs_by_hand():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1.0, 1.0, 1.0])
    s = 2.0
    cos = [[1.0, 1 / math.sqrt(2), 0.0], [0.0, 1 / math.sqrt(2), 1.0], [1 / math.sqrt(2), 1.0, 1 / math.sqrt(2)]]
    rows = [-math.log(math.exp(s * cos[i][i]) / sum(math.exp(s * c) for c in cos[i])) for i in range(3)]
    got = LOSSES["mnrl"](scale=s)(HeadOutput(u=u, v=v), labels)
    assert got.item() == pytest.approx(sum(rows) / 3, rel=1e-6)
    # non-paraphrase pairs are not positives: with the third pair negative only 2 x 2 scores remain
    two = LOSSES["mnrl"](scale=s)(HeadOutput(u=u, v=v), torch.tensor([1.0, 1.0, 0.0]))
    r2 = [-math.log(math.exp(s * cos[i][i]) / sum(math.exp(s * cos[i][j]) for j in range(2))) for i in range(2)]
    assert two.item() == pytest.approx(sum(r2) / 2, rel=1e-6)


def test_sentiment_clustering_pairs_classes():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9], [5.0, 5.0]])
    labels = torch.tensor([0, 3, 0, 3, 4])  # class 4 appears once: left out
    a, b = F.normalize(emb[[0, 1]], dim=-1), F.normalize(emb[[2, 3]], dim=-1)
    expected = F.cross_entropy(20.0 * a @ b.T, torch.arange(2))
    assert torch.allclose(LOSSES["mnrl_sentiment"]()(HeadOutput(emb=emb), labels), expected)


def test_triplet_by_hand():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    v = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    # pair 0: d(u0,v0)=5, negative v1: d=sqrt(2); pair 1: d(u1,v1)=1, negative v0: d=sqrt(4+16)
    labels = torch.tensor([5.0, 2.5])
    expected = (1.0 * max(0, 5 - math.sqrt(2) + 1) + 0.5 * max(0, 1 - math.sqrt(20) + 1)) / 2
    assert LOSSES["triplet"](margin=1.0)(HeadOutput(u=u, v=v), labels).item() == pytest.approx(expected)


def _batch(task: str, head: str, b: int = 4, t: int = 6):
    """A random batch the way make_batch lays it out: bi-encoder pairs as 2B rows, cross-encoded pairs with types."""
    g = torch.Generator().manual_seed(0)
    labels = {"sst": torch.tensor([0, 1, 2, 4]), "quora": torch.tensor([0.0, 1.0, 1.0, 0.0])}.get(task)
    labels = torch.tensor([0.5, 4.0, 2.5, 3.0]) if labels is None else labels
    bi = HEADS[head].bi_encoder
    ids = torch.randint(1, 50, (2 * b if bi else b, t), generator=g)
    types = (torch.arange(t) >= t // 2).long().expand(b, t).contiguous() if HEADS[head].cross else None
    keys = torch.arange(2 * b if bi else b)
    return Batch(ids, torch.ones_like(ids), types, labels, pair=bi, keys=keys)


def _data(batch: Batch) -> TaskData:
    """The batch's examples as the runner reads them: a table of sentences, or the cross-encoded pairs."""
    rows, b = batch.ids.tolist(), len(batch.labels)
    if batch.types is not None:
        return TaskData([None] * b, batch.labels, [], [], rows, batch.types.tolist())
    index = [(i, b + i) for i in range(b)] if batch.pair else [(i,) for i in range(b)]
    return TaskData([None] * b, batch.labels, rows, index)


@pytest.mark.parametrize("task", ["sst", "quora", "sts"])
def test_every_head_and_loss_the_check_accepts_trains_and_predicts(task):
    """The one kinds check (multitask/config.py) against the code it guards: every (head, loss, extra loss) it
    accepts gives a finite loss with a gradient and predictions of the task's shape; what it refuses is one line."""
    accepted = 0
    for head, loss, extra in itertools.product(HEADS, LOSSES, [None, *LOSSES]):
        overrides = [f"tasks={{{task}: {{head: {head}, loss: {loss}}}}}"]
        overrides += [f"tasks.{task}.extra_losses.{extra}={{}}"] if extra else []
        try:
            cfg = load_config(TrainConfig, QUICKSTART, overrides).validate()
        except MinbertError as e:
            assert "\n" not in str(e) and str(e).startswith(f"tasks.{task}"), str(e)
            continue
        accepted += 1
        torch.manual_seed(0)
        model = MultitaskModel(BertModel(TINY_BERT), {task: cfg.task(task)})
        batch = _batch(task, head)
        value = Objective(cfg, model, torch.device("cpu")).task_loss(task, batch)
        assert value.dim() == 0 and torch.isfinite(value), (head, loss, extra)
        value.backward()
        assert any(p.grad is not None for p in model.parameters())
        soft = TASKS[task].soft(model.eval().task_output(task, batch), model.cosine_scale(task))
        assert soft.shape[0] == 4 and TASKS[task].hard(soft).shape == (4,), (head, loss, extra)
        preds = Runner(model, 0, "cpu", "fp32").predict(task, _data(batch))  # evaluate's and predict's path
        assert torch.allclose(preds.float(), TASKS[task].hard(soft).float(), atol=1e-5), (head, loss, extra)
    assert accepted >= 3  # sst: ce alone, and with ce or mnrl_sentiment as an extra loss
