"""Why eps² barely matters to an affine PIE, checked numerically (docs/results.md "Does eps² matter?").

For a residual r of spread σ that a coupling scales by s before the split, the split term
plus the log-det of that scaling is -s²σ²/(2 eps²) - ½ log(2π eps²) + log s; at its best
s = √eps²/σ it equals -½ - ½ log(2πσ²), whatever eps². An additive coupling (s ≡ 1) cannot
rescale, so its optimum keeps the eps² dependence. Here a one-level flow made of the real
AffineCoupling and PseudoSplit is fitted by L-BFGS for two eps² values.

Also: the ablation switches work from the command line (one smoke sweep over pie.coupling).
"""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
import torch
from flow_helpers import DTYPE
from torch import nn

from bench import report
from bench.run import main as run_main
from bench.sync import replace_run_rows
from models.flows import AffineCoupling, PseudoSplit
from models.pie import PIE
from tests.helpers import SMOKE

SIGMA = 0.3  # std of the residual coordinate of the data
EPS2_VALUES = (0.01, 1.0)  # optimal s = √eps²/σ = 1/3 and 10/3, both inside the clamp e^±2


class FreeAffine(nn.Module):
    """A coupling sub-network that ignores its input: learned constants (log-scale, shift),
    so the coupling is a free elementwise affine map of each half."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(c_out, dtype=DTYPE))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.value.expand(h.shape[0], -1)


def data() -> torch.Tensor:
    """x = [z, r]: z ~ N(0.2, 0.7²) is kept, r ~ N(0.3, σ²) is discarded by the split."""
    gen = torch.Generator().manual_seed(0)
    z = 0.2 + 0.7 * torch.randn(4096, 1, generator=gen, dtype=DTYPE)
    r = 0.3 + SIGMA * torch.randn(4096, 1, generator=gen, dtype=DTYPE)
    return torch.cat([z, r], dim=1)


def fit(eps2: float, additive: bool) -> tuple[float, float, AffineCoupling]:
    """Maximise Eq. 17 of a one-level PIE (coupling, split keeping z, g ≡ 0) over the
    coupling's constants. Returns (best mean of residual term + log-det of the residual's
    scaling, best full objective, the fitted coupling)."""
    x = data()
    coupling = AffineCoupling((2,), FreeAffine, scale_clamp=2.0, additive=additive)
    split = PseudoSplit((2,), keep=1, eps2=eps2, g=None)

    def terms() -> tuple[torch.Tensor, torch.Tensor]:
        y, logdet = coupling(x)
        z, r, log_pr = split(y)
        log_s2 = coupling._scale_shift(coupling.net2, z, 1)[0][:, 0]  # log s of r's half (0 if additive)
        full = PIE._log_standard_normal(z) + log_pr + logdet
        return (log_pr + log_s2).mean(), full.mean()

    opt = torch.optim.LBFGS(coupling.parameters(), lr=1, max_iter=500, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -terms()[1]
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        resid, full = terms()
    return resid.item(), full.item(), coupling


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest.one_thread)."""


def test_affine_flow_absorbs_eps2_and_additive_does_not():
    affine = {e: fit(e, additive=False) for e in EPS2_VALUES}
    additive = {e: fit(e, additive=True) for e in EPS2_VALUES}
    lo, hi = EPS2_VALUES
    # Affine: the optimum of residual term + log-det, and of the whole Eq. 17, is the same
    # for eps² = 0.01 and 1 (the flow shrinks or stretches r until eps² fits).
    assert affine[lo][0] == pytest.approx(affine[hi][0], abs=1e-6)
    assert affine[lo][1] == pytest.approx(affine[hi][1], abs=1e-6)
    # ... at the value the derivation predicts, with the empirical spread of r ...
    var_r = data()[:, 1].var(unbiased=False).item()
    assert affine[lo][0] == pytest.approx(-0.5 - 0.5 * math.log(2 * math.pi * var_r), abs=1e-6)
    # ... reached at s = √eps²/σ: the coupling's own scale of the residual half.
    for eps2, (_, _, coupling) in affine.items():
        log_s2 = coupling._scale_shift(coupling.net2, torch.zeros(1, 1, dtype=DTYPE), 1)[0].item()
        assert math.exp(log_s2) == pytest.approx(math.sqrt(eps2 / var_r), rel=1e-4)
    # Additive (s ≡ 1): the best residual term is -σ²/(2 eps²) - ½ log(2π eps²); it depends on eps².
    for eps2, (resid, _, _) in additive.items():
        assert resid == pytest.approx(-var_r / (2 * eps2) - 0.5 * math.log(2 * math.pi * eps2), abs=1e-6)
    assert abs(additive[lo][0] - additive[hi][0]) > 1.0
    assert additive[lo][0] < affine[lo][0] - 1.0  # tight eps² costs the additive flow, not the affine


def test_switches_work_from_the_command_line(tmp_path):
    """One smoke sweep over pie.coupling with PIE's beta1 and full Householder maps set: the
    runs finish, the sweep column and the diagnostics rows are written, beta1 reaches Adam."""
    out = tmp_path / "res"
    fast = ["--set", "data.train_subset=100", "--set", "eval.test_subset=100", "--set", "eval.n_samples=100",
            "--set", "eval.probe_train_size=100", "--no-progress"]
    code = run_main(["--config", SMOKE, "--models", "pie", "--seeds", "1", "--out", str(out),
                     "--set", "train.per_model.pie.beta1=0.9", "--set", "pie.n_reflections=0",
                     "--sweep", "pie.coupling=affine,additive", *fast])
    assert code == 0
    table = pd.read_csv(out / "metrics.csv")
    pie = table[table["model"] == "pie"]
    assert sorted(pie["pie.coupling"].dropna().unique()) == ["additive", "affine"]
    diag = pie[pie["metric"].str.startswith("diag_")]
    assert set(diag["metric"]) == {"diag_resid_ratio_l1", "diag_resid_ratio_l2", "diag_resid_ratio_l3",
                                   "diag_resid_ratio_l4", "diag_flow_logdet_per_dim", "diag_recon_mse_rg"}
    additive_logdet = diag[(diag["pie.coupling"] == "additive") & (diag["metric"] == "diag_flow_logdet_per_dim")]
    assert additive_logdet["value"].tolist() == [0.0]  # volume-preserving flow
    recon = pie[pie["metric"] == "recon_mse"].set_index("run_id")["value"]
    recon_rg = diag[diag["metric"] == "diag_recon_mse_rg"].set_index("run_id")["value"]
    assert recon_rg.sort_index().tolist() == pytest.approx(recon.sort_index().tolist(), rel=1e-5)
    real = table[table["model"] == "real"].set_index("metric")["value"]
    assert 0 < real["recon_mse_class_mean_image"] < real["recon_mse_mean_image"] < 0.2
    for ckpt in (out / "runs").glob("pie-*/checkpoint.pt"):
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        assert state["optimizer"]["param_groups"][0]["betas"][0] == 0.9
        assert state["config"]["pie"]["n_reflections"] == 0


def _tidy(out, run_id, model, rows, sweep=None):
    real = model == "real"
    frame = pd.DataFrame([{"run_id": run_id, "dataset": "mnist", "model": model, "seed": pd.NA if real else 0,
                           "split": "test", "metric": m, "value": v, "note": "synthetic", "status": "ok",
                           "latent_dim": pd.NA if real else 10, "preset": "synthetic",
                           "config_hash": "" if real else run_id.split("-")[1],  # as in <model>-<hash>-s<seed>
                           "git_commit": "abc1234", "started_at": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.0,
                           **(sweep or {})} for m, v in rows])
    replace_run_rows(out / "metrics.csv", frame)


def test_mechanism_page_lists_each_pie_run_with_diagnostics_and_the_references(tmp_path):
    _tidy(tmp_path, "real-0badc0de-0badc0de", "real", [("sharpness", 0.18), ("recon_mse_mean_image", 0.0675),
                                         ("recon_mse_class_mean_image", 0.0529)])
    _tidy(tmp_path, "vae-a-s0", "vae", [("recon_mse", 0.02)])
    for coupling, ratio in (("affine", 0.93), ("additive", 41.5)):
        _tidy(tmp_path, f"pie-{coupling}-s0", "pie", [("recon_mse", 0.071), ("diag_resid_ratio_l1", ratio),
                                                     ("diag_flow_logdet_per_dim", -2.5)],
              sweep={"pie.coupling": coupling})
    table = report.load_table(tmp_path)
    page = report.mechanism_markdown(table)
    lines = page.splitlines()
    header = next(line for line in lines if line.startswith("| run"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:4] == ["run", "pie.coupling", "latent", "seed"]
    assert "diag_resid_ratio_l1" in cells and "vae-a-s0" not in page
    additive = next(line for line in lines if "pie-additive-s0" in line)
    assert [c.strip() for c in additive.strip("|").split("|")][cells.index("diag_resid_ratio_l1")] == "41.5"
    mean_row = next(line for line in lines if "Mean image (reference)" in line)
    assert [c.strip() for c in mean_row.strip("|").split("|")][cells.index("recon_mse")] == "0.0675"
    assert "Class-mean image (reference)" in page
    assert report.mechanism_markdown(table[~table["metric"].str.startswith("diag_")]) is None
    # Settings given with --set are read from each run's config: only those that differ are shown.
    configs = {"pie-affine-s0": {"pie": {"n_reflections": 3, "eps2": 0.1}},
               "pie-additive-s0": {"pie": {"n_reflections": 0, "eps2": 0.1}}}
    with_configs = report.mechanism_markdown(table, configs)
    header = next(line for line in with_configs.splitlines() if line.startswith("| run"))
    assert "pie.n_reflections" in header and "pie.eps2" not in header
    # Table 1 shows the same references under the model rows.
    sel = report.select_runs(table, {})
    t1_md = report.table1_markdown(report.build_table1(table, sel, {}), sel)
    row = next(line for line in t1_md.splitlines() if "Class-mean image (reference)" in line)
    t1_header = next(line for line in t1_md.splitlines() if "recon_mse" in line and line.startswith("|"))
    column = [c.strip() for c in t1_header.strip("|").split("|")].index("recon_mse")
    assert [c.strip() for c in row.strip("|").split("|")][column] == "0.0529"


def test_a_real_data_record_without_the_references_is_redone(tmp_path, mnist):
    from bench.config import load_config
    from bench.runner import record_real
    from bench.tidy import read_table

    config = load_config(SMOKE, overrides=["eval.test_subset=100", "eval.n_samples=100"])
    record_real(tmp_path, config, mnist)
    table = read_table(tmp_path / "metrics.csv")
    # A results directory from before the references: real rows only in the table, no run directory.
    old = table[~table["metric"].str.startswith("recon_mse_")]
    replace_run_rows(tmp_path / "metrics.csv", old)
    shutil.rmtree(next((tmp_path / "runs").glob("real-*")))
    assert "recon_mse_mean_image" not in set(read_table(tmp_path / "metrics.csv")["metric"])
    record_real(tmp_path, config, mnist)
    again = read_table(tmp_path / "metrics.csv")
    assert {"recon_mse_mean_image", "recon_mse_class_mean_image"} <= set(again["metric"])
    assert not again.duplicated(["run_id", "metric"]).any() and len(again) == len(table)
