"""bench.perf: the quick benchmark end to end, exact FLOP counts, and the CPU-testable GPU-path logic.

No timed assertions: speed targets live in the benchmark's CSV, not in tests.
"""

import importlib.util
import math
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from torch import nn

import bench.train
from bench import perf
from bench.config import load_config
from bench.context import Context
from bench.errors import UserError
from bench.perf.common import bare_step_fn
from bench.registry import MODELS, build_model
from tests.helpers import MNIST_DIR, ROOT, SMOKE

# Every registered model is measured; bits/dim only for those with a density (at the default preset).
DENSITY_MODELS = {m for m in MODELS if build_model(m, load_config(ROOT / "configs" / "default.yaml")).has_density}


@pytest.fixture(scope="module")
def quick_csv(tmp_path_factory):
    out = tmp_path_factory.mktemp("perf") / "perf.csv"
    env = {**os.environ, "PIE_BENCH_OFFLINE": "1"}
    env.pop("PIE_BENCH_THREADS", None)
    proc = subprocess.run([sys.executable, "-m", "bench.perf", "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file()
    return pd.read_csv(out), proc.stdout


def test_quick_csv_has_every_section_and_finite_positive_values(quick_csv):
    frame, stdout = quick_csv
    assert tuple(frame.columns) == perf.COLUMNS
    assert set(frame["section"]) == set(perf.SECTIONS)
    skipped = frame["metric"] == "peer_skipped"  # the one NaN row: pythae not installed (optional extra)
    assert skipped.sum() == (0 if importlib.util.find_spec("pythae") else 1)
    frame = frame[~skipped]
    assert frame["value"].map(math.isfinite).all(), frame[~frame["value"].map(math.isfinite)]
    timing = frame[frame["section"] != "machine"]  # the load average may be 0 on an idle machine
    assert (timing["value"] > 0).all(), timing[timing["value"] <= 0]
    assert (frame["value"] >= 0).all()
    assert not frame.duplicated(["section", "model", "preset", "width", "metric"]).any()
    assert "GPU numbers: not measured" in stdout


def test_quick_csv_measures_every_model_at_both_widths(quick_csv):
    frame, _ = quick_csv
    models = frame[frame["section"] == "model"]
    assert set(models["preset"]) == {"default", "paper"}
    for metric in ("train_images_per_s", "sample_images_per_s", "train_flops_per_image", "train_gflops_per_s"):
        got = models[models["metric"] == metric]
        assert set(zip(got["model"], got["preset"], strict=True)) == {
            (m, p) for m in MODELS for p in ("default", "paper")}, metric
    # Paper widths are wider: more FLOPs per image for every model.
    flops = models[models["metric"] == "train_flops_per_image"].pivot(index="model", columns="preset", values="value")
    assert (flops["paper"] > flops["default"]).all()


def test_quick_csv_harness_data_metrics_and_targets(quick_csv):
    frame, _ = quick_csv

    def metrics(section):
        return set(frame.loc[frame["section"] == section, "metric"])

    assert {"bare_images_per_s", "harness_step_images_per_s", "harness_ratio", "per_epoch_seconds",
            "harness_epoch_ratio"} <= metrics("harness")
    harness = frame[(frame["section"] == "harness") & (frame["metric"] == "harness_ratio")]
    assert set(harness["model"]) == set(MODELS)
    assert {"harness_unit_batches_per_s", "dataloader_batches_per_s", "data_path_ratio"} <= metrics("data")
    assert {"sharpness_seconds", "features_fd_seconds", "probe_seconds", "bits_per_dim_seconds",
            "eval_seconds"} <= metrics("metrics")
    bpd = frame[(frame["section"] == "metrics") & (frame["metric"] == "bits_per_dim_seconds")]
    assert set(bpd["model"]) == DENSITY_MODELS  # the density models only
    assert {"data_path_ratio", "harness_ratio_min", "eval_fraction_estimate"} <= metrics("targets")
    targets = frame[frame["section"] == "targets"].set_index("metric")
    # Each target states one verdict ("not met" is tried first: "met" alone also matches inside it),
    # and the verdict agrees with the value against the target.
    verdicts = targets["note"].map(lambda note: re.findall(r"\b(not met|met)\b", note))
    assert (verdicts.map(len) == 1).all(), targets["note"]
    met = verdicts.map(lambda v: v[0] == "met")
    assert met["data_path_ratio"] == (targets.loc["data_path_ratio", "value"] >= perf.TARGET_DATA_RATIO)
    assert met["harness_ratio_min"] == (targets.loc["harness_ratio_min", "value"] >= perf.TARGET_HARNESS_RATIO)
    assert met["eval_fraction_estimate"] == (
        targets.loc["eval_fraction_estimate", "value"] <= perf.TARGET_EVAL_FRACTION)
    share = frame[frame["section"] == "evalshare"].pivot(index="model", columns="metric", values="value")
    assert set(share.index) == {*MODELS, "-"} and (share.loc["-", "real_stats_seconds"] > 0)
    share = share.drop("-")
    assert share["eval_share"].to_numpy() == pytest.approx(
        (share["run_eval_seconds"] / share["run_train_seconds"]).to_numpy())
    assert targets.loc["eval_share_max", "value"] == share["eval_share"].max()
    # The floor: time inside the model's calls is part of the evaluation, and the phases add up to it.
    assert ((share["eval_model_share"] > 0) & (share["eval_model_share"] < share["eval_share"])).all()
    phases = share.filter(like="eval_phase_seconds[model: ")
    assert (phases.sum(axis=1) / share["run_train_seconds"]).to_numpy() == pytest.approx(
        share["eval_model_share"].to_numpy())
    assert met["eval_share_max"] == (targets.loc["eval_share_max", "value"] <= perf.TARGET_EVAL_FRACTION)
    levers = frame[frame["section"] == "levers"]
    base = levers[levers["metric"] == "train_ratio[baseline]"]
    assert set(base["model"]) == set(MODELS) and (base["value"] == 1.0).all()
    assert set(levers.loc[levers["metric"] == "eval_ratio[channels_last]", "model"]) == set(MODELS)
    assert {"train_ratio[channels_last]", "train_ratio[fused_adam]",
            "train_ratio[channels_last+fused_adam]"} <= metrics("levers")
    bf16 = levers[levers["metric"] == "train_ratio[channels_last+fused_adam+bf16]"]
    assert set(bf16["model"]) == {m for m in MODELS if build_model(m, load_config(ROOT / "configs" / "default.yaml"))
                                  .allows_bf16}  # the VAE/WAE; PIE stays fp32
    assert bf16["note"].str.contains("native bf16").all()
    peer = metrics("peer")
    assert peer == ({"ours_images_per_s", "pythae_images_per_s", "peer_ratio", "ours_images_per_s[bf16]",
                     "peer_ratio[bf16]"} if importlib.util.find_spec("pythae") else {"peer_skipped"})


def test_quick_csv_describes_the_machine(quick_csv):
    frame, _ = quick_csv
    assert (frame["device"] == "cpu").all()
    assert {"cpu_count", "load_avg_start", "load_avg_end"} <= set(frame.loc[frame["section"] == "machine", "metric"])
    assert frame["device_name"].notna().all() and (frame["device_name"].str.len() > 0).all()
    assert (frame["threads"] == 1).all()  # --quick defaults to one thread
    assert (frame["torch_version"] == torch.__version__).all()


# ----------------------------------------------------------------------------- FLOP counting


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))

    def loss(self, x):
        return {"loss": self.net(x).pow(2).mean()}


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)

    def loss(self, x):
        return {"loss": self.conv(x).square().mean()}


def test_training_flops_of_a_tiny_mlp_are_the_analytic_count():
    # Forward: 2·(6·5) + 2·(5·3) per image. Backward: layer 2 needs grad input and grad weight
    # (2·15 each), layer 1 only grad weight (its input needs no grad): 2·30. Biases cost no matmul.
    model = TinyMLP()
    x = torch.randn(7, 6)
    expected = 2 * 30 + 2 * 15 + 2 * 15 + 2 * 15 + 2 * 30
    assert perf.training_flops_per_image(model, x) == expected
    assert all(p.grad is None for p in model.parameters())  # counting leaves no gradients behind


def test_training_flops_of_a_tiny_conv_are_the_analytic_count():
    # 3x3 valid conv 2 -> 3 channels on 8x8: output 6x6; 2·(3·6·6)·(2·3·3) forward, the same for
    # the weight gradient, none for the input gradient.
    model = TinyConv()
    x = torch.randn(4, 2, 8, 8)
    assert perf.training_flops_per_image(model, x) == 2 * (2 * (3 * 6 * 6) * (2 * 3 * 3))


def test_count_flops_of_a_matmul():
    a, b = torch.randn(4, 5), torch.randn(5, 6)
    assert perf.count_flops(lambda: a @ b) == 2 * 4 * 5 * 6


# ----------------------------------------------------------------------------- pieces


def test_matrix_matmul_equals_the_householder_maps():
    from models.flows.householder import HouseholderConv1x1, HouseholderLinear

    torch.manual_seed(0)
    lin, conv = HouseholderLinear(10, 3), HouseholderConv1x1(4, 3)
    x, y = torch.randn(5, 10), torch.randn(5, 4, 6, 6)
    torch.testing.assert_close(perf.matrix_matmul(x, lin.matrix()), lin(x)[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(perf.matrix_matmul(y, conv.matrix()), conv(y)[0], rtol=1e-5, atol=1e-5)


def test_householder_section_finds_every_map_of_pie_with_its_input_shape():
    from bench.config import load_config
    from bench.perf.householder import maps_with_shapes
    from bench.registry import build_model
    from models.flows.householder import householder_maps

    model = build_model("pie", load_config(ROOT / "configs" / "smoke.yaml"))
    seen = maps_with_shapes(model, torch.rand(2, 1, 28, 28) * 0.9 + 0.05)
    assert [m for m, _ in seen] == householder_maps(model)
    assert all(shape[0] == m.features for m, shape in seen)
    assert {len(shape) for _, shape in seen} == {1, 3}  # 1x1 convolutions and linear maps


def test_step_probe_times_every_step_and_each_per_epoch_phase(tmp_path, one_thread):
    """The harness section's hook on the real loop: one mark before the first batch and one per
    step, and seconds for each per-epoch phase."""
    import dataclasses

    from bench.config import load_config
    from bench.data import ImageData
    from bench.registry import build_model

    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.zeros(30, dtype=torch.long)
    data = ImageData(images, labels, images[:10], labels[:10], images[:10], labels[:10], checksum="tiny")
    probe = perf.StepProbe(torch.device("cpu"))
    bench.train.train_model(build_model("vae", cfg), data, dataclasses.replace(cfg.train, epochs=1, batch_size=10),
                            seed=0, run_dir=tmp_path, log=lambda _m: None, hook=probe)
    assert len(probe.marks) == 1 + 3 and probe.marks == sorted(probe.marks)
    assert set(probe.fixed) == {"validation", "log", "checkpoint"} and all(v > 0 for v in probe.fixed.values())


def test_step_probe_counts_only_the_time_between_a_phase_start_and_end(monkeypatch):
    clock = iter([0.0, 1.0, 1.5, 4.0, 4.25, 10.0])
    monkeypatch.setattr("bench.perf.harness.time.perf_counter", lambda: next(clock))
    probe = perf.StepProbe(torch.device("cpu"))
    for event in ("epoch_start", "step_end", "validation_start", "validation_end", "log_start", "log_end"):
        probe(event)
    assert probe.marks == [0.0, 1.0]
    assert probe.fixed == {"validation": 2.5, "log": 5.75, "checkpoint": 0.0}


def test_torchvision_mnist_root_is_readable_offline(tmp_path):
    import torchvision

    root = perf.torchvision_root(Context(data_root=str(MNIST_DIR), offline=True), tmp_path)
    ds = torchvision.datasets.MNIST(str(root), train=True, download=False)
    assert len(ds) == 60000


def test_eval_fraction_from_a_runner_table(tmp_path):
    table = pd.DataFrame({
        "run_id": ["a", "a", "b", "b", "c", "c"], "preset": ["default"] * 4 + ["paper"] * 2,
        "metric": ["train_seconds", "eval_seconds"] * 3, "value": [100.0, 10.0, 100.0, 30.0, 1.0, 1.0],
    })
    table.to_csv(tmp_path / "metrics.csv", index=False)
    frac, note = perf.eval_fraction_from_table(tmp_path / "metrics.csv", "default")
    assert frac == pytest.approx(0.3)
    assert "2 default runs" in note
    assert perf.eval_fraction_from_table(tmp_path / "missing.csv", "default") is None


# ----------------------------------------------------------------------------- GPU path, CPU-testable


def test_perf_bf16_is_the_training_loops_decision_on_any_device():
    """``--bf16``: bf16 where the model contract allows it (not PIE), on CPU and CUDA alike."""
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    for name in ("pie", "vae", "wae"):
        model = build_model(name, cfg)
        assert not perf.uses_bf16(cfg, model, False)
        assert perf.uses_bf16(cfg, model, True) == (name != "pie")


def test_bare_step_with_bf16_runs_the_convolutions_in_bf16_on_cpu():
    """The levers' ``+bf16`` variant really autocasts on the batches' device (the CPU here)."""
    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    model = build_model("vae", cfg)
    seen = {True: set(), False: set()}
    state = {"bf16": False}
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.register_forward_hook(lambda _m, _i, out: seen[state["bf16"]].add(out.dtype))
    batches = [torch.rand(4, 1, 28, 28)]
    for bf16 in (False, True):
        state["bf16"] = bf16
        bare_step_fn(model, cfg, batches, bf16, compile_loss=False)()
    assert seen == {False: {torch.float32}, True: {torch.bfloat16}}


def test_cpu_device_leaves_tf32_alone_and_says_gpu_not_measured():
    before = torch.backends.cuda.matmul.allow_tf32
    notes = perf.configure_device(torch.device("cpu"))
    assert torch.backends.cuda.matmul.allow_tf32 == before
    assert any("GPU numbers: not measured" in n for n in notes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_user_error(capsys):
    with pytest.raises(UserError, match="not measured"):
        perf.resolve_device("cuda")
    assert perf.main(["--device", "cuda", "--quick"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert perf.resolve_device("auto") == torch.device("cpu")


def test_bad_section_or_model_is_a_user_error(capsys):
    assert perf.main(["--sections", "nope"]) == 2
    assert perf.main(["--models", "gan"]) == 2
    assert "unknown" in capsys.readouterr().err


# ----------------------------------------------------------------------------- peer and its target


def test_peer_ratio_is_median_over_median_with_a_bf16_row(monkeypatch):
    """Without running Pythae: its epochs and ours are stand-ins with known seconds (one outlier each)."""
    import importlib.metadata
    import types

    from bench.data import ImageData
    from bench.perf.peer import bench_peer

    cfg = load_config(ROOT / "configs" / "smoke.yaml")
    images = torch.zeros(60, 1, 28, 28, dtype=torch.uint8)
    labels = torch.zeros(60, dtype=torch.long)
    data = ImageData(images, labels, images[:20], labels[:20], images[:10], labels[:10], checksum="zeros")
    monkeypatch.setitem(sys.modules, "pythae", types.ModuleType("pythae"))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.0-test")
    theirs = iter([6.0, 30.0, 6.0])  # median 6 (the mean would be 14, the best 6)
    ours = {False: iter([4.0, 1.0, 4.0]), True: iter([2.0, 2.0, 20.0])}  # medians 4 (fp32) and 2 (bf16)
    seen = []

    def fake_train(model, data, tcfg, **_):
        seen.append((data.train_images.shape[0], data.val_images.shape[0], tcfg.epochs, tcfg.bf16))
        return types.SimpleNamespace(seconds=next(ours[tcfg.bf16]))

    monkeypatch.setattr(bench.train, "train_model", fake_train)
    monkeypatch.setattr("bench.perf.peer._pythae_epoch", lambda *a, **k: next(theirs))
    budget = perf.Budget(peer_images=50, peer_val_images=0, peer_reps=3)
    rows = bench_peer(["pie", "vae"], cfg, data, torch.device("cpu"), budget, log=lambda *_: None)
    got = {r.metric: r for r in rows}
    assert {r.model for r in rows} == {"vae"}  # PIE has no Pythae counterpart
    assert got["peer_ratio"].value == pytest.approx(6.0 / 4.0)
    assert got["peer_ratio[bf16]"].value == pytest.approx(6.0 / 2.0)
    assert got["ours_images_per_s"].value == pytest.approx(50 / 4.0)
    assert got["pythae_images_per_s"].value == pytest.approx(50 / 6.0)
    assert "first 50 of 60 training images" in got["peer_ratio"].note and "median of 3" in got["peer_ratio"].note
    # Our epochs: the first 50 training images, the whole validation split, one epoch; fp32 and bf16 alternate.
    assert seen == [(50, 20, 1, False), (50, 20, 1, True)] * 3


def test_peer_target_is_judged_on_fp32_and_states_the_bf16_ratio(tmp_path):
    from bench.perf.common import rows_frame
    from bench.perf.targets import target_rows

    cfg = load_config(ROOT / "configs" / "default.yaml")
    rows = [perf.Row(section="peer", model=m, preset="default", width="0.125", metric=metric, value=v, unit="x")
            for m, metric, v in [("vae", "peer_ratio", 1.2), ("wae", "peer_ratio", 1.6),
                                 ("vae", "peer_ratio[bf16]", 1.9), ("wae", "peer_ratio[bf16]", 1.05)]]
    out = {r.metric: r for r in target_rows(rows_frame(rows), cfg, [], 55000, tmp_path / "none.csv")}
    assert out["peer_ratio_min"].value == 1.2
    note = out["peer_ratio_min"].note
    assert "vae: not met" in note and "1.05x (wae)" in note


def test_a_fourth_registered_model_joins_the_run_all_projection(linear_ae, tmp_path):
    """The targets' projection of the whole protocol covers every registered model: a model
    registered at runtime counts with its protocol's run count, and without its rows there is none."""
    from bench.perf.targets import target_rows
    from bench.report.selection import protocol_runs

    cfg = load_config(SMOKE)
    per_model = {m: 10.0 * (i + 1) for i, m in enumerate(MODELS)}  # evaluation seconds
    rows = [{"section": s, "model": m, "preset": cfg.preset, "metric": metric, "value": v}
            for m in MODELS for s, metric, v in (("harness", "harness_step_images_per_s", 1000.0),
                                                 ("harness", "per_epoch_seconds", 1.0),
                                                 ("metrics", "eval_seconds", per_model[m]))]
    frame = pd.DataFrame(rows)
    n_train = 1000
    train = cfg.train.epochs * (n_train // cfg.train.batch_size * cfg.train.batch_size / 1000.0 + 1.0)
    out = {r.metric: r for r in target_rows(frame, cfg, list(MODELS), n_train, tmp_path / "none.csv")}
    total = out["run_all_seconds_estimate"].value
    assert total == pytest.approx(sum(protocol_runs(m) * (train + per_model[m]) for m in MODELS))
    assert "worst model linear_ae" in out["eval_fraction_estimate"].note  # registered last: the slowest eval
    without = frame[frame["model"] != linear_ae]
    names = [m for m in MODELS if m != linear_ae]
    assert "run_all_seconds_estimate" not in {r.metric for r in target_rows(without, cfg, names, n_train,
                                                                           tmp_path / "none.csv")}


@pytest.mark.fashion_mnist
def test_the_data_section_runs_on_fashion_mnist(tmp_path):
    """bench.perf reads the dataset the presets name (``--dataset``): its loader and the torchvision
    baseline (``FashionMNIST``) both read the Fashion-MNIST files."""
    frame = perf.run(["--quick", "--device", "cpu", "--sections", "data", "--dataset", "fashion-mnist",
                      "--out", str(tmp_path / "perf.csv")], log=lambda *a: None)
    rows = frame.set_index("metric")
    assert rows.loc["data_path_ratio", "value"] > 0
    assert "torchvision FashionMNIST" in rows.loc["dataloader_batches_per_s", "note"]


def test_an_unknown_dataset_is_one_line_and_exit_2(capsys, tmp_path):
    assert perf.main(["--quick", "--sections", "data", "--dataset", "cifar", "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "fashion-mnist" in err[0]
