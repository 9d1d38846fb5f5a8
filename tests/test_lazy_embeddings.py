"""lazy_word_embeddings: a row-sparse gradient for the vocabulary table and AdamW's lazy update of its rows, checked
against torch.optim.SparseAdam, against the dense update where every row is looked up, and by hand."""

import copy
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F

import minbert.multitask.train as tr
from minbert.config import load_config
from minbert.errors import MinbertError
from minbert.multitask.config import TrainConfig
from minbert.optim import AdamW
from minbert.optim.grads import all_finite, clip_grad_norm_, coalesce_sparse
from tests.helpers import QUICKSTART, final_weights
from tests.test_distributed import EXACT


def lookups(table, steps, seed, n=12, all_rows=False, upto=None):
    """Batches of a loss over random lookups (repeated ids included) among the first `upto` rows, one per step."""
    g = torch.Generator().manual_seed(seed)
    V = table.num_embeddings
    for _ in range(steps):
        ids = torch.randint(0, upto or V, (n,), generator=g)
        if all_rows:
            ids = torch.cat([ids, torch.arange(V)])
        target = torch.randn(len(ids), table.embedding_dim, generator=g)
        yield ids, target


def train(table, opt, batches):
    for ids, target in batches:
        opt.zero_grad(set_to_none=True)
        F.mse_loss(table(ids), target, reduction="sum").backward()
        opt.step()


def test_lazy_rows_match_torch_sparse_adam_and_rows_not_looked_up_stay():
    torch.manual_seed(0)
    ours = torch.nn.Embedding(40, 6, sparse=True)
    ref, start = copy.deepcopy(ours), ours.weight.detach().clone()
    # eps tiny: SparseAdam adds eps to sqrt(v) before the bias correction, ours (as torch.optim.AdamW) after it
    kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-12)
    train(ours, AdamW(ours.parameters(), **kw), lookups(ours, 60, seed=1, n=8, upto=32))
    train(ref, torch.optim.SparseAdam(ref.parameters(), **kw), lookups(ref, 60, seed=1, n=8, upto=32))
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.weight[32:], start[32:])  # bit for bit
    assert (ours.weight[:32] != start[:32]).all()


def test_every_row_in_every_step_is_the_dense_update_bit_for_bit():
    torch.manual_seed(0)
    lazy = torch.nn.Embedding(30, 5, sparse=True)
    dense = copy.deepcopy(lazy)
    dense.sparse = False
    kw = dict(lr=1e-2, eps=1e-6, weight_decay=0.1)
    o1, o2 = AdamW(lazy.parameters(), **kw), AdamW(dense.parameters(), **kw)
    for ids, target in lookups(lazy, 25, seed=2, all_rows=True):
        for table, opt in ((lazy, o1), (dense, o2)):
            opt.zero_grad(set_to_none=True)
            F.mse_loss(table(ids), target, reduction="sum").backward()
            coalesce_sparse(table.parameters())
            if table is lazy:
                assert lazy.weight.grad.is_sparse
                dense_grad = lazy.weight.grad.to_dense()
            else:
                torch.testing.assert_close(table.weight.grad, dense_grad, rtol=1e-6, atol=1e-6)
                table.weight.grad = dense_grad.clone()  # the same numbers into both updates
            opt.step()
        assert torch.equal(lazy.weight, dense.weight)
    assert torch.equal(o1.state[lazy.weight]["exp_avg_sq"], o2.state[dense.weight]["exp_avg_sq"])


def test_weight_decay_and_the_step_by_hand():
    table = torch.nn.Embedding(4, 2, sparse=True)
    with torch.no_grad():
        table.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]))
    opt = AdamW(table.parameters(), lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    table(torch.tensor([1, 1, 3])).sum().backward()  # row 1 twice: gradient 2 per value; row 3: 1
    opt.step()
    # t=1: m_hat = g, v_hat = g^2, so the Adam step is lr * sign(g); decay lr * wd * w on the rows looked up only
    expected = torch.tensor([[1.0, 2.0], [3.0 - 0.05 * 3 - 0.1, 4.0 - 0.05 * 4 - 0.1], [5.0, 6.0], [7.0, 8.0]])
    expected[3] = torch.tensor([7.0 - 0.05 * 7 - 0.1, 8.0 - 0.05 * 8 - 0.1])
    torch.testing.assert_close(table.weight.detach(), expected, atol=1e-6, rtol=0)
    assert torch.equal(opt.state[table.weight]["exp_avg"][[0, 2]], torch.zeros(2, 2))


def test_clipping_and_finiteness_see_sparse_gradients_as_their_dense_form():
    torch.manual_seed(0)
    table, lin = torch.nn.Embedding(20, 4, sparse=True), torch.nn.Linear(4, 3)
    ids = torch.tensor([3, 5, 3, 9, 0])
    (lin(table(ids)) ** 2).sum().backward()
    coalesce_sparse([table.weight])
    dense = [table.weight.grad.to_dense(), lin.weight.grad.clone(), lin.bias.grad.clone()]
    ref = [torch.nn.Parameter(torch.zeros_like(g)) for g in dense]
    for p, g in zip(ref, dense):
        p.grad = g.clone()
    norm = clip_grad_norm_([table.weight, *lin.parameters()], 0.5)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, 0.5)
    torch.testing.assert_close(norm, ref_norm)
    assert norm > 0.5  # it clipped
    for p, r in zip([table.weight, *lin.parameters()], ref):
        g = p.grad.to_dense() if p.grad.is_sparse else p.grad
        torch.testing.assert_close(g, r.grad)
    assert all_finite([table.weight.grad, lin.weight.grad])
    table.weight.grad._values()[0, 0] = float("nan")
    assert not all_finite([table.weight.grad, lin.weight.grad])


def test_the_switch_updates_only_the_rows_the_training_text_uses(tmp_path):
    from minbert.model import BertModel, default_checkpoint_dir

    start = BertModel.from_pretrained(default_checkpoint_dir()).embeddings.word_embeddings.weight
    runs = {}
    for lazy in (True, False):
        runs[lazy] = tmp_path / f"lazy-{lazy}"
        over = ["weight_decay=0.01", "max_grad_norm=1.0", f"lazy_word_embeddings={str(lazy).lower()}"]
        tr.train(load_config(TrainConfig, QUICKSTART, EXACT + over + [f"out={runs[lazy]}"]))
    w = {k: final_weights(r)["bert.embeddings.word_embeddings.weight"] for k, r in runs.items()}
    changed = (w[True] != start).any(1)
    assert changed[101] and changed[102]  # [CLS] and [SEP]: in every sentence
    assert not changed[0] and not changed[1]  # [PAD] and [unused0]: never looked up
    assert 0 < int(changed.sum()) < len(start) // 10  # a few batches use a few hundred of the 30,522 rows
    assert (w[False] != start).any(1).sum() > 10 * changed.sum()  # the dense update decays every row
    assert torch.equal(w[True][1], start[1]) and not torch.equal(w[False][1], start[1])


@pytest.mark.parametrize(
    "over, match",
    [
        (["freeze_word_embeddings=true"], "the table is frozen"),
        (["combiner=pcgrad"], "combiner=pcgrad and conflict_stats compare dense"),
        (["conflict_stats=true"], "use combiner=sum and conflict_stats=false"),
    ],
)
def test_the_switch_refuses_what_it_cannot_do_in_one_line(over, match):
    with pytest.raises(MinbertError, match=match) as e:
        load_config(TrainConfig, QUICKSTART, ["lazy_word_embeddings=true", *over]).validate()
    assert "\n" not in str(e.value)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not installed")
def test_several_processes_are_refused_in_one_line_before_any_step(tmp_path, tiny_encoder):
    run = tmp_path / "ddp"
    cmd = ["torchrun", "--standalone", "--nproc-per-node", "2", "-m", "minbert", "train", str(QUICKSTART)]
    over = [*EXACT, f"checkpoint={tiny_encoder}", "lazy_word_embeddings=true", f"out={run}"]
    proc = subprocess.run([*cmd, *over], capture_output=True, text=True, timeout=600)
    # each worker that gets there writes the one line and exits 2; the two share stderr, so their lines can run into
    # one, and torchrun may stop the second worker before it gets there
    error = "minbert: error: lazy_word_embeddings: not with several processes"
    assert proc.returncode != 0 and 1 <= proc.stderr.count(error) <= 2, proc.stderr[-3000:]
    assert "exitcode  : 2" in proc.stderr and not run.exists()
