"""The report renders a table, learning curves, throughput and overlays from tiny result files."""

import numpy as np
import pandas as pd

from cryoet_monai.cli import main
from cryoet_monai.report import load_results, summary_markdown


def tiny_results(root):
    rows = [{"method": "blob floor", "budget": "0 labels", "seed": 0, "score": 0.1, "mean_f1": 0.05, "f1:ribosome": 0.1}]
    for budget, base in (("1%", 0.3), ("10%", 0.6), ("shots5", 0.4)):
        for seed in (0, 1):
            for method, gain in (("supervised", 0.0), ("teacher-student", 0.1)):
                f1 = base + gain + 0.02 * seed
                rows.append({"method": method, "budget": budget, "seed": seed, "score": f1 + 0.05, "mean_f1": f1, "f1:ribosome": f1})
    (root / "label_efficiency").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "label_efficiency" / "results_cpu.csv", index=False)
    (root / "throughput").mkdir()
    pd.DataFrame([{"bundle": "semietpicker", "device": "cpu", "plain_s": 100.0, "bundle_s": 20.0, "speedup": 5.0}]).to_csv(root / "throughput" / "results_cpu.csv", index=False)


def test_summary_averages_over_seeds(tmp_path):
    tiny_results(tmp_path)
    frame = load_results(tmp_path / "label_efficiency" / "results_cpu.csv")
    table = summary_markdown(frame)
    assert "| 1% | teacher-student | 2 | 0.460 ± 0.010 | 0.410 ± 0.010 | 0.41 |" in table
    assert "| 0 labels | blob floor | 1 | 0.100 | 0.050 | 0.10 |" in table
    np.testing.assert_allclose(sorted(frame.x.unique()), [0, 1, 5, 10])


def test_report_command_writes_markdown_and_figures(tmp_path):
    tiny_results(tmp_path / "benchmarks")
    from PIL import Image

    Image.new("RGB", (20, 20)).save(tmp_path / "benchmarks" / "label_efficiency" / "overlay_test.png")
    nested = tmp_path / "benchmarks" / "few_shot" / "results"
    nested.mkdir(parents=True)
    pd.DataFrame([{"shots": 3, "seed": 0, "method": "plain U-Net", "score": 0.2, "mean_f1": 0.1, "F1 ribosome": 0.7}]).to_csv(nested / "results.csv", index=False)
    (tmp_path / "benchmarks" / "transfer").mkdir()
    transfer = {"method": ["semietpicker (shipped)"], "data": ["external"], "czii_score": [0.5955], "mean_f1": [0.3164], "ribosome f1": [0.4777], "ribosome recall": [0.974]}
    pd.DataFrame(transfer).to_csv(tmp_path / "benchmarks" / "transfer" / "results.csv", index=False)
    (tmp_path / "benchmarks" / "micrographs").mkdir()
    (tmp_path / "benchmarks" / "micrographs" / "results.md").write_text("| a |\n")
    assert main(["report", "--out", str(tmp_path / "report"), "--benchmarks", str(tmp_path / "benchmarks")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    figures = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert figures == ["few_shot_results_curves.png", "label_efficiency_overlay_test.png", "label_efficiency_results_cpu_curves.png", "throughput_results_cpu.png"]
    for name in figures:
        assert f"figures/{name}" in text
    assert "| semietpicker | cpu | 100 | 20 | 5 |" in text
    assert "[micrographs/results.md](../benchmarks/micrographs/results.md)" in text
    assert "| shots3 | plain U-Net | 1 | 0.200 | 0.100 | 0.70 |" in text
    assert "| semietpicker (shipped) | external | 0.596 | 0.316 | 0.478 |" in text  # recall and precision left out
