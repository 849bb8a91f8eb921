"""Score finished runs again from their saved weights: ``python -m bench.reevaluate --results DIR [--runs GLOB]``.

Each finished run of ``DIR`` whose directory holds ``weights.safetensors`` (:mod:`bench.weights`)
is rebuilt from its ``config.json`` and weights and evaluated with the current metric suite
(:func:`bench.evaluate.evaluate_model`, as the runner calls it); nothing is trained. Its rows are
merged into its ``metrics.csv`` and then into ``DIR/metrics.csv``:

- a row whose value and note come out the same is kept byte for byte (its ``git_commit`` too);
- a changed or new row gets the current commit; every other column is the run's own;
- a row the current suite no longer writes is kept: no row is ever lost.

Each model run's ``converged_epoch`` row is derived again from its ``train_log.csv`` with the
current convergence rule (:func:`bench.runner.converged_epoch_row`); ``--convergence-only`` does
only that, without weights or evaluation (so runs without weights get it too).

The real-data run (``real-*``) is scored again with :func:`bench.evaluate_real.evaluate_real`, with the
evaluation settings of the runs that match its id. Runs without weights, unfinished runs, or
runs another process holds are named, one line each, and left untouched; a run whose evaluation
fails is named too (exit code 1). Bad input: one line, exit code 2. ``figures.npz`` and
``samples.png`` are rewritten only when their images changed. A run is evaluated with the
thread count it was run with (its ``config.json`` records it; ``--threads`` overrides), since
the count can move float results in their last digits. For the same reason a run whose rows
name another LeNet extractor (weights hash) than this machine's cached one is left untouched:
its feature metrics would all change.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.classifier import get_classifier
from bench.cli import Parser, user_errors_exit_2
from bench.config import Config
from bench.context import CACHE_ENV, Context, resolve
from bench.data import load_data
from bench.errors import UserError
from bench.evaluate import Evaluator, MetricRow
from bench.evaluate_real import evaluate_real
from bench.figure_data import FIGURES, figure_arrays
from bench.record import RunRecord, is_real_run_of
from bench.registry import MODELS, build_model
from bench.results import DONE, RUNS, TABLE, atomic_write_bytes, claim
from bench.rundir import TRAIN_LOG, read_train_log
from bench.runner import converged_epoch_row, evaluate_and_time, git_commit, save_artefacts
from bench.sync import replace_run_rows, sync_table
from bench.tidy import done_bytes, parse_table
from bench.weights import WEIGHTS, load_weights

_THREADS = re.compile(r"\((\d+) threads?\)")
_EXTRACTOR = re.compile(r"(?:extractor|LeNet) ([0-9a-f]{12})\b")  # the LeNet's weights hash in a row's note


def _value_text(value: float) -> str:
    """A value as pandas writes it into a CSV (the runner's writer): repr, NaN as an empty cell."""
    value = float(value)
    return "" if np.isnan(value) else repr(value)


def merge_rows(path: Path, rows: list[MetricRow], commit: str) -> tuple[str, dict[str, int]]:
    """The run's ``metrics.csv`` text with ``rows`` merged in (see the module docstring), and the
    counts of rows kept, changed and added."""
    records = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    header, body = records[0], [r for r in records[1:] if r]
    col = {name: i for i, name in enumerate(header)}
    where = {(r[col["split"]], r[col["metric"]]): i for i, r in enumerate(body)}
    counts = {"kept": 0, "changed": 0, "added": 0}
    template = body[0]
    for row in rows:
        key = (row.split, row.metric)
        i = where.get(key)
        if i is not None and body[i][col["value"]] == _value_text(row.value) and body[i][col["note"]] == row.note:
            counts["kept"] += 1
            continue
        rec = list(template if i is None else body[i])
        rec[col["split"]], rec[col["metric"]] = row.split, row.metric
        rec[col["value"]], rec[col["note"]] = _value_text(row.value), row.note
        if "git_commit" in col:
            rec[col["git_commit"]] = commit
        if i is None:
            where[key] = len(body)
            body.append(rec)
            counts["added"] += 1
        else:
            body[i] = rec
            counts["changed"] += 1
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *body])
    return buf.getvalue(), counts


def _threads(record: RunRecord, override: int | None) -> int:
    """The thread count to evaluate with: ``override``, else the run's recorded one, else torch's."""
    if override:
        return override
    found = _THREADS.search(record.device)
    return int(found.group(1)) if found else torch.get_num_threads()


class Reevaluator:
    """Re-scores the runs of one results directory; caches the data sets it loads."""

    def __init__(self, out: Path, ctx: Context, device: str, threads: int | None, convergence_only: bool = False):
        self.out, self.ctx, self.device, self.threads = out, ctx, device, threads
        self.convergence_only = convergence_only
        self.commit = git_commit()
        self.failed = 0
        self._data: dict[tuple, object] = {}

    def data(self, cfg: Config):
        key = (cfg.data.dataset, cfg.data.val_size, cfg.data.val_seed)
        if key not in self._data:
            self._data[key] = load_data(None, cfg.data.val_size, cfg.data.val_seed, self.device,
                                        cfg.data.dataset, self.ctx)
        return self._data[key]

    def _real_settings(self, run_id: str) -> RunRecord | None:
        """A model run's config.json whose evaluation settings give the real-data run's id."""
        for cfg_path in sorted((self.out / RUNS).glob("*/config.json")):
            record = RunRecord.read(cfg_path.parent)  # a damaged one reads as None: not a candidate
            if record is not None and is_real_run_of(run_id, record.sections.get("eval")):
                return record
        return None

    def other_extractor(self, run_dir: Path, cfg: Config, data) -> str:
        """Why the run cannot be scored here: its rows name another LeNet than this machine's ("" if none).

        The LeNet is trained once per machine and cached (bench.classifier); trained elsewhere (another
        thread count) its weights differ, and every feature metric with them.
        """
        recorded = set(_EXTRACTOR.findall(" ".join(parse_table(run_dir / TABLE).frame["note"].dropna().astype(str))))
        here = get_classifier(data, cfg.eval.classifier_epochs, batch_size=cfg.eval.batch_size,
                              ctx=self.ctx).weights_hash
        if recorded and recorded != {here}:
            return (f"its rows were measured with LeNet extractor {', '.join(sorted(recorded))}, this machine's "
                    f"is {here} (cached under {self.ctx.cache_folder}; set {CACHE_ENV} to a cache holding that one)")
        return ""

    def score(self, run_dir: Path) -> tuple[list[MetricRow], dict | None, Config] | str:
        """(rows, artefacts, config) of a run, or why it is left untouched."""
        if run_dir.name.startswith("real-"):
            record = self._real_settings(run_dir.name)
            if record is None:
                return "no run's config.json has the evaluation settings of this real-data run"
            cfg = record.config()
            data = self.data(cfg)
            if not run_dir.name.startswith(f"real-{data.checksum[:8]}-"):
                return "its data checksum is not that of the data found"
            if why := self.other_extractor(run_dir, cfg, data):
                return why
            torch.set_num_threads(_threads(record, self.threads))
            return evaluate_real(data, cfg.eval, Evaluator.of(self.ctx)), None, cfg
        if not (run_dir / WEIGHTS).is_file():
            return f"no {WEIGHTS} (trained before weights were kept)"
        record = RunRecord.read(run_dir)  # validated (bench.rundir); a damaged one reads as None
        if record is None:
            return "config.json missing or damaged"
        model_name, seed = record.model, record.seed
        if model_name not in MODELS:
            return f"model '{model_name}' is not registered"
        try:
            cfg = record.config()
        except UserError as e:
            return f"config.json no longer loads: {e}"
        if RunRecord.of(cfg, model_name, seed).run_id != run_dir.name:
            return "its config.json does not give its run id"
        torch.set_num_threads(_threads(record, self.threads))
        data = self.data(cfg)
        if why := self.other_extractor(run_dir, cfg, data):
            return why
        torch.manual_seed(seed)  # as the runner builds it (the weights replace every parameter)
        model = build_model(model_name, cfg)
        model.to(device=data.test_images.device, dtype=torch.float64 if cfg.train.float64 else torch.float32)
        model.to(memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format)
        load_weights(run_dir / WEIGHTS, model)
        rows, artefacts = evaluate_and_time(model, data, cfg.eval, seed, ctx=self.ctx)
        return rows, artefacts, cfg

    def convergence_row(self, run_dir: Path) -> MetricRow | str:
        """The run's ``converged_epoch`` row from its learning curves, or why there is none."""
        record = RunRecord.read(run_dir)
        if record is None:
            return "config.json missing or damaged"
        log = read_train_log(run_dir)
        if log is None or not len(log):
            return f"no readable {TRAIN_LOG}"
        train = record.config().train_for(record.model)
        return converged_epoch_row(log, train.until_converged and int(log["epoch"].max()) >= train.max_epochs)

    def run(self, run_dir: Path) -> str:
        """Re-score one run; returns its one-line outcome."""
        if not (run_dir / DONE).is_file() or not (run_dir / TABLE).is_file():
            return "not finished: left untouched"
        with claim(run_dir, wait=False) as claimed:
            if not claimed:
                return "held by another process: left untouched"
            t0 = time.perf_counter()
            model_run = not run_dir.name.startswith("real-")
            try:
                if self.convergence_only:
                    row = self.convergence_row(run_dir) if model_run else "a real-data run has no learning curves"
                    scored = row if isinstance(row, str) else ([row], None, None)
                else:
                    scored = self.score(run_dir)
                    if model_run and not isinstance(scored, str):
                        row = self.convergence_row(run_dir)
                        scored = (scored[0] + ([] if isinstance(row, str) else [row]), *scored[1:])
            except UserError:
                raise  # e.g. the data set is missing: one line for the whole command
            except Exception as e:  # noqa: BLE001  (any failure of one run: named, the others go on)
                self.failed += 1
                return f"failed ({type(e).__name__}: {e}): left untouched"
            if isinstance(scored, str):
                return f"{scored}: left untouched"
            rows, artefacts, cfg = scored
            text, counts = merge_rows(run_dir / TABLE, rows, self.commit)
            if counts["changed"] or counts["added"]:
                # Rows, then the done.json that makes them intact (bench.sync.check_run), then the
                # table: killed between any two, the intact copy (old or new rows) wins at the next
                # sync. Without the new done.json the changed rows would match neither record and
                # the run would be handed back to be trained again.
                atomic_write_bytes(run_dir / TABLE, text.encode())
                atomic_write_bytes(run_dir / DONE, done_bytes(run_dir.name, parse_table(run_dir / TABLE).frame))
            if artefacts is not None:
                _save_if_changed(run_dir, artefacts, cfg.eval.grid_size)
            replace_run_rows(self.out / TABLE, parse_table(run_dir / TABLE).frame)
        return (f"re-evaluated in {time.perf_counter() - t0:.0f} s: {counts['kept']} rows unchanged, "
                f"{counts['changed']} changed, {counts['added']} new")


def _save_if_changed(run_dir: Path, artefacts: dict, grid_size: int) -> None:
    """Write the artefacts; leave the committed figures.npz and samples.png alone when their images
    are the same (a rewritten npz differs in its zip timestamps only)."""
    try:
        with np.load(run_dir / FIGURES) as old:
            new = figure_arrays(artefacts)
            same = set(old.files) == set(new) and all(np.array_equal(old[k], new[k]) for k in new)
    except (OSError, ValueError):
        same = False
    if same:
        np.savez_compressed(run_dir / "artefacts.npz", **artefacts)
    else:
        save_artefacts(run_dir, artefacts, grid_size)


@user_errors_exit_2
def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m bench.reevaluate", description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, metavar="DIR", help="results directory")
    p.add_argument("--runs", default="*", metavar="GLOB", help="run ids to re-score (default: all)")
    p.add_argument("--data-root", default=None, help="as for bench.run")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: each run's own, as its config.json records it)")
    p.add_argument("--convergence-only", action="store_true",
                   help="only derive each run's converged_epoch row again from its learning curves "
                        "(no weights, no evaluation)")
    args = p.parse_args(argv)
    ctx = resolve(data_root=args.data_root)  # --threads is not $PIE_BENCH_THREADS here: None keeps each run's own
    from bench.run import resolve_device

    device = resolve_device(args.device)
    out = Path(args.results)
    if not (out / RUNS).is_dir():
        raise UserError(f"'{out}' is no results directory (it has no {RUNS}/ folder)")
    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be a positive integer, got {args.threads}")
    run_dirs = sorted(d for d in (out / RUNS).iterdir() if d.is_dir() and fnmatch.fnmatchcase(d.name, args.runs))
    if not run_dirs:
        raise UserError(f"--runs '{args.runs}' matches no run directory in {out / RUNS}")
    sync_table(out)  # the table is an index of the run directories: repair it first, as the runner does
    worker = Reevaluator(out, ctx, device, args.threads, args.convergence_only)
    for run_dir in run_dirs:
        print(f"{run_dir.name}: {worker.run(run_dir)}", flush=True)
    return 1 if worker.failed else 0


if __name__ == "__main__":
    sys.exit(main())
