"""Speed benchmark: ``python -m bench.perf [--device cpu|cuda|auto] [--config F] [--dataset D] [--out CSV] [--quick]``.

One process measures where the time goes and writes a tidy CSV (one row per
measurement, columns :data:`COLUMNS`: section, model, preset, width, metric, value, unit,
batch, note, then the machine: device, device_name, threads, torch_version) plus a printed
table. Sections:

``machine``
    Cores and the 1-minute load average at start and end: on a shared CPU the timings mean
    little, and with more than one torch thread they can collapse (OpenMP threads spin-wait
    for a descheduled sibling); ``--threads 1`` (or ``OMP_WAIT_POLICY=PASSIVE``) limits that.
``model``
    For every model at the CPU preset (``--config``, default ``configs/default.yaml``) and the
    paper preset (``--paper-config``): training images/s of a bare step (forward, backward,
    Adam step on pre-made batches), sampling images/s, FLOPs per training image (forward +
    backward of ``model.loss``, counted with ``torch.utils.flop_counter.FlopCounterMode``:
    matmuls and convolutions only, elementwise ops are not counted) and achieved GFLOP/s.
    Throughputs are ``batch / median step time`` after a warm-up (robust to a loaded machine).
``harness``
    The real training loop (:func:`bench.train.train_model`, one epoch on a slice of the
    training set, checkpoints in a temporary directory) against the bare loop for the same
    model. The loop is timed through its ``hook`` parameter (time stamps at its step and
    per-epoch events, :data:`bench.train.HOOK_EVENTS`), so the per-step cost (batch indexing +
    preprocessing, step, clipping, finite checks) and the per-epoch cost (validation loss,
    checkpoint, log) are reported apart, and the full-epoch ratio is projected from both.
``data``
    Batches/s of :func:`bench.data.iterate_batches` against a plain
    ``DataLoader(torchvision.datasets.<Class>(..., transform=ToTensor()), batch_size=100, shuffle=True)``
    (``<Class>`` the dataset's ``torchvision_class``: ``MNIST``, ``FashionMNIST``) built on a temporary
    ``<Class>/raw`` copy of the local files (never downloads).
``metrics``
    Seconds of each metric on ``eval.n_samples`` images (10 000): sharpness, classifier
    features + Fréchet distance (+ KID, precision/recall), bits/dim (density models; timed on
    fewer images and scaled linearly, as the note says) and the linear probe (encoding
    included); then a whole ``bench.evaluate.evaluate_model`` per (untrained) model.
``evalshare``
    One whole run per model as ``./run_all.sh`` does it (``bench.runner.execute_run``: train,
    then evaluate, in this process, into a temporary folder): ``eval_seconds / train_seconds``
    against the 20 % target. The classifier and the real test images' statistics are loaded
    first (once per process in the runner too; their seconds are reported apart).
    ``--quick`` uses the smoke preset (``configs/smoke.yaml``).
``householder``
    PIE's Householder maps at the sizes they have in the model: materialised matrix (the
    default) vs successive reflections (the maps' ``impl="reflections"``), per map (forward +
    backward) and for the whole training step, measured in alternation.
``levers``
    Each speed lever on and off, timed in alternation: training steps with channels-last,
    fused Adam, both (the default), both with bf16 autocast (``train.bf16``, models that allow
    it; on a CPU it pays only with native bf16, AVX512-BF16 / AMX) and optionally torch.compile
    (``--compile-levers``), against contiguous tensors and foreach Adam; a whole evaluation with
    and without channels-last.
``peer``
    One training epoch of ``bench.train.train_model`` (validation and checkpoint included)
    against Pythae's ``BaseTrainer`` on identical DCGAN nets (width 0.125), latent and batch
    (VAE, WAE): several interleaved rounds (ours fp32, Pythae, ours with ``train.bf16``), ratio
    of the median seconds (``--short``: the first 11 000 training images, our validation still on
    all 5 000). Optional: skipped with a note unless pythae is installed (``pip install -e ".[peer]"``).
``targets``
    The speed targets of the project with ``met`` / ``not met`` in the note.

Paper widths on a CPU are slow, so they are timed for a few steps only. ``--quick`` shrinks
every measurement (tiny batches, few steps) so that tests can run the whole benchmark; its
numbers mean nothing. ``--bf16`` turns on bf16 autocast for the models that allow it (the
VAE/WAE; PIE stays fp32) on any device, as ``train.bf16`` does in training. On ``--device
cuda``: TF32 is allowed and timings synchronise the device; without a GPU the GPU numbers are
reported as not measured.

One module per section (``machine``, ``throughput`` = "model", ``harness``, ``datapath`` = "data",
``metric_costs`` = "metrics", ``evalshare``, ``householder``, ``levers``, ``peer``, ``targets``),
``common`` (the CSV schema, budgets, model and batch helpers), ``timing`` (device settings,
timers, FLOP counting) and ``cli`` (flags and the run). This package re-exports what other
modules and the tests use.
"""

from bench.perf.cli import main, parse_args, run
from bench.perf.common import (
    COLUMNS,
    SECTIONS,
    TARGET_DATA_RATIO,
    TARGET_EVAL_FRACTION,
    TARGET_HARNESS_RATIO,
    TARGET_PEER_RATIO,
    TARGET_RUN_ALL_SECONDS,
    Budget,
    Row,
)
from bench.perf.datapath import torchvision_root
from bench.perf.harness import StepProbe
from bench.perf.householder import matrix_matmul
from bench.perf.targets import eval_fraction_from_table
from bench.perf.timing import configure_device, count_flops, resolve_device, training_flops_per_image, uses_bf16

__all__ = [
    "COLUMNS",
    "SECTIONS",
    "TARGET_DATA_RATIO",
    "TARGET_EVAL_FRACTION",
    "TARGET_HARNESS_RATIO",
    "TARGET_PEER_RATIO",
    "TARGET_RUN_ALL_SECONDS",
    "Budget",
    "Row",
    "StepProbe",
    "configure_device",
    "count_flops",
    "eval_fraction_from_table",
    "main",
    "matrix_matmul",
    "parse_args",
    "resolve_device",
    "run",
    "torchvision_root",
    "training_flops_per_image",
    "uses_bf16",
]
