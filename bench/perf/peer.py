"""Section ``peer``: one training epoch against Pythae's ``BaseTrainer`` (optional extra)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.config import Config
from bench.data import ImageData
from bench.perf.common import PEER_WIDTH, Budget, Row, new_model, subset
from bench.perf.timing import sync


def _pythae_model(name: str, latent: int, width: float):
    """Pythae's VAE / WAE-MMD around the harness's own DCGAN encoder and decoder (identical nets)."""
    from pythae.models import VAE, WAE_MMD, VAEConfig, WAE_MMD_Config
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    from baselines.nets import ConvDecoder, ConvEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.net = ConvEncoder(2 * latent if name == "vae" else latent, width)

        def forward(self, x):
            h = self.net(x)
            if name == "vae":
                mu, logvar = h.chunk(2, dim=1)
                return ModelOutput(embedding=mu, log_covariance=logvar)
            return ModelOutput(embedding=h)

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = ConvDecoder(latent, width)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    if name == "vae":
        cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=latent, reconstruction_loss="mse")
        return VAE(cfg, encoder=Encoder(), decoder=Decoder())
    cfg = WAE_MMD_Config(input_dim=(1, 28, 28), latent_dim=latent, kernel_choice="imq", reg_weight=10.0)
    return WAE_MMD(cfg, encoder=Encoder(), decoder=Decoder())


def _pythae_epoch(name: str, cfg: Config, images: torch.Tensor, device: torch.device, tmp: Path) -> float:
    """Seconds of one ``BaseTrainer.train()`` epoch (Pythae's data loader, loop and final save)."""
    import logging

    from pythae.data.datasets import BaseDataset
    from pythae.trainers import BaseTrainer, BaseTrainerConfig

    logging.getLogger("pythae").setLevel(logging.ERROR)
    for lname in list(logging.root.manager.loggerDict):
        if lname.startswith("pythae"):
            logging.getLogger(lname).setLevel(logging.ERROR)
    torch.manual_seed(0)
    model = _pythae_model(name, cfg.models[name].latent_dim, PEER_WIDTH)
    x = images.float().div(255.0).reshape(-1, 1, 28, 28).cpu()
    dataset = BaseDataset(x, torch.zeros(len(x)))
    tcfg = BaseTrainerConfig(output_dir=str(tmp), num_epochs=1, per_device_train_batch_size=cfg.train.batch_size,
                             per_device_eval_batch_size=1000, learning_rate=cfg.train.lr,
                             optimizer_params={"betas": (cfg.train.beta1, cfg.train.beta2)},
                             no_cuda=device.type != "cuda")
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        trainer = BaseTrainer(model, train_dataset=dataset, training_config=tcfg)
        sync(device)
        t = time.perf_counter()
        trainer.train()
        sync(device)
    return time.perf_counter() - t


def bench_peer(names: list[str], cfg: Config, data: ImageData, device: torch.device, budget: Budget,
               log=print) -> list[Row]:
    """One training epoch: ``bench.train.train_model`` (validation and checkpoint included) vs Pythae's
    ``BaseTrainer`` on identical DCGAN nets (width ``PEER_WIDTH``), latent and batch, in alternation.

    Skipped with a note when pythae is not installed (``pip install -e ".[peer]"``).
    """
    from bench.train import train_model

    base = {"section": "peer", "preset": cfg.preset, "width": f"{PEER_WIDTH:g}"}
    todo = [n for n in names if n in ("vae", "wae")]
    if not todo:
        return []
    try:
        from importlib.metadata import version

        import pythae  # noqa: F401

        pythae_version = version("pythae")
    except ImportError:
        log("  peer: skipped (pythae is not installed; pip install -e '.[peer]')")
        return [Row(**base, model="-", metric="peer_skipped", value=float("nan"), unit="-",
                    note="pythae is not installed (pip install -e '.[peer]'): no side-by-side measured")]
    rows: list[Row] = []
    n_train = budget.peer_images or data.train_images.shape[0]
    sliced = subset(data, n_train, budget.val_images)
    batch = budget.batch or cfg.train.batch_size
    pcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, batch_size=batch))
    pcfg = _with_width(pcfg, todo, PEER_WIDTH)
    for name in todo:
        ours, theirs = [], []
        for _ in range(budget.peer_reps):
            with tempfile.TemporaryDirectory(prefix="pie-perf-peer-") as tmp:
                run_dir = Path(tmp) / name
                run_dir.mkdir()
                model = new_model(name, pcfg, device)
                result = train_model(model, sliced, pcfg.train, seed=0, run_dir=run_dir, config_dict={},
                                     progress=False, log=lambda *a, **k: None)
                ours.append(result.seconds)
                theirs.append(_pythae_epoch(name, pcfg, sliced.train_images, device, Path(tmp) / "pythae"))
        t_ours, t_theirs = min(ours), min(theirs)
        ratio = t_theirs / t_ours
        common = (f"{n_train} training images, batch {batch}, latent {pcfg.models[name].latent_dim}, width "
                  f"{PEER_WIDTH:g}; best of {len(ours)} interleaved epochs; pythae {pythae_version}")
        rows += [
            Row(**base, model=name, metric="ours_images_per_s", value=n_train / t_ours, unit="images/s", batch=batch,
                note=f"bench.train.train_model, one epoch incl. validation on {sliced.val_images.shape[0]} images "
                f"and checkpoint; {common}"),
            Row(**base, model=name, metric="pythae_images_per_s", value=n_train / t_theirs, unit="images/s",
                batch=batch, note=f"pythae BaseTrainer.train(), one epoch, no eval set; {common}"),
            Row(**base, model=name, metric="peer_ratio", value=ratio, unit="x", batch=batch,
                note=f"ours / Pythae images/s; {common}"),
        ]
        log(f"  peer {name}: ours {n_train / t_ours:7.1f} img/s, pythae {n_train / t_theirs:7.1f} img/s, "
            f"ratio {ratio:.2f}")
    return rows


def _with_width(cfg: Config, names: list[str], width: float) -> Config:
    models = dict(cfg.models)
    for n in names:
        models[n] = dataclasses.replace(models[n], width=width)
    return dataclasses.replace(cfg, models=models)
