"""The claims study's runs of reports 000, 002, 003 and 004 as their logs recorded them: their run folders were lost
with the machine that held them (session 28), their logs were not. For each run that finished ("wall time ...") this
writes NNN-1000steps/ROW/seedN/summary.json with the dev metrics of its best epoch, the last epoch line marked
"(best)", as the log printed them (4 decimals), and every epoch's line; no metrics.jsonl (the logs hold no gradient
statistics). Reads the study's logs in the order they were written (a resumed run continues in a later log):

    python docs/study/reports/record/from-logs.py LOG [LOG ...]
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).parent
EPOCH = re.compile(r"epoch (\d+)/(\d+)\s+((?:[a-z]+/[a-z]+ -?[\d.]+\s+)+)overall (-?[\d.]+)\s*(\(best\))?")
RUN = re.compile(r"INFO: run directory: runs/reports/(\S+)")
DONE = re.compile(r"wall time (\d+)s, (\d+) steps; predictions in runs/reports/(\S+)/predictions")

runs: dict[str, dict] = {}
for log in sys.argv[1:]:
    current = None
    for line in re.split(r"[\r\n]", Path(log).read_text(errors="replace")):
        if m := RUN.search(line):
            current = m.group(1)
            runs.setdefault(current, {"epochs": {}, "marked": {}, "logs": []})["logs"].append(Path(log).name)
        elif (m := EPOCH.search(line)) and current:
            dev = {k: float(v) for k, v in re.findall(r"([a-z]+/[a-z]+) (-?[\d.]+)", m.group(3))}
            dev["overall"] = float(m.group(4))
            epoch = int(m.group(1))
            runs[current]["epochs"][epoch] = dev
            runs[current]["marked"][epoch] = bool(m.group(5))  # an epoch run again after a resume: its last line
        elif m := DONE.search(line):
            assert m.group(3) == current, (log, m.group(3), current)
            runs[current].update(wall_s=int(m.group(1)), steps=int(m.group(2)))
written = 0
for name, r in sorted(runs.items()):
    if "steps" not in r or name.startswith("001-"):
        continue
    epochs = max(r["epochs"])
    assert sorted(r["epochs"]) == list(range(1, epochs + 1)), (name, sorted(r["epochs"]))
    best = max(e for e, marked in r["marked"].items() if marked)  # the last epoch marked "(best)"
    summary = {
        "best_epoch": best,
        "dev": r["epochs"][best],
        "steps": r["steps"],
        "wall_s": r["wall_s"],
        "from_logs": r["logs"],
        "epochs": {str(k): v for k, v in sorted(r["epochs"].items())},
    }
    out = HERE / name
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    written += 1
print(f"{written} runs written under {HERE}")
