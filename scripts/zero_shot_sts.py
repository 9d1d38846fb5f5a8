"""STS-B dev Pearson r of a checkpoint before any training: the cosine of two sentences' embeddings against the
0-5 label, for mean pooling and for BERT's pooler output (docs/REPORTS.md: why a cosine STS loss starts high here).

    python scripts/zero_shot_sts.py [CHECKPOINT]       # default: the embedded all-MiniLM-L6-v2
"""

from __future__ import annotations

import sys

import torch

from minbert.data.readers import LabelSpec, data_dir, float_label, read_examples
from minbert.data.tokenizer import Tokenizer
from minbert.model import BertModel
from minbert.model.loading import resolve_checkpoint


def embed(model, tok, sentences: list[str]) -> dict[str, torch.Tensor]:
    means, pooled = [], []
    for i in range(0, len(sentences), 64):
        ids = [torch.tensor(x) for x in tok.encode(sentences[i : i + 64], 128)]
        batch = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True, padding_value=tok.pad_id)
        mask = (batch != tok.pad_id).long()
        out = model(batch, mask)
        hidden, pool = out[0], out[1]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        means.append((hidden * m).sum(1) / m.sum(1))
        pooled.append(pool)
    return {"mean pooling": torch.cat(means), "pooler output": torch.cat(pooled)}


@torch.no_grad()
def main(argv: list[str]) -> int:
    path = resolve_checkpoint(argv[0] if argv else "default")
    model, tok = BertModel.from_pretrained(path).eval(), Tokenizer.from_pretrained(path)
    rows = read_examples(
        data_dir() / "sts-dev.csv", ("sentence1", "sentence2"), LabelSpec("similarity", float_label, 0, 5)
    )
    labels = torch.tensor([r.label for r in rows], dtype=torch.float64)
    a, b = embed(model, tok, [r.texts[0] for r in rows]), embed(model, tok, [r.texts[1] for r in rows])
    where = argv[0] if argv else "the embedded all-MiniLM-L6-v2"
    print(f"{where}: STS-B dev ({len(rows)} pairs), Pearson r of cos(u, v) with the label, no training")
    for name in a:
        cos = torch.nn.functional.cosine_similarity(a[name], b[name]).double()
        r = torch.corrcoef(torch.stack([cos, labels]))[0, 1].item()
        print(f"  {name}: {r:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
