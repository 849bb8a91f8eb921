"""The report: Table 1, Figure 7 and the index, from CSVs and saved figure arrays only.

Most tests use a synthetic results directory shaped like the runner's (fast); one test
runs the real runner on the smoke preset, deletes the checkpoints and builds the report.
"""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import report
from bench.figure_data import ARTEFACTS, FIGURES, save_figure_data
from bench.report.figures import PANELS, fig7_name
from bench.report.markdown import and_list, fmt_mean_std
from bench.report.selection import label, pick_config, table1_models
from bench.report.table import per_run_values, table1_metrics
from bench.results import COLUMNS
from bench.sync import replace_run_rows
from bench.tracking import TRACKED, column
from tests.helpers import ROOT, SMOKE

EPS = (0.01, 0.1, 1.0)
SEEDS = (0, 1, 2)
EVAL = {"batch_size": 250, "n_samples": 400, "test_subset": 300, "grid_size": 4, "second_temperature": 0.5,
        "second_temperature_is": "variance"}
EVAL_HASH = hashlib.sha256(json.dumps(EVAL, sort_keys=True).encode()).hexdigest()[:8]
REAL_ID = f"real-0badc0de-{EVAL_HASH}"
TRACK_CURVES = {"vae": lambda e: np.full(len(e), 0.05), "wae": lambda e: 0.01 * e}
ARTEFACT = {"vae": 0.0002, "wae": 0.0004, "pie": 0.05}  # PIE: sharper than real (0.3) with a large artefact score


def _images(rng, n):
    return rng.uniform(0, 1, size=(n, 1, 28, 28)).astype(np.float32) ** 4


def _write_run(out, rng, model, seed, latent, metrics, sweep=None, status="ok", arrays=None, hash_="h0",
               dataset="mnist", settings=None, started_at="2026-01-01T00:00:00+00:00"):
    """One run as the runner leaves it: runs/<id>/{config.json,train_log.csv,artefacts.npz} + tidy rows.
    ``settings``: more keys of the model's config section (as ``--set`` leaves them)."""
    sweep = sweep or {}
    tag = "-".join(f"{v}" for v in [*sweep.values(), *(settings or {}).values()])
    run_id = f"{model}-{hash_}{latent}{tag}-s{seed}"
    d = out / "runs" / run_id
    d.mkdir(parents=True)
    cfg = {"model": model, "seed": seed, "sweep": sweep, "preset": "synthetic", "run_id": run_id, "eval": EVAL,
           model: {"latent_dim": latent, "eps2": sweep.get("pie.eps2", 0.1), **(settings or {})}}
    (d / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    epochs = np.arange(1, 17)  # enough for the convergence rule: 10 tracked epochs, then 5 in a row
    log = pd.DataFrame({"epoch": epochs, "step": epochs * 10, "lr": 1e-3, "train_loss": 5.0 / epochs + seed,
                        "val_loss": 5.5 / epochs + seed, "seconds": 1.0})
    if model in TRACK_CURVES and latent == 8:  # learning curves (bench.tracking): flat VAE, rising WAE, none for PIE
        for metric in TRACKED:
            log[column(metric)] = TRACK_CURVES[model](epochs) * (1 + 0.001 * seed)
            log[f"track_real_{metric}"] = 0.18
    log.to_csv(d / "train_log.csv", index=False)
    if status == "ok":
        n = 300
        labels = rng.integers(0, 10, n)
        centres = rng.normal(0, 4, size=(10, latent))
        full = {"samples_t1": _images(rng, 16), "samples_t2": _images(rng, 16), "recon_inputs": _images(rng, 16),
                "recon_outputs": _images(rng, 16), "interpolations": _images(rng, 80),
                "test_latents": (centres[labels] + rng.normal(size=(n, latent))).astype(np.float32),
                "test_labels": labels.astype(np.int64)}
        np.savez_compressed(d / "artefacts.npz", **{k: v for k, v in full.items() if arrays is None or k in arrays})
    rows = [{"split": s, "metric": m, "value": v, "note": note} for s, m, v, note in metrics]
    if status != "ok":
        rows = [{"split": "train", "metric": "failed", "value": np.nan, "note": "diverged: loss is NaN"}]
    frame = pd.DataFrame([{"run_id": run_id, "dataset": dataset, "model": model, "seed": seed, "status": status,
                           "latent_dim": latent, "preset": "synthetic", "config_hash": f"{hash_}{latent}{tag}",
                           "git_commit": "abc1234", "started_at": started_at, "elapsed_s": 1.0,
                           **sweep, **r} for r in rows])
    replace_run_rows(out / "metrics.csv", frame)
    return run_id


def _metrics(rng, model):
    base = {"vae": 0.08, "wae": 0.07, "pie": 0.3}[model]
    bpd = np.nan if model == "wae" else rng.uniform(1, 2)
    return [("test", "sharpness", base + rng.normal(0, 0.01), "Laplacian variance, valid padding"),
            ("test", "fd_lenet", rng.uniform(5, 50), "LeNet features, samples vs test"),
            ("test", "artefact_corner", ARTEFACT[model] * rng.uniform(0.9, 1.1), "corner Laplacian"),
            ("test", "recon_mse", rng.uniform(0.01, 0.05), "per pixel, test images"),
            ("test", "bits_per_dim", bpd, "not applicable: WAE has no density" if model == "wae" else "IWAE"),
            ("test", "probe_accuracy", rng.uniform(0.8, 0.95), "linear probe on latents"),
            ("test", "precision", rng.uniform(0.8, 0.95), "k-NN manifolds"),
            ("test", "recall", rng.uniform(0.1, 0.5), "k-NN manifolds"),
            ("train", "final_loss", rng.uniform(0, 1), "")]


def make_synthetic(out: Path) -> Path:
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    real = pd.DataFrame([{"run_id": REAL_ID, "dataset": "mnist", "model": "real", "seed": pd.NA, "split": "test",
                          "metric": m, "value": v, "note": "real test images", "status": "ok", "latent_dim": pd.NA,
                          "preset": "synthetic", "config_hash": "", "git_commit": "abc1234",
                          "started_at": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.0}
                         for m, v in (("sharpness", 0.1825), ("fd_lenet", 0.5), ("artefact_corner", 0.0003))])
    replace_run_rows(out / "metrics.csv", real)
    # A real-data run of another evaluation config: must not be picked.
    replace_run_rows(out / "metrics.csv", real.assign(run_id="real-0badc0de-ffffffff", value=9.0,
                                                      started_at="2027-01-01T00:00:00+00:00"))
    for model in ("vae", "wae", "pie"):
        for seed in SEEDS:
            _write_run(out, rng, model, seed, 8, _metrics(rng, model))
    _write_run(out, rng, "vae", 3, 8, [], status="failed")
    _write_run(out, rng, "vae", 0, 16, _metrics(rng, "vae"))  # other latent: not Table 1
    for eps in EPS:
        for seed in (1, 0):  # lowest seed drawn
            arrays = ("samples_t1", "recon_inputs", "recon_outputs", "test_latents", "test_labels") \
                if eps == 1.0 else None  # samples_t2 and interpolations missing at eps² 1.0
            _write_run(out, rng, "pie", seed, 10, _metrics(rng, "pie"), sweep={"pie.eps2": eps}, arrays=arrays)
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = make_synthetic(tmp_path_factory.mktemp("synthetic"))
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    return out


# Labels of the registered models beyond the paper's three (e.g. AEF): Table 1 rows with no runs here.
NO_RUNS = [label(m) for m in table1_models() if m not in ("vae", "wae", "pie")]


def expected_figures():
    names = ["table1_sharpness.png", f"samples_{'_'.join(table1_models())}.png", "fig7_overview.png",
             "training_curves.png", "convergence.png"]
    for eps in EPS:
        for letter, what in PANELS:
            names.append(fig7_name(eps, letter, what))
    return names


def test_synthetic_report_writes_every_file_and_marks_missing_panels(synthetic):
    for name in ("table1.md", "table1.csv", "index.md"):
        assert (synthetic / name).is_file(), name
    missing = {fig7_name(1.0, "c", "samples_t2"), fig7_name(1.0, "d", "interpolations")}
    for name in expected_figures():
        path = synthetic / "figures" / name
        assert path.is_file() != (name in missing), name
        if path.is_file():
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (synthetic / "index.md").read_text()
    assert index.count("**missing**") == 2
    assert "samples_t2 not in runs/" in index and "interpolations not in runs/" in index


def test_index_links_are_relative_and_resolve(synthetic):
    index = (synthetic / "index.md").read_text()
    links = re.findall(r"\]\(([^)#]+)\)", index)
    assert "table1.md" in links and "table1.csv" in links
    for link in links:
        assert not link.startswith("/"), link
        assert (synthetic / link).is_file(), link
    drawn = [n for n in expected_figures() if (synthetic / "figures" / n).is_file()]
    for name in drawn:
        assert f"figures/{name}" in links, name


def test_table_has_four_rows_and_the_paper_column(synthetic):
    t = pd.read_csv(synthetic / "table1.csv")
    extra = NO_RUNS  # registered models the synthetic results have no runs of: rows with n = 0
    assert t["row"].tolist() == ["True", "VAE", "WAE", "PIE", *extra]
    assert t["paper_sharpness"].tolist()[:4] == [0.18, 0.08, 0.07, 0.49]
    assert t["n_runs"].tolist() == [1, 3, 3, 3, *[0] * len(extra)]
    assert t["n_failed"].tolist() == [0, 1, 0, 0, *[0] * len(extra)]
    assert t.loc[0, "sharpness_mean"] == pytest.approx(0.1825)  # the matching real-data run, not the other
    md = (synthetic / "table1.md").read_text()
    for row in ("**True**", "**VAE**", "**WAE**", "**PIE**"):
        assert row in md
    assert "−0.18" in md and "cannot be negative" in md
    assert "WAE bits_per_dim: not applicable" in md
    header = next(line for line in md.splitlines() if line.startswith("|  | n |")).split("|")
    wae_line = next(line for line in md.splitlines() if line.startswith("| **WAE**"))
    assert wae_line.split("|")[header.index(" bits_per_dim ")].strip() == "n/a"
    assert "Latent dimension 8" in md and "400" in md and "synthetic" in md


def test_table_mean_std_equal_a_pandas_groupby_of_the_tidy_csv(synthetic):
    tidy = pd.read_csv(synthetic / "metrics.csv")
    swept = [c for c in tidy.columns if c not in COLUMNS]
    sel = tidy[(tidy["status"] == "ok") & (tidy["latent_dim"] == 8) & tidy[swept].isna().all(axis=1)]
    agg = sel.groupby(["model", "metric"])["value"].agg(["mean", "std", "count"])
    t = pd.read_csv(synthetic / "table1.csv").set_index("model")
    for model in ("vae", "wae", "pie"):
        for metric in table1_metrics():
            mean, std = agg.loc[(model, metric), "mean"], agg.loc[(model, metric), "std"]
            np.testing.assert_allclose(t.loc[model, f"{metric}_mean"], mean, rtol=1e-12, equal_nan=True)
            np.testing.assert_allclose(t.loc[model, f"{metric}_std"], std, rtol=1e-12, equal_nan=True)
        gap = sel[(sel["model"] == model) & (sel["metric"] == "sharpness")]["value"] - 0.1825
        np.testing.assert_allclose(t.loc[model, "gap_to_real_mean"], gap.mean(), rtol=1e-12)
    md = (synthetic / "table1.md").read_text()
    pie = agg.loc[("pie", "sharpness")]
    assert f"{pie['mean']:.4g} ± {pie['std']:.2g}" in md


def test_figure7_draws_the_lowest_seed_of_each_eps2(synthetic):
    index = (synthetic / "index.md").read_text()
    for eps in EPS:
        assert re.search(rf"### eps² = {re.escape(repr(eps))}\n\nRun `pie-h010{re.escape(str(eps))}-s0` \(seed 0",
                         index), eps
    assert "vae-h016-s0" not in index  # latent 16 is neither Table 1 nor Fig. 7


def _fig7_selection(out: Path):
    table = report.load_table(out)
    configs = {r: report.read_json(out / "runs" / r / "config.json") for r in table["run_id"].unique()}
    return report.select_runs(table, configs)


def test_figure7_ignores_ablations_of_the_mechanism_sweep_in_the_same_directory(tmp_path):
    """docs/results.md "Does eps² matter?" runs PIE at latent 10 swept over eps² *and* other settings into one
    directory. Fig. 7 varies eps² alone: the runs at the preset's other settings are drawn, not the
    newer additive-coupling or full-Householder ones; without a plain run at an eps², the ablation
    run whose settings are the preset's (coupling=affine) is drawn."""
    out, rng = tmp_path / "mech", np.random.default_rng(3)
    out.mkdir()
    plain = {eps: _write_run(out, rng, "pie", 0, 10, _metrics(rng, "pie"), sweep={"pie.eps2": eps})
             for eps in EPS[:2]}
    affine = {}
    for eps in EPS:  # --sweep pie.eps2=... --sweep pie.coupling=affine,additive (newer, same seed)
        for coupling in ("affine", "additive"):
            rid = _write_run(out, rng, "pie", 0, 10, _metrics(rng, "pie"),
                             sweep={"pie.eps2": eps, "pie.coupling": coupling}, settings={"coupling": coupling},
                             started_at="2026-02-01T00:00:00+00:00")
            if coupling == "affine":
                affine[eps] = rid
        # --set pie.n_reflections=0 --sweep pie.eps2=...: only pie.eps2 is a sweep column, and it is the newest
        _write_run(out, rng, "pie", 0, 10, _metrics(rng, "pie"), sweep={"pie.eps2": eps},
                   settings={"n_reflections": 0}, started_at="2026-03-01T00:00:00+00:00")
    sel = _fig7_selection(out)
    drawn = {eps: run["run_id"] for eps, run in sel.fig7.items()}
    assert drawn == {**plain, EPS[2]: affine[EPS[2]]}
    assert sorted(sel.fig7_all["run_id"]) == sorted(drawn.values())  # no ablation run in Fig. 7's curves


def test_fig7_settings_are_compared_with_the_runs_preset():
    from bench.config import load_config
    from bench.report.selection import settings_changed

    preset = load_config(ROOT / "configs" / "default.yaml").models["pie"]
    run = {"preset": "default", "pie": {"coupling_conv_hidden": preset.coupling_conv_hidden, "eps2": 0.01,
                                        "latent_dim": 10, "coupling": "affine", "retired_key": 1}}
    assert settings_changed(run, "pie") == 0  # eps² and latent_dim are Fig. 7's own; unknown keys are not counted
    assert settings_changed({**run, "pie": {**run["pie"], "n_reflections": 0}}, "pie") == 1
    # PIE's own Adam beta1 is one of its settings, recorded by this version or (pie.beta1) by older code.
    assert settings_changed({**run, "train": {"per_model": {"pie": {"beta1": 0.9}}}}, "pie") == 1
    assert settings_changed({**run, "pie": {**run["pie"], "beta1": 0.9}}, "pie") == 1
    assert settings_changed({**run, "pie": {**run["pie"], "beta1": None}}, "pie") == 0
    # A preset that is not in configs/ compares with the model's config defaults.
    custom = {**run, "preset": "no-such-preset", "pie": {**run["pie"], "coupling_conv_hidden": 1}}
    assert settings_changed(custom, "pie") == 1


def test_a_set_variant_of_a_model_stays_out_of_table1_and_is_listed_beside_it(tmp_path):
    """``--models vae --set vae.decoder_scale=per_pixel`` into the same directory: newer runs of
    another configuration, as many seeds. Table 1 keeps the preset's VAE; the variant's bits/dim
    are listed under it (Other configurations)."""
    from bench.report.table import build_table1, table1_markdown

    out = make_synthetic(tmp_path / "r")
    rng = np.random.default_rng(1)
    variant = [_write_run(out, rng, "vae", seed, 8, _metrics(rng, "vae"), hash_="h1",
                          settings={"decoder_scale": "per_pixel"}, started_at="2027-01-01T00:00:00+00:00")
               for seed in SEEDS]
    table = report.load_table(out)
    sel = _fig7_selection(out)
    assert not set(variant) & set(sel.table1["vae"]["run_id"])
    assert set(sel.table1["vae"]["run_id"]) == {r for r in table["run_id"].unique() if r.startswith("vae-h08-")}
    configs = {r: report.read_json(out / "runs" / r / "config.json") for r in table["run_id"].unique()}
    md = table1_markdown(build_table1(table, sel, configs), sel)
    bpd = per_run_values(table, variant, ("bits_per_dim",))["value"]
    row = next(line for line in md.splitlines() if "decoder_scale" in line)
    assert row.startswith("| **VAE** | `vae.decoder_scale=\"per_pixel\"` | 3 (seeds 0 1 2) | ")
    assert fmt_mean_std(bpd.mean(), bpd.std(), len(bpd)) in row


def test_table1_rows_and_labels_come_from_the_registry(synthetic, monkeypatch):
    """A registered model gets its Table 1 row (after the paper's rows, labelled by its name when it
    has no label) without any report edit."""
    from baselines.vae import VAE, VAEConfig
    from bench import registry
    from bench.report.table import build_table1, table1_markdown

    monkeypatch.setitem(registry.MODELS, "toy", registry.ModelEntry(VAE, VAEConfig))
    sel = _fig7_selection(synthetic)
    t1 = build_table1(report.load_table(synthetic), sel, {})
    assert t1.frame["row"].tolist() == ["True", "VAE", "WAE", "PIE", *NO_RUNS, "toy"]
    assert t1.frame["n_runs"].iloc[-1] == 0 and np.isnan(t1.frame["paper_sharpness"].iloc[-1])
    md = table1_markdown(t1, sel)
    rows = and_list(["VAE", "WAE", "PIE", *NO_RUNS, "toy"])
    assert "| **toy** | 0 |" in md and f"Latent dimension 8 for {rows}" in md


def test_the_papers_numbers_are_data_with_a_citation_each(tmp_path):
    from bench.report import paper

    assert paper.paper_numbers().sharpness == {"real": 0.18, "vae": 0.08, "wae": 0.07, "pie": 0.49}  # Table 1
    assert paper.paper_numbers().fig7_eps2 == (0.01, 0.1, 1.0) and paper.paper_numbers().fig7_latent == 10
    text = paper.PAPER_FILE.read_text()
    assert text.count("cite:") == 2 + 4 + 3  # Table 1: latent, samples and four rows; Fig. 7: three facts
    broken = tmp_path / "paper.yaml"
    broken.write_text(text.replace('cite: "Table 1, row WAE"', ""))
    with pytest.raises(ValueError, match="table1.sharpness.wae needs a value and a cite"):
        paper.load_paper(broken)


def test_report_is_rebuilt_from_csvs_alone_and_is_idempotent(synthetic):
    before = {n: (synthetic / n).read_text() for n in ("table1.csv", "table1.md", "index.md")}
    assert report.main(["--results", str(synthetic), "--umap-points", "200"]) == 0
    assert {n: (synthetic / n).read_text() for n in before} == before
    assert not list(synthetic.rglob("*.pt"))


def _figures(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "figures").glob("*.png"))}


def _to_figures_npz(out: Path) -> None:
    """What a run writes since figures.npz exists, then the uncommitted artefacts.npz removed (a clone)."""
    for run_dir in (out / "runs").iterdir():
        if (run_dir / ARTEFACTS).is_file():
            with np.load(run_dir / ARTEFACTS) as npz:
                save_figure_data(run_dir, dict(npz))
            (run_dir / ARTEFACTS).unlink()


def test_figures_rebuild_from_figures_npz_and_are_kept_without_any_inputs(tmp_path):
    out = make_synthetic(tmp_path / "res")
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    first, index = _figures(out), (out / "index.md").read_text()
    assert len(first) == len(expected_figures()) - 2  # two panels have no arrays (see make_synthetic)

    # A clone: only figures.npz is committed. Every figure is rebuilt byte-identical.
    _to_figures_npz(out)
    for run_dir in (out / "runs").iterdir():
        if (run_dir / FIGURES).is_file():
            assert (run_dir / FIGURES).stat().st_size < 1_000_000
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    assert _figures(out) == first
    assert (out / "index.md").read_text() == index

    # Results saved before figures.npz existed: no arrays at all. Nothing is deleted or redrawn,
    # and the index says which figures come from an earlier build.
    for path in (out / "runs").glob(f"*/{FIGURES}"):
        path.unlink()
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    assert _figures(out) == first
    index = (out / "index.md").read_text()
    assert index.count("**missing**") == 2  # only the two panels that never had arrays
    kept = index.count("**from an earlier build**")
    assert kept == 3 * 5 - 2 + 2  # the drawn Fig. 7 panels, the samples side by side, the Fig. 7 overview
    # Rebuilding again changes nothing: a fresh clone's `git status` stays clean.
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    assert _figures(out) == first and (out / "index.md").read_text() == index


def test_table1_keeps_the_configuration_with_most_seeds():
    runs = pd.DataFrame({"run_id": ["a0", "a1", "b0"], "config_hash": ["A", "A", "B"], "status": ["ok", "ok", "ok"],
                         "started_at": ["2026-01-01", "2026-01-01", "2026-02-01"]})
    kept, dropped = pick_config(runs)
    assert kept["run_id"].tolist() == ["a0", "a1"] and dropped == ["B"]


@pytest.mark.parametrize("setup", ["absent", "empty_dir", "not_a_table"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, setup):
    target = tmp_path / "res"
    if setup != "absent":
        target.mkdir()
    if setup == "not_a_table":
        (target / "metrics.csv").write_text("a,b\n1,2\n")
    assert report.main(["--results", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.report", "--results", str(tmp_path / "nope")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_real_smoke_sweep_then_report(tmp_path):
    """A smoke sweep, checkpoints deleted, the report from CSVs and figure arrays alone; then again
    from the committed part only (figures.npz, no artefacts.npz), byte-identical."""
    from bench.run import main as run_main

    out = tmp_path / "res"
    fast = ["--set", "data.train_subset=100", "--set", "eval.test_subset=200", "--set", "eval.n_samples=200",
            "--set", "eval.probe_train_size=200", "--no-progress"]
    assert run_main(["--config", SMOKE, "--models", "pie,vae,wae", "--seeds", "2", "--out", str(out), *fast]) == 0
    assert run_main(["--config", SMOKE, "--models", "pie", "--seeds", "1", "--set", "pie.latent_dim=10",
                     "--sweep", "pie.eps2=0.01,0.1,1.0", "--out", str(out), *fast]) == 0
    for ckpt in out.rglob("*.pt"):
        ckpt.unlink()
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    for name in ("table1.md", "table1.csv", "index.md"):
        assert (out / name).is_file(), name
    t = pd.read_csv(out / "table1.csv")
    assert t["row"].tolist() == ["True", "VAE", "WAE", "PIE", *NO_RUNS]
    assert t["paper_sharpness"].tolist()[:4] == [0.18, 0.08, 0.07, 0.49]
    assert t["n_runs"].tolist()[1:] == [2, 2, 2, *[0] * len(NO_RUNS)]
    index = (out / "index.md").read_text()
    for name in expected_figures():
        assert (out / "figures" / name).is_file(), name
    assert "**missing**" not in index and "## Problems while drawing" not in index
    sizes = [p.stat().st_size for p in out.glob(f"runs/*/{FIGURES}")]
    assert len(sizes) == len(list(out.glob(f"runs/*/{ARTEFACTS}"))) == 9 and max(sizes) < 1_000_000
    figures = _figures(out)
    for path in out.glob(f"runs/*/{ARTEFACTS}"):
        path.unlink()
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0
    assert _figures(out) == figures and (out / "index.md").read_text() == index


def test_converged_column_and_artefact_flag(synthetic):
    t = pd.read_csv(synthetic / "table1.csv").set_index("model")
    assert t.loc["vae", "converged"] == "3 of 3 seeds"  # flat curves over 16 tracked epochs
    assert t.loc["wae", "converged"] == "0 of 3 seeds"  # rising sharpness
    assert t.loc["pie", "converged"] == "not tracked"
    # epochs to converge beside it: the flat curves meet the window test from 10 tracked epochs on,
    # the rule 4 epochs later (5 in a row)
    assert t.loc["vae", "epochs_to_converge"] == "14" and t.loc["vae", "converged_epochs"] == "14 14 14"
    assert t.loc["wae", "epochs_to_converge"] == "—" and t.loc["pie", "epochs_to_converge"] == "—"
    flags = t["artefact_flag"].to_dict()
    assert {m: flags.pop(m) for m in ("real", "vae", "wae", "pie")} == {"real": False, "vae": False, "wae": False,
                                                                         "pie": True}
    assert not any(flags.values())  # the registered models without runs here
    md = (synthetic / "table1.md").read_text()
    assert "| converged | epochs to converge |" in md and "| 3 of 3 seeds | 14 |" in md
    assert re.search(r"\*\*Artefact flag\*\*.*\n\n- PIE: sharpness", md)
    assert (synthetic / "figures" / "convergence.png").is_file()
    assert "figures/convergence.png" in (synthetic / "index.md").read_text()


def test_a_run_stopped_by_the_cap_is_not_converged_and_says_so():
    from bench import convergence
    from bench.report.table import converged_epoch_entry, epochs_to_converge_cell

    epochs = np.arange(1, 17)
    rising = pd.DataFrame({"epoch": epochs, **{column(m): 0.01 * epochs for m in TRACKED}})
    flat = rising.assign(**{column(m): 0.05 for m in TRACKED})
    until = {"train": {"epochs": 5, "until_converged": True, "max_epochs": 16}}
    assert converged_epoch_entry(rising, until) == "cap 16"
    assert converged_epoch_entry(rising, {"train": {"epochs": 16}}) == "-"  # fixed length: just not converged
    assert converged_epoch_entry(flat, until) == "14"  # the window test from epoch 10, 5 in a row
    assert convergence.summary([convergence.judge(rising), convergence.judge(flat)]) == "1 of 2 seeds"
    assert epochs_to_converge_cell(["10", "14", "cap 12", "-"]) == "12 (10–14); 1 at cap 12"
    assert epochs_to_converge_cell(["cap 150", "cap 150"]) == "2 at cap 150"
    assert epochs_to_converge_cell(["-", "-"]) == "—"


def test_two_datasets_get_one_table_and_one_set_of_figures_each(tmp_path):
    """MNIST keeps the top-level pages (with the paper column); Fashion-MNIST gets its own folder,
    without the paper's numbers, built from its own runs only."""
    out = make_synthetic(tmp_path / "two")
    rng = np.random.default_rng(1)
    real = pd.DataFrame([{"run_id": "real-0fa5410e-" + REAL_ID.split("-")[-1], "dataset": "fashion-mnist",
                          "model": "real", "seed": pd.NA, "split": "test", "metric": m, "value": v, "note": "",
                          "status": "ok", "latent_dim": pd.NA, "preset": "synthetic", "config_hash": "",
                          "git_commit": "abc1234", "started_at": "2026-01-01T00:00:00+00:00", "elapsed_s": 1.0}
                         for m, v in (("sharpness", 0.1824), ("fd_lenet", 0.5), ("artefact_corner", 0.002))])
    replace_run_rows(out / "metrics.csv", real)
    for model in ("vae", "wae"):
        for seed in (0, 1):
            _write_run(out, rng, model, seed, 8, _metrics(rng, model), hash_="f0", dataset="fashion-mnist")
    assert report.main(["--results", str(out), "--umap-points", "200"]) == 0

    mnist = pd.read_csv(out / "table1.csv")
    assert mnist["paper_sharpness"].tolist()[:4] == [0.18, 0.08, 0.07, 0.49]
    assert mnist["n_runs"].tolist() == [1, 3, 3, 3, *[0] * len(NO_RUNS)]  # no Fashion-MNIST run counted
    fashion = pd.read_csv(out / "fashion-mnist" / "table1.csv")
    assert fashion["paper_sharpness"].isna().all()
    assert fashion["n_runs"].tolist() == [1, 2, 2, 0, *[0] * len(NO_RUNS)]
    assert fashion["sharpness_mean"].iloc[0] == pytest.approx(0.1824)
    assert all(r.startswith("vae-f0") for r in fashion.loc[fashion["model"] == "vae", "run_ids"].iloc[0].split())
    md = (out / "fashion-mnist" / "table1.md").read_text()
    assert "Fashion-MNIST" in md and "| Paper |" not in md and "−0.18" not in md
    assert "| Paper |" in (out / "table1.md").read_text()
    assert (out / "fashion-mnist" / "figures" / "table1_sharpness.png").is_file()
    for folder in (out, out / "fashion-mnist"):
        index = (folder / "index.md").read_text()
        links = re.findall(r"\]\(([^)#]+)\)", index)
        for link in links:
            assert (folder / link).is_file(), (folder, link)
    assert "fashion-mnist/index.md" in (out / "index.md").read_text()
