"""WordPiece tokenization from a checkpoint's `vocab.txt`, with the Rust `tokenizers` library.

Lower-casing and accent stripping follow the checkpoint's `tokenizer_config.json` (`do_lower_case`, default true),
so cased checkpoints keep their case.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers.implementations import BertWordPieceTokenizer

from minbert.errors import MinbertError
from minbert.files import read_json


class Tokenizer:
    def __init__(self, vocab_file: str | Path, lowercase: bool = True, strip_accents: bool | None = None):
        vocab_file = Path(vocab_file)
        if not vocab_file.is_file():
            raise MinbertError(f"{vocab_file}: no vocab.txt; the checkpoint directory needs one for WordPiece")
        self.lowercase = lowercase
        try:
            self._tok = BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase, strip_accents=strip_accents)
        except Exception as e:  # the Rust library's own error type: an unreadable or malformed file
            raise MinbertError(f"{vocab_file}: not a readable WordPiece vocabulary ({e}); restore it") from None
        self.pad_id = self._tok.token_to_id("[PAD]")
        self.cls_id = self._tok.token_to_id("[CLS]")
        self.sep_id = self._tok.token_to_id("[SEP]")
        if None in (self.pad_id, self.cls_id, self.sep_id):
            raise MinbertError(f"{vocab_file}: vocabulary lacks [PAD], [CLS] or [SEP]")

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path) -> "Tokenizer":
        d = Path(checkpoint_dir)
        cfg, path = {}, d / "tokenizer_config.json"
        if path.exists():
            cfg = read_json(path, "tokenizer config", dict, "restore it from the checkpoint, or remove it")
        lower, strip = cfg.get("do_lower_case", True), cfg.get("strip_accents")
        if not isinstance(lower, bool) or not (strip is None or isinstance(strip, bool)):
            raise MinbertError(f"{path}: do_lower_case must be true or false, and strip_accents true, false or null")
        return cls(d / "vocab.txt", lowercase=lower, strip_accents=strip)

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        """[CLS] text [SEP] for each text, truncated to max_length tokens."""
        self._tok.enable_truncation(max_length)
        return [e.ids for e in self._tok.encode_batch(texts)]

    def encode_pairs(self, a: list[str], b: list[str], max_length: int) -> tuple[list[list[int]], list[list[int]]]:
        """[CLS] a [SEP] b [SEP] with token types 0 for a and 1 for b (cross-encoder input)."""
        self._tok.enable_truncation(max_length)  # longest-first: trims the longer sentence first
        enc = self._tok.encode_batch(list(zip(a, b)))
        return [e.ids for e in enc], [e.type_ids for e in enc]
