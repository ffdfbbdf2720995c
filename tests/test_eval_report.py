"""metrics.json / metrics.md and the PNG figures."""

from __future__ import annotations

import json

import torch

from open_videoprism.eval.plots import plot_confusion_matrix, plot_retrieval_examples, plot_training_curves
from open_videoprism.eval.report import markdown_table, write_report


def test_report_files_and_markdown(tmp_path):
    write_report(tmp_path, "probe", {"top1": 50.0, "mAP": float("nan"), "num_test": 4},
                 chance={"top1": 25.0}, extra={"checkpoint": "ck.safetensors", "seed": 1})
    payload = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN became null
    assert payload["metrics"] == {"top1": 50.0, "mAP": None, "num_test": 4}
    assert payload["chance"] == {"top1": 25.0} and payload["seed"] == 1
    md = (tmp_path / "metrics.md").read_text()
    assert "| top1 | 50.00 | 25.00 |" in md and "| num_test | 4 |  |" in md and "ck.safetensors" in md
    assert markdown_table({"a": 1.0}) == "| metric | value |\n|---|---:|\n| a | 1.00 |\n"
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_figures_are_written(tmp_path):
    cm = torch.tensor([[3, 1], [0, 4]])
    names = ["left", "right"]
    paths = [
        plot_confusion_matrix(cm, names, tmp_path / "cm.png"),
        plot_retrieval_examples(["a red square", "a blue star"], [[0, 1], [1, 0]], [0, 0],
                                torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8), tmp_path / "ret.png"),
        plot_training_curves({"loss": [2.0, 1.0, 0.5], "lr": [1e-3, 5e-4, 0.0], "val_accuracy": []}, tmp_path / "curves.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
