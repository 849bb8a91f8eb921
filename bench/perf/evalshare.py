"""Section ``evalshare``: evaluation / training seconds of one whole run per model."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pandas as pd
import torch

from bench import evaluate as E
from bench.config import Config, load_config
from bench.context import Context
from bench.data import ImageData, load_data
from bench.evaluate import Evaluator
from bench.perf.common import SMOKE_CONFIG, TARGET_EVAL_FRACTION, Row, subset, width_label
from bench.perf.timing import timed
from bench.results import TABLE
from bench.runner import RunSpec, execute_run


def bench_eval_share(names: list[str], cfg: Config, data: ImageData, device: torch.device, ctx: Context,
                     quick: bool, log=print) -> list[Row]:
    """``eval_seconds / train_seconds`` of one real run per model (one epoch at the default preset).

    The run goes through ``bench.runner.execute_run`` into a temporary results folder, so the two
    times are the runner's own rows; seed 0. The classifier and the real-image statistics are
    warmed up first, as after a worker's first run.

    The evaluation's phases (``bench.evaluate.phase``) are reported too. The ``model:`` phases are
    calls into the model whose counts the protocol fixes (samples at two temperatures, the test and
    probe encodings, reconstructions, log_prob for bits/dim); ``eval_model_share`` = their seconds /
    training seconds is the floor that no faster metric code can go below.
    """
    with tempfile.TemporaryDirectory(prefix="pie-perf-evalshare-") as tmp:
        if quick:  # smoke preset on a slice, its classifier trained for 1 epoch into a temporary cache
            cfg = load_config(SMOKE_CONFIG)
            data = subset(data, cfg.data.train_subset, 50)
            cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_size=50),
                                      eval=dataclasses.replace(cfg.eval, classifier_epochs=1))
            ctx = dataclasses.replace(ctx, cache_dir=Path(tmp))  # the runner's evaluation reads it there too
        elif cfg.data.val_size != data.val_images.shape[0]:
            data = load_data(None, cfg.data.val_size, cfg.data.val_seed, device, data.dataset, ctx)
        base = {"section": "evalshare", "model": "-", "preset": cfg.preset, "width": "-"}
        rows: list[Row] = []
        evaluator = Evaluator.of(ctx)  # the runs below evaluate with it (execute_run: Evaluator.of(ctx))
        t_clf, extractor = timed(lambda: evaluator.classifier(data, cfg.eval), device)
        t_real, _ = timed(lambda: evaluator.real_stats(data, cfg.eval, extractor), device)
        rows.append(Row(**base, metric="real_stats_seconds", value=t_real, unit="s",
                        note=f"real test images' features, statistics and k-NN radii, once per process (classifier "
                        f"load {t_clf:.3g} s); not in eval_seconds below"))
        for name in names:
            spec = RunSpec(model=name, seed=0, config=cfg, out_dir=tmp, data_root=ctx.data_root, device=str(device))
            timings: dict[str, float] = {}
            outcome = execute_run(spec, data, log=lambda *a, **k: None, eval_timings=timings, ctx=ctx)
            if outcome.status != "ok":
                raise RuntimeError(f"evalshare run {name} failed: {outcome.reason}")
            table = pd.read_csv(Path(tmp) / TABLE)
            got = table[table["run_id"] == spec.run_id].set_index("metric")["value"]
            train, evaluation = float(got["train_seconds"]), float(got["eval_seconds"])
            share = evaluation / train
            in_model = E.model_seconds(timings)
            mb = {**base, "model": name, "width": width_label(cfg.models[name])}
            rows += [Row(**mb, metric="run_train_seconds", value=train, unit="s", batch=cfg.train.batch_size,
                         note=f"train_seconds of one run ({cfg.train.epochs} epoch(s), bench.runner.execute_run)"),
                     Row(**mb, metric="run_eval_seconds", value=evaluation, unit="s", batch=cfg.eval.batch_size,
                         note="eval_seconds of the same run (bench.evaluate.evaluate_model)"),
                     Row(**mb, metric="eval_share", value=share, unit="fraction",
                         note=f"eval_seconds / train_seconds; target <= {TARGET_EVAL_FRACTION:g}: "
                         f"{'met' if share <= TARGET_EVAL_FRACTION else 'not met'}"),
                     Row(**mb, metric="eval_model_share", value=in_model / train, unit="fraction",
                         note=f"seconds inside the model's calls during evaluation ({in_model:.3g} s) / train_seconds: "
                         f"the floor of eval_share at this protocol's sample counts")]
            rows += [Row(**mb, metric=f"eval_phase_seconds[{phase}]", value=t, unit="s", batch=cfg.eval.batch_size,
                         note="bench.evaluate.phase of the same evaluation")
                     for phase, t in sorted(timings.items(), key=lambda kv: -kv[1])]
            log(f"  evalshare {name}: train {train:.1f} s, eval {evaluation:.1f} s (in the model {in_model:.1f} s), "
                f"share {share:.3f}, floor {in_model / train:.3f}")
    return rows
