"""The word table's gradient built in a reused buffer (model/embedding_grad.py): the same values as PyTorch's
embedding backward, bit for bit, and never reused while somebody still holds the last gradient."""

import copy

import torch
import torch.nn.functional as F
from helpers import TINY_BERT

from minbert.model import BertModel, fast
from minbert.model.fast import cpu
from minbert.model.fast.embedding_grad import GradBuffer, embedding


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY_BERT.vocab_size, (6, 9), generator=g)
    ids[:, 0] = 3  # a token repeated in every row: its gradient row sums many contributions
    mask = torch.ones_like(ids)
    mask[1:, 5:] = 0
    ids[1:, 5:] = TINY_BERT.pad_token_id  # padding ids get no gradient
    return ids, mask, torch.randn(6, 9, TINY_BERT.hidden_size, generator=g)


def grads(model, ids, mask, up):
    torch.manual_seed(0)  # the same dropout masks on both sides
    (model(ids, mask).last_hidden_state * up).sum().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}  # the pooler has none


def test_reused_buffer_gives_pytorchs_gradients_bit_for_bit_over_steps():
    torch.manual_seed(1)
    reused = fast.install(BertModel(TINY_BERT), "cpu")  # the CPU's paths include the reused buffer
    plain = fast.install(copy.deepcopy(reused), "cpu", without=frozenset({cpu.WordEmbedding}))
    assert isinstance(reused.embeddings.word_embeddings, cpu.WordEmbedding)
    assert type(plain.embeddings.word_embeddings) is torch.nn.Embedding
    for step in range(3):
        ids, mask, up = batch(step)
        a, b = grads(reused, ids, mask, up), grads(plain, ids, mask, up)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (step, k)
        assert not a["embeddings.word_embeddings.weight"][TINY_BERT.pad_token_id].any()
        w = reused.embeddings.word_embeddings.weight
        buf = reused.embeddings.word_embeddings.grad_buffer.buf
        assert w.grad.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr()
        for m in (reused, plain):
            m.zero_grad(set_to_none=True)


def test_buffer_is_not_reused_while_a_gradient_is_held():
    torch.manual_seed(0)
    w = torch.randn(20, 4, requires_grad=True)
    pool = GradBuffer()
    ids = torch.tensor([[1, 2, 2, 0]])
    up = torch.randn(1, 4, 4)
    # gradient accumulation: .grad kept between two backwards sums both, as PyTorch's does
    for _ in range(2):
        (embedding(w, ids, 0, pool) * up).sum().backward()
    ref = w.detach().clone().requires_grad_()
    for _ in range(2):
        (F.embedding(ids, ref, 0) * up).sum().backward()
    assert torch.equal(w.grad, ref.grad)
    # gradients returned by autograd.grad and held (as a combiner holds each task's) stay as they were
    w.grad = None
    (g1,) = torch.autograd.grad((embedding(w, ids, 0, pool) * up).sum(), [w])
    kept = g1.clone()
    (g2,) = torch.autograd.grad((embedding(w, ids, 0, pool) * 3 * up).sum(), [w])
    assert torch.equal(g1, kept) and torch.allclose(g2, 3 * kept)
    # a copied model gets its own empty buffer
    assert copy.deepcopy(pool).buf is None


def test_no_buffer_without_a_backward():
    model = fast.install(BertModel(TINY_BERT), "cpu")
    ids, mask, _ = batch(0)
    with torch.no_grad():
        model(ids, mask)
    model.embeddings.word_embeddings.weight.requires_grad_(False)  # freeze_word_embeddings
    model(ids, mask).last_hidden_state.sum().backward()
    assert model.embeddings.word_embeddings.grad_buffer.buf is None
