import logging
import random

import pytest

from minbert.data import (
    DATASETS,
    Tokenizer,
    bucket_batches,
    load_split,
    pad,
    padding_fraction,
    read_predictions,
    token_batches,
    write_predictions,
)
from minbert.data.readers import read_examples
from minbert.errors import MinbertError

SST = DATASETS["sst"]
QUORA = DATASETS["quora"]


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_real_files_load_with_expected_counts(data_root):
    assert len(load_split(SST, "train", data_root)) == 8544
    assert len(load_split(SST, "test", data_root)) == 2210
    assert load_split(SST, "test", data_root)[0].label is None
    sts = load_split(DATASETS["sts"], "dev", data_root)
    assert len(sts) == 863 and all(0.0 <= e.label <= 5.0 and len(e.texts) == 2 for e in sts)


def test_real_quora_dirty_rows_are_skipped_with_file_and_line(data_root, caplog):
    with caplog.at_level(logging.WARNING):
        dev = load_split(QUORA, "dev", data_root)
    assert len(dev) == 4049  # 4050 rows, one with an empty label
    assert "quora-dev-from-dev.csv:544: skipped malformed row: empty label" in caplog.text
    assert all(e.label in (0, 1) for e in dev)


def test_real_quora_dirty_row_is_fatal_when_strict(data_root):
    with pytest.raises(MinbertError, match=r"quora-dev-from-dev.csv:544: malformed row"):
        load_split(QUORA, "dev", data_root, strict=True)


def test_malformed_row_names_file_line_and_reason(tmp_path, caplog):
    p = write(
        tmp_path,
        "s.csv",
        "\tid\tsentence\tsentiment\n0\ta1\t good film\t3\n1\ta2\t bad\t\n2\ta3\t\t1\n3\ta4\tok\tx\n4\ta5\tfine\t2\n",
    )
    with caplog.at_level(logging.WARNING):
        ex = read_examples(p, ("sentence",), SST.label)
    assert [e.id for e in ex] == ["a1", "a5"]
    assert ex[0].texts == ("good film",) and ex[0].label == 3
    assert f"{p}:3: skipped malformed row: empty label" in caplog.text
    assert f"{p}:4: skipped malformed row: empty 'sentence'" in caplog.text
    assert f"{p}:5: skipped malformed row: label 'x'" in caplog.text


def test_missing_file(tmp_path):
    with pytest.raises(MinbertError, match="no such file"):
        read_examples(tmp_path / "nope.csv", ("sentence",), SST.label)


def test_wrong_header(tmp_path):
    p = write(tmp_path, "s.csv", "\tid\ttext\tlabel\n0\ta\tb\t1\n")
    with pytest.raises(MinbertError, match=r"expected columns id, sentence, sentiment; found id, text, label"):
        read_examples(p, ("sentence",), SST.label)


def test_out_of_range_label_is_an_error_with_line(tmp_path):
    p = write(tmp_path, "s.csv", "\tid\tsentence\tsentiment\n0\ta\tfine\t2\n1\tb\tgreat\t7\n")
    with pytest.raises(MinbertError, match=r"s.csv:3: label 7 is outside 0..4"):
        read_examples(p, ("sentence",), SST.label)


def test_sst_file_given_to_binary_task_is_refused(data_root):
    with pytest.raises(MinbertError, match="outside 0..1"):
        read_examples(data_root / "ids-sst-dev.csv", ("sentence",), DATASETS["cfimdb"].label)


def test_missing_split_names_the_files(tmp_path):
    with pytest.raises(MinbertError, match="no quora train file .quora-train.csv or quora-train-from-dev.csv"):
        load_split(QUORA, "train", tmp_path)


def test_prediction_files_round_trip(tmp_path):
    p = tmp_path / "predictions" / "sst-dev-out.csv"
    write_predictions(p, "Predicted_Sentiment", ["x1", "x2"], [3, 0])
    assert p.read_text() == "id \t Predicted_Sentiment \nx1 , 3 \nx2 , 0 \n"
    assert read_predictions(p) == {"x1": "3", "x2": "0"}


def test_tokenizer_matches_transformers(data_root, ckpt):
    import transformers

    ref = transformers.BertTokenizerFast.from_pretrained(ckpt)
    tok = Tokenizer.from_pretrained(ckpt)
    sents = [e.texts for e in load_split(DATASETS["sts"], "dev", data_root)[:50]]
    a, b = [s[0] for s in sents], [s[1] for s in sents]
    assert tok.encode(a, 128) == ref(a, truncation=True, max_length=128)["input_ids"]
    ids, types = tok.encode_pairs(a, b, 48)
    r = ref(a, b, truncation=True, max_length=48)
    assert ids == r["input_ids"] and types == r["token_type_ids"]


def test_pair_token_types(ckpt):
    tok = Tokenizer.from_pretrained(ckpt)
    ids, types = tok.encode_pairs(["a cat"], ["the dog ran"], 64)
    assert ids[0][0] == tok.cls_id and ids[0].count(tok.sep_id) == 2
    assert types[0] == [0, 0, 0, 0, 1, 1, 1, 1]  # [CLS] a cat [SEP] | the dog ran [SEP]


def test_bucketing_covers_every_index_once_and_pads_less():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(5000)]
    batches = bucket_batches(lengths, 32, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(5000))
    shuffled = list(range(5000))
    random.Random(1).shuffle(shuffled)
    plain = [shuffled[i : i + 32] for i in range(0, 5000, 32)]
    assert padding_fraction(lengths, batches) < padding_fraction(lengths, plain) / 3
    assert bucket_batches(lengths, 32, random.Random(1)) == batches  # seeded


def test_token_batches_by_hand():
    # one chunk, sorted ascending: three of length 2 fit 8 tokens (3 x 2 = 6), the fourth (4 x 10 = 40) opens its
    # own batch, alone though over budget; with two inputs per example (pairs) two of length 2 fill 2 x 2 x 2 = 8
    got = token_batches([2, 10, 2, 2], 8, random.Random(0))
    assert sorted(sorted(b) for b in got) == [[0, 2, 3], [1]]
    got = token_batches([2, 10, 2, 2], 8, random.Random(0), inputs=2)
    assert sorted(len(b) for b in got) == [1, 1, 2] and sorted(i for b in got for i in b) == [0, 1, 2, 3]


def test_token_batches_cover_every_index_once_within_the_budget():
    rng = random.Random(0)
    lengths = [rng.randint(3, 120) for _ in range(3000)]
    for tokens, inputs in ((512, 1), (1024, 2), (100, 1)):
        batches = token_batches(lengths, tokens, random.Random(1), inputs)
        assert sorted(i for b in batches for i in b) == list(range(3000))
        assert all(len(b) == 1 or len(b) * inputs * max(lengths[i] for i in b) <= tokens for b in batches)
        assert token_batches(lengths, tokens, random.Random(1), inputs) == batches  # seeded
        # filled: merging two neighbours in length order would break the budget (batches are not needlessly small)
        sizes = [len(b) * inputs * max(lengths[i] for i in b) for b in batches]
        assert sum(sizes) / len(sizes) > tokens / 2


def test_a_token_batch_stream_resumes_where_it_stopped_across_passes():
    from minbert.multitask.data import BatchStream

    rng = random.Random(0)
    lengths = [rng.randint(3, 90) for _ in range(500)]
    a = BatchStream("sst", lengths, 32, 7, tokens=200)
    passes = [a.batches(p) for p in range(4)]  # each pass's batches, drawn from (seed, task, pass)
    assert len({len(b) for b in passes}) > 1  # passes of 140 and 141 batches
    first = [a.next() for _ in range(3 * a.per_pass + 5)]  # into the fourth pass
    assert first == [b for batches in passes for b in batches][: len(first)]  # every batch of every pass, in order
    for k in (0, 1, a.per_pass, a.per_pass + 1, 2 * a.per_pass + 3):
        b = BatchStream("sst", lengths, 32, 7, consumed=k, tokens=200)
        assert [b.next() for _ in range(len(first) - k)] == first[k:], k
    # by examples, as before: every pass the same number of batches, a pass's batches from (seed, task, pass)
    c = BatchStream("sst", lengths, 32, 7)
    assert [c.next() for _ in range(c.per_pass + 1)] == bucket_batches(lengths, 32, random.Random("7/sst/0")) + [
        bucket_batches(lengths, 32, random.Random("7/sst/1"))[0]
    ]


def test_pad_is_dynamic():
    ids, mask = pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_byte_order_mark_is_dropped_and_undecodable_bytes_name_their_line(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("id\tsentence\tsentiment\na1\tgood\t3\n".encode("utf-8-sig"))  # no index column, BOM first
    assert [e.id for e in read_examples(p, ("sentence",), SST.label)] == ["a1"]
    p.write_bytes(b"\tid\tsentence\tsentiment\n0\ta1\tgood\t3\n1\ta2\tcaf\xe9\t2\n")  # Latin-1 on line 3
    with pytest.raises(MinbertError, match=r"bom.csv:3: byte 0xe9 is not UTF-8; save the data file as UTF-8"):
        read_examples(p, ("sentence",), SST.label)


def test_every_test_id_is_kept_and_repeated_ids_are_warned_about(tmp_path, caplog):
    p = write(tmp_path, "t.csv", "\tid\tsentence1\tsentence2\n0\tq1\ta cat\ta dog\n1\tq2\t\ta bird\n2\tq1\tx\ty\n")
    with caplog.at_level(logging.WARNING):
        ex = read_examples(p, ("sentence1", "sentence2"), None)
    assert [e.id for e in ex] == ["q1", "q2", "q1"] and ex[1].texts == ("", "a bird")
    assert f"{p}:3: empty 'sentence1'; predicted on the text there is" in caplog.text
    assert "1 id(s) appear more than once (e.g. q1)" in caplog.text
    with pytest.raises(MinbertError, match="malformed row: empty 'sentence1'"):
        read_examples(p, ("sentence1", "sentence2"), None, strict=True)
