"""Section ``householder``: PIE's Householder maps as a materialised matrix vs successive reflections."""

from __future__ import annotations

import copy
import statistics

import torch
from torch import nn

from bench.config import Config
from bench.data import ImageData
from bench.perf.common import Budget, Row, bare_step_fn, make_batches, new_model, train_dtype
from bench.perf.timing import interleaved
from models.flows.householder import householder_maps, set_impl


def matrix_matmul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``W x`` along axis 1 with a materialised ``W`` as one matmul (no convolution)."""
    if x.dim() == 2:
        return x @ w.T
    return (w @ x.flatten(2)).view(x.shape)


def maps_with_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The model's Householder maps with their per-sample input shapes, from one forward pass."""
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append((mod, tuple(args[0].shape[1:]))))
             for m in householder_maps(model)]
    try:
        with torch.no_grad():
            model.loss(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def bench_householder(names: list[str], presets: list[tuple[Config, bool]], data: ImageData, device: torch.device,
                      budget: Budget, log=print) -> list[Row]:
    """Materialised matrix (the maps' default ``impl``) vs successive reflections (``impl="reflections"``).

    Per map size (forward + backward of one map, and a matmul instead of the 1x1 convolution),
    then the decisive number: the model's whole training step with either implementation
    (:func:`models.flows.householder.set_impl`), measured in alternation.
    """
    rows: list[Row] = []
    for cfg, big in presets:
        for name in names:
            model = new_model(name, cfg, device)
            batch = budget.batch or cfg.train.batch_size
            dtype = train_dtype(cfg)
            batches = make_batches(data.train_images, batch, 4, model.preprocessing, dtype)
            maps = maps_with_shapes(model, batches[0])
            if not maps:
                continue
            counts: dict[tuple, list] = {}
            for mod, shape in maps:
                key = (type(mod).__name__, shape, mod.vectors.shape[0])
                counts.setdefault(key, [mod, 0])[1] += 1
            totals = {"matrix": 0.0, "reflections": 0.0, "matrix_matmul": 0.0}
            for (kind, shape, n_refl), (mod, count) in counts.items():
                inp = torch.randn(batch, *shape, device=device, dtype=dtype, requires_grad=True)
                twin = copy.deepcopy(mod)  # the same map (same vectors), applied one reflection at a time
                set_impl(twin, "reflections")
                impls = {  # name -> (the module whose gradients it makes, forward)
                    "matrix": (mod, lambda inp=inp, mod=mod: mod(inp)[0]),
                    "reflections": (twin, lambda inp=inp, twin=twin: twin(inp)[0]),
                    "matrix_matmul": (mod, lambda inp=inp, mod=mod: matrix_matmul(inp, mod.matrix())),
                }
                ref = mod(inp)[0].detach()
                width = f"{kind} C={shape[0]}" + (f" {shape[1]}x{shape[2]}" if len(shape) == 3 else "") + \
                    f" n_refl={n_refl} x{count}"
                base = {"section": "householder", "model": name, "preset": cfg.preset, "width": width}
                for impl, (_, fn) in impls.items():
                    if not torch.allclose(fn().detach(), ref, rtol=1e-4, atol=1e-4):
                        raise AssertionError(f"householder {impl} disagrees with the module at {width}")

                def fwd_bwd(owner, fn, inp=inp):
                    owner.zero_grad(set_to_none=True)
                    inp.grad = None
                    fn().square().sum().backward()

                times = interleaved({k: (lambda o=o, f=f: fwd_bwd(o, f)) for k, (o, f) in impls.items()}, device,
                                    budget.householder_reps, warmup=2)
                ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                for impl in impls:
                    totals[impl] += ms[impl] * count
                    rows.append(Row(**base, metric=f"{impl}_ms", value=ms[impl], unit="ms", batch=batch,
                                    note=f"forward+backward of one map, median of {len(times[impl])}, interleaved"))
                rows.append(Row(**base, metric="reflections_speedup", value=ms["matrix"] / ms["reflections"],
                                unit="x", batch=batch, note="matrix time / reflections time (>1: reflections faster)"))
            base = {"section": "householder", "model": name, "preset": cfg.preset, "width": "all maps"}
            for impl, total in totals.items():
                rows.append(Row(**base, metric=f"{impl}_per_step_ms", value=total, unit="ms", batch=batch,
                                note=f"sum over the model's {len(maps)} maps of the isolated forward+backward"))
            # The whole training step with each implementation, alternating.
            steps = {}
            for impl in ("matrix", "reflections"):
                step = bare_step_fn(model, cfg, batches, False, False)

                def run_step(impl=impl, step=step, model=model):
                    set_impl(model, impl)
                    step()

                steps[impl] = run_step
            reps = max(1, budget.householder_reps // (6 if big and device.type == "cpu" else 3))
            times = interleaved(steps, device, reps, warmup=budget.warmup)
            ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            base = {**base, "width": "training step"}
            for impl, value in ms.items():
                rows.append(Row(**base, metric=f"step_{impl}_ms", value=value, unit="ms", batch=batch,
                                note=f"forward, backward, Adam step; median of {len(times[impl])}, interleaved"))
            rows.append(Row(**base, metric="step_reflections_speedup", value=ms["matrix"] / ms["reflections"],
                            unit="x", batch=batch, note="matrix step time / reflections step time"))
            log(f"  householder {cfg.preset} {name}: maps per step matrix {totals['matrix']:.1f} ms, "
                f"reflections {totals['reflections']:.1f} ms, matmul {totals['matrix_matmul']:.1f} ms; "
                f"whole step matrix {ms['matrix']:.0f} ms vs reflections {ms['reflections']:.0f} ms")
    return rows
