"""Tests of the metric table (bench.metrics.table) and the Evaluator that computes it."""

import pandas as pd
import pytest
import torch

from bench import metrics as M
from bench.config import EvalConfig
from bench.evaluate import Evaluator
from bench.metrics import table as T
from bench.run import main
from tests.helpers import SMOKE

TOY = "toy_mean_pixel"


def mean_pixel(samples: torch.Tensor) -> float:
    """The toy metric: the mean pixel of the samples at T = 1."""
    return float(samples.mean())


def test_a_metric_added_with_one_function_and_one_table_line_reaches_metrics_csv_and_table1(tmp_path):
    from bench.report.headline import report_inputs
    from bench.report.selection import load_table
    from bench.report.table import build_table1, table1_markdown

    line = T.Metric(TOY, ("samples",), mean_pixel, "{n} samples at T = 1; mean pixel", table1=9)
    with T.registered(line):
        assert main(["--config", SMOKE, "--models", "vae", "--seeds", "1", "--out", str(tmp_path),
                     "--no-progress"]) == 0
        table = load_table(tmp_path)
        configs, sel, logs = report_inputs(tmp_path, table, "mnist")
        t1 = build_table1(table, sel, configs, logs)
        md = table1_markdown(t1, sel)
    assert TOY not in T.table1_metrics() and line not in T.METRICS  # cleaned up after
    rows = pd.read_csv(tmp_path / "metrics.csv")
    toy = rows[rows["metric"] == TOY]
    assert len(toy) == 1 and toy["model"].iloc[0] == "vae" and toy["note"].iloc[0] == "500 samples at T = 1; mean pixel"
    assert 0 < toy["value"].iloc[0] < 1
    vae = t1.frame.set_index("model").loc["vae"]
    assert vae[f"{TOY}_mean"] == toy["value"].iloc[0] and vae[f"{TOY}_n"] == 1
    header = next(line for line in md.splitlines() if line.startswith("|  | n |"))
    assert header.split("|")[-4].strip() == TOY  # the last metric column, before the convergence columns
    assert f"- `{TOY}`: 500 samples at T = 1; mean pixel" in md


@pytest.fixture(scope="module")
def collapse(mnist):
    """precision and recall (through the table) of a diverse and of a mode-collapsed "generator":
    500 training digits of every class, and 500 of one class only."""
    cfg = EvalConfig(batch_size=500, n_samples=500, test_subset=1000, kid_subset_size=100, kid_subsets=2)
    images = mnist.train_images.float() / 255
    evaluator = Evaluator()
    out = {}
    for name, x in (("diverse", images[:500]), ("collapsed", images[mnist.train_labels == 1][:500])):
        rows = {r.metric: r.value for r in evaluator.sample_rows(x, mnist, cfg, set_name=name)}
        out[name] = rows[M.PRECISION], rows[M.RECALL]
    return out


def test_a_mode_collapsed_generator_keeps_its_precision_and_loses_its_recall(collapse):
    """A known failure of other tools (precision and recall swapped): one digit class only is real
    looking (precision stays high) but covers a tenth of the real digits (recall falls)."""
    (p_diverse, r_diverse), (p_collapsed, r_collapsed) = collapse["diverse"], collapse["collapsed"]
    assert p_diverse > 0.85 and r_diverse > 0.85
    assert p_collapsed > 0.9 and p_collapsed > p_diverse - 0.05
    assert r_collapsed < 0.25 and r_collapsed < r_diverse - 0.6


def test_precision_recall_of_one_cluster_of_ten():
    """The same on the function: fake points near the real points of one of ten clusters."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 16, generator=g) * 10
    real = centres[torch.arange(1000) % 10] + torch.randn(1000, 16, generator=g)
    fake = real[::10] + 0.01 * torch.randn(100, 16, generator=g)  # cluster 0 only
    precision, recall = M.precision_recall(real, fake, 3)
    assert precision > 0.95 and recall < 0.2


def test_every_entry_names_inputs_its_function_takes_and_names_are_unique():
    from bench.eval_inputs import INPUTS

    names = [m.name for m in T.METRICS]
    assert len(set(names)) == len(names)
    for m in T.METRICS:
        assert set(m.needs) <= set(INPUTS), m.name
        assert m.fn.__code__.co_varnames[:m.fn.__code__.co_argcount] == m.needs, m.name
    assert T.table1_metrics()[0] == M.SHARPNESS
    assert T.judged_metrics() == (M.SHARPNESS, M.FD_LENET, M.RECON_MSE)
