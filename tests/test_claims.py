"""scripts/claims.py: the claims study's verdict rules on hand-worked cases, and docs/study/reports/claims.yaml naming
rows that exist in the reports' sweep files."""

import importlib.util
import math
from pathlib import Path

import pytest

from minbert.config import load_yaml
from minbert.errors import MinbertError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("claims", ROOT / "scripts" / "claims.py")
claims = importlib.util.module_from_spec(spec)
spec.loader.exec_module(claims)


def test_difference_and_its_standard_error_by_hand():
    # a: mean 0.5, sample var ((-.01)^2 + 0 + .01^2) / 2 = 1e-4; b: mean 0.53, sample var 4e-4
    d, se = claims.difference([0.49, 0.50, 0.51], [0.51, 0.53, 0.55])
    assert d == pytest.approx(0.03)
    assert se == pytest.approx(math.sqrt(1e-4 / 3 + 4e-4 / 3))  # population variances would give a smaller se


A = [0.49, 0.50, 0.51]


@pytest.mark.parametrize(
    "b, expect, large, verdict",
    [
        ([0.51, 0.53, 0.55], "higher", False, "agrees"),  # +0.03, se 0.0129: beyond twice it
        ([0.51, 0.53, 0.55], "lower", False, "disagrees (the other way, beyond noise)"),
        ([0.45, 0.47, 0.49], "higher", True, "disagrees (the other way, beyond noise)"),
        ([0.49, 0.51, 0.53], "higher", False, "no difference here"),  # +0.01, se 0.0129
        ([0.50, 0.52, 0.54], "higher", False, "no difference here"),  # +0.02: beyond one se, not two
        ([0.49, 0.51, 0.53], "higher", True, "disagrees (no difference here)"),
        ([0.49, 0.51, 0.53], "same", False, "agrees (no difference here)"),
        ([0.51, 0.53, 0.55], "same", False, "disagrees (a difference beyond noise)"),
    ],
)
def test_verdicts_by_hand(b, expect, large, verdict):
    assert claims.verdict(A, b, expect, large, seeds=3, floor=None) == verdict


def test_no_verdict_before_every_seed():
    assert claims.verdict(A, [0.6, 0.6], "higher", True, seeds=3, floor=None) == "pending (3 and 2 of 3 seeds)"


def test_both_rows_at_the_majority_class_cannot_be_tested():
    at = [0.6219, 0.6219, 0.6219]
    v = claims.verdict(at, [0.6219, 0.6224, 0.6219], "lower", True, seeds=3, floor=0.6219)
    assert v.startswith("cannot be tested")
    # one side off the floor: an ordinary verdict
    assert claims.verdict(at, [0.70, 0.71, 0.72], "higher", True, seeds=3, floor=0.6219) == "agrees"


def test_majority_share_counts_the_dev_labels(tmp_path):
    (tmp_path / "quora-dev-from-dev.csv").write_text(
        "\tid\tsentence1\tsentence2\tis_duplicate\n0\ta\tx\ty\t0.0\n1\tb\tx\ty\t1.0\n2\tc\tx\ty\t0.0\n3\td\tx\ty\t0.0\n"
    )
    assert claims.majority_share(tmp_path, "quora/acc") == 0.75
    assert claims.majority_share(tmp_path, "sts/pearson") is None  # not an accuracy
    assert claims.majority_share(tmp_path, "sst/acc") is None  # no file


def test_every_claim_names_rows_of_its_report():
    for c in load_yaml(ROOT / "docs" / "study" / "reports" / "claims.yaml")["claims"]:
        variants = load_yaml(ROOT / "configs" / "reports" / f"{c['report']}.yaml")["variants"]
        assert len(c["rows"]) == 2 and all(r in variants for r in c["rows"]), c
        assert c["metric"] in claims.TITLES and c["expect"] in claims.EXPECT, c


def test_update_replaces_only_its_block(tmp_path):
    doc = tmp_path / "REPORTS.md"
    doc.write_text(
        "intro\n<!-- scripts/claims.py: table -->\nold table\n<!-- end -->\nmiddle\n"
        "<!-- scripts/claims.py: gradvac -->\nold counts\n<!-- end -->\nend\n"
    )
    claims.update(doc, "table", "| new |")
    assert doc.read_text() == (
        "intro\n<!-- scripts/claims.py: table -->\n| new |\n<!-- end -->\nmiddle\n"
        "<!-- scripts/claims.py: gradvac -->\nold counts\n<!-- end -->\nend\n"
    )
    with pytest.raises(claims.MinbertError, match="no lines"):
        claims.update(tmp_path / "REPORTS.md", "other", "x")


def test_rankings_order_rows_and_tau_by_hand(tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    claims._sweep.cache_clear()
    sweep = claims._sweep(Path("configs/reports/004.yaml"), 1000, (1, 2), ())
    # report 004's published order: dynamic-0-0.05 > static-0 > gradient-surgery > baseline; ours swaps the first two
    # (one discordant pair of six: tau = (5 - 1) / 6) and leaves the rows without published numbers out
    ours = {"dynamic-0-0.05": 0.60, "static-0": 0.62, "gradient-surgery": 0.55, "baseline": 0.50}
    for name, seed, run, _ in sweep.runs():
        if name in ours:
            run.mkdir(parents=True)
            dev = {"sst/acc": 0.3, "quora/acc": 0.7, "sts/pearson": 0.8, "overall": ours[name] + 0.01 * (seed - 1.5)}
            (run / "summary.json").write_text(json.dumps({"dev": dev}))
    md = claims.rankings(1000, [1, 2])
    block = md.split("**004**")[1]
    lines = [line for line in block.splitlines() if line.startswith("| ")][1:]  # the rows, after the header
    rows = [line.split(" | ")[0].strip("| ") for line in lines]
    assert rows == ["dynamic-0-0.05", "static-0", "gradient-surgery", "baseline"]
    assert "| dynamic-0-0.05 | 0.503 / 0.479 / 0.880 | 0.641 | 1 | 0.300 / 0.700 / 0.800 | 0.6000 ± 0.0071 | 2 |" in md
    assert "Kendall's tau over 4 rows: +0.67" in md
    assert "**000**: no row has all 2 seeds yet." in md
    claims._sweep.cache_clear()


def test_record_reads_the_kept_copies(tmp_path, monkeypatch):
    # --record reads the runs from the study's record (`minbert sweep --record`'s copies) once the run folders are
    # gone (a claims.py that read the run folders instead would find nothing here)
    import json
    import shutil

    from minbert.sweep import keep

    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    claims._sweep.cache_clear()
    sweep = claims._sweep(Path("configs/reports/003.yaml"), 1000, (1,), ())
    for name, _, run, _ in sweep.runs():
        if name in ("naive", "gradvac"):
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps({"dev": {"overall": 0.5 if name == "naive" else 0.6}}))
            (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "epoch": 1, "gradvac/l0/altered": 3}) + "\n")
    assert sorted(r.parent.name for r in keep(sweep, Path("record"))) == ["gradvac", "naive"]
    assert (Path("record") / "003-1000steps" / "gradvac" / "seed1" / "metrics.jsonl").is_file()
    shutil.rmtree("runs")
    try:
        claims.RECORD = Path("record")
        assert claims.values(Path("configs/reports/003.yaml"), 1000, [1], "gradvac", "overall") == [0.6]
        assert claims.values(Path("configs/reports/003.yaml"), 1000, [1], "pals", "overall") == []
        assert "gradvac 1, naive 1" in claims.gradvac_counts(1000, [1])
        (Path("record") / "003-1000steps" / "naive" / "seed1" / "metrics.jsonl").unlink()  # counts it cannot give
        with pytest.raises(MinbertError, match="naive/seed1: no metrics.jsonl"):
            claims.gradvac_counts(1000, [1])
    finally:
        claims.RECORD = None
        claims._sweep.cache_clear()
