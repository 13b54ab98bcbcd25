"""`cikg demo`, the README's first command, end to end on a small synthetic default (a real subprocess)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

PNGS = ("degrees.png", "valid_metrics.png", "cikgrec_loss_terms.png", "mask_rate.png", "groups.png")


def test_demo_runs_the_pipeline_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "cikg", "demo", "--out", str(out), "--users", "300", "--items", "150",
                           "--epochs", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "report:" in proc.stdout
    rows = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()
            if line.startswith(("LightGCN", "CIKGRec"))}
    assert set(rows) == {"LightGCN", "CIKGRec"}
    for values in rows.values():
        recall20, ndcg20 = float(values[0]), float(values[1])
        assert 0.0 < recall20 <= 1.0 and 0.0 < ndcg20 <= 1.0  # trained models rank some test items
    report = (out / "report.md").read_text()
    for section in ("## Steps", "## Interests", "## The CIKG", "## Results", "## Users by activity"):
        assert section in report
    assert "not an LLM" in report
    clusters = int(re.search(r"interest clusters kept: (\d+)", report).group(1))
    assert clusters > 0
    for name in PNGS:
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000, name
        assert f"({name})" in report
    # every artifact of the pipeline is there to reload
    for artifact in ("data/train.txt", "cikg.pt", "runs/CIKGRec/metrics.json", "runs/LightGCN/metrics.json"):
        assert (out / artifact).is_file(), artifact
    assert any(Path(out / "interests").glob("user_interest_clustered.txt"))
