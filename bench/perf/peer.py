"""Section ``peer``: one training epoch against Pythae's ``BaseTrainer`` (optional extra)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.config import Config
from bench.data import ImageData
from bench.perf.common import PEER_WIDTH, Budget, Row, new_model, subset
from bench.perf.timing import sync, uses_bf16


def _pythae_model(name: str, latent: int, width: float, shape: tuple[int, ...]):
    """Pythae's VAE / WAE-MMD around the harness's own DCGAN encoder and decoder (identical nets)."""
    from pythae.models import VAE, WAE_MMD, VAEConfig, WAE_MMD_Config
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    from baselines.nets import ConvDecoder, ConvEncoder

    class Encoder(BaseEncoder):
        def __init__(self):
            BaseEncoder.__init__(self)
            self.net = ConvEncoder(2 * latent if name == "vae" else latent, width, image_shape=shape)

        def forward(self, x):
            h = self.net(x)
            if name == "vae":
                mu, logvar = h.chunk(2, dim=1)
                return ModelOutput(embedding=mu, log_covariance=logvar)
            return ModelOutput(embedding=h)

    class Decoder(BaseDecoder):
        def __init__(self):
            BaseDecoder.__init__(self)
            self.net = ConvDecoder(latent, width, image_shape=shape)

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    if name == "vae":
        cfg = VAEConfig(input_dim=shape, latent_dim=latent, reconstruction_loss="mse")
        return VAE(cfg, encoder=Encoder(), decoder=Decoder())
    cfg = WAE_MMD_Config(input_dim=shape, latent_dim=latent, kernel_choice="imq", reg_weight=10.0)
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
    shape = tuple(cfg.models[name].image_shape)
    model = _pythae_model(name, cfg.models[name].latent_dim, PEER_WIDTH, shape)
    x = images.float().div(255.0).reshape(-1, *shape).cpu()
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
    ``BaseTrainer`` on identical DCGAN nets (width ``PEER_WIDTH``), latent and batch.

    ``budget.peer_reps`` interleaved rounds per model, each: our epoch in fp32 (the default
    config), Pythae's epoch, our epoch with ``train.bf16`` (models that allow it). The ratio is
    median(Pythae seconds) / median(our seconds), so one disturbed epoch does not decide it.
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
    n_all = data.train_images.shape[0]
    n_train = min(budget.peer_images or n_all, n_all)
    sliced = subset(data, n_train, budget.peer_val_images)
    n_val = sliced.val_images.shape[0]
    batch = budget.batch or cfg.train.batch_size
    pcfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, batch_size=batch))
    pcfg = _with_width(pcfg, todo, PEER_WIDTH)

    def ours(name: str, tcfg, tmp: Path) -> float:
        run_dir = tmp / name
        run_dir.mkdir()
        model = new_model(name, pcfg, device)
        return train_model(model, sliced, tcfg, seed=0, run_dir=run_dir, progress=False,
                           log=lambda *a, **k: None).seconds

    for name in todo:
        variants = {"": pcfg.train}
        if uses_bf16(pcfg, new_model(name, pcfg, device), True):
            variants["[bf16]"] = dataclasses.replace(pcfg.train, bf16=True)
        seconds: dict[str, list[float]] = {k: [] for k in [*variants, "pythae"]}
        for _ in range(max(1, budget.peer_reps)):
            for key in ["", "pythae", *list(variants)[1:]]:
                with tempfile.TemporaryDirectory(prefix="pie-perf-peer-") as tmp:
                    seconds[key].append(_pythae_epoch(name, pcfg, sliced.train_images, device, Path(tmp) / "pythae")
                                        if key == "pythae" else ours(name, variants[key], Path(tmp)))
        t = {k: statistics.median(v) for k, v in seconds.items()}
        part = "the whole training split" if n_train == n_all else f"the first {n_train} of {n_all} training images"
        common = (f"{part}, batch {batch}, latent {pcfg.models[name].latent_dim}, width {PEER_WIDTH:g}; median "
                  f"of {len(seconds['pythae'])} interleaved epochs (ours fp32, Pythae, ours bf16); "
                  f"pythae {pythae_version}")
        ours_note = (f"bench.train.train_model, one epoch incl. validation on {n_val} images and the checkpoint "
                     f"(Pythae's run has no validation: conservative for us); {common}")
        rows.append(Row(**base, model=name, metric="pythae_images_per_s", value=n_train / t["pythae"],
                        unit="images/s", batch=batch,
                        note=f"pythae BaseTrainer.train(), one epoch, no eval set; {common}"))
        for key in variants:
            how = ", train.bf16 (bf16 autocast; numbers change)" if key else ", fp32 (the default config)"
            rows += [
                Row(**base, model=name, metric=f"ours_images_per_s{key}", value=n_train / t[key], unit="images/s",
                    batch=batch, note=ours_note + how),
                Row(**base, model=name, metric=f"peer_ratio{key}", value=t["pythae"] / t[key], unit="x", batch=batch,
                    note=f"median Pythae seconds / median our seconds{how}; {common}"),
            ]
        log(f"  peer {name}: pythae {n_train / t['pythae']:7.1f} img/s; "
            + ", ".join(f"ours{k or '[fp32]'} {n_train / t[k]:7.1f} img/s (ratio {t['pythae'] / t[k]:.2f})"
                        for k in variants))
    return rows


def _with_width(cfg: Config, names: list[str], width: float) -> Config:
    models = dict(cfg.models)
    for n in names:
        models[n] = dataclasses.replace(models[n], width=width)
    return dataclasses.replace(cfg, models=models)
