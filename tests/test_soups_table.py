"""scripts/soups_table.py: docs/RESULTS.md's soups table from a study record, on a record written by hand."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("soups_table", ROOT / "scripts" / "soups_table.py")
soups_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soups_table)


def dev(sst: float, quora: float = 0.8, sts: float = 0.9) -> dict:
    return {"sst/acc": sst, "quora/acc": quora, "sts/pearson": sts, "overall": (sst + quora + sts) / 3}


def write(path: Path, obj: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(obj))


def soup(record: Path, name: str, seed: int, sst: float, runs: dict[str, float]) -> None:
    """One group's soups; each ingredient run VARIANT/seedK kept in the record with dev SST `runs[VARIANT]`."""
    ingredients = {}
    for variant, run_sst in runs.items():
        write(record / "w" / variant / f"seed{seed}", {"dev": dev(run_sst)})
        ingredients[f"runs/study/w/{variant}/seed{seed}"] = dev(run_sst)["overall"]
    for i, kind in enumerate(("uniform", "greedy", "ensemble")):
        write(record / "soups" / name / kind, {"dev": dev(sst + i / 100), "ingredients": ingredients})


def test_best_single_and_the_mean_over_seeds_by_hand(tmp_path):
    soup(tmp_path, "variants8-seed1", 1, 0.50, {"a": 0.40, "b": 0.46, "c": 0.44})
    soup(tmp_path, "variants8-seed2", 2, 0.52, {"a": 0.48, "b": 0.42, "c": 0.41})
    soup(tmp_path, "baseline-seeds", 1, 0.30, {"a": 0.40})
    (tmp_path / "soups" / "unfinished" / "uniform").mkdir(parents=True)  # no summary: left out
    rows = soups_table.table(tmp_path).splitlines()
    assert len(rows) == 2 + 2 * 4 and not any("unfinished" in r for r in rows)
    # the best single run of each seed (b at seed 1: 0.46, a at seed 2: 0.48): mean 0.47, sample std 0.0141
    assert rows[2].startswith("| baseline-seeds | 1 | best single run | 0.4000 | 0.8000 | 0.9000 |")
    assert rows[6].startswith("| variants8 | 2 | best single run | 0.4700 ± 0.0141 | 0.8000 ± 0.0000 |")
    # uniform soups 0.50 and 0.52; the greedy ones 0.01 above them
    assert rows[7].startswith("| variants8 | 2 | uniform soup | 0.5100 ± 0.0141 |")
    assert rows[8].startswith("| variants8 | 2 | greedy soup (on dev) | 0.5200 ± 0.0141 |")


def test_a_run_s_last_epochs_sit_beside_the_run_itself(tmp_path):
    # --last K soups name epoch checkpoints as ingredients: the best single run is the run they come from
    for seed, (run_sst, sst) in enumerate(((0.40, 0.41), (0.44, 0.47)), start=1):
        run = f"runs/study/w/keep/seed{seed}"
        write(tmp_path / "w" / "keep" / f"seed{seed}", {"dev": dev(run_sst)})
        epochs = {f"{run}/checkpoints/epoch-0000000{e}": dev(run_sst - e / 100)["overall"] for e in (2, 3)}
        for i, kind in enumerate(("last2", "last3")):
            write(
                tmp_path / "soups" / f"last-epochs-seed{seed}" / kind,
                {"dev": dev(sst + i / 100), "ingredients": epochs},
            )
    write(tmp_path / "soups" / "last-epochs-seed3" / "last2", {"dev": dev(0.9), "ingredients": {}})  # no last3 yet
    rows = soups_table.table(tmp_path).splitlines()
    assert len(rows) == 2 + 3
    assert rows[2].startswith("| last-epochs | 2 | the run itself (its best epoch) | 0.4200 ± 0.0283 |")
    assert rows[3].startswith("| last-epochs | 2 | average of its last 2 epochs | 0.4400 ± 0.0424 |")
    assert rows[4].startswith("| last-epochs | 2 | average of its last 3 epochs | 0.4500 ± 0.0424 |")
