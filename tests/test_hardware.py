"""cikg.train.hardware: where a run trained, as its metrics.json records it."""
from __future__ import annotations

import json

import torch

from cikg.train.hardware import cpu_name, describe_hardware, usable_cores


def test_a_cpu_run_names_the_cpu_its_cores_and_its_torch_threads():
    threads = torch.get_num_threads()
    text = describe_hardware(torch.device("cpu"))
    assert text == f"CPU: {cpu_name()} ({usable_cores()} cores, {threads} torch thread{'s' if threads > 1 else ''})"
    assert 1 <= usable_cores() and cpu_name()
    assert describe_hardware(torch.device("cpu"), world_size=4) == f"4 x {text}"


def test_a_trained_run_records_its_hardware(tmp_path):
    from cikg.cli import main

    assert main(["train", "-", "model.name=bprmf", "model.dim=8", "data.dataset=synthetic", "data.synthetic_users=60",
                 "data.synthetic_items=120", "train.epochs=1", "train.progress=false", "train.threads=1",
                 "--run-dir", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["hardware"].startswith("CPU: ") and "(" in metrics["hardware"]
