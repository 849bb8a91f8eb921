"""Classification metrics: accuracy of given logits and a linear probe on latent codes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of ``[N, C]`` logits whose argmax equals ``labels [N]``."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    return float((logits.argmax(1) == labels).double().mean())


def linear_probe_accuracy(
    train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor,
    n_classes: int = 10, max_iter: int = 300, l2: float = 1e-4,
) -> float:
    """Test accuracy of multinomial logistic regression fitted on codes ``[N, d]``.

    Features are standardised with the training codes' mean and std. The fit is
    full-batch L-BFGS (strong Wolfe line search) in float64 from zero weights, with an
    L2 penalty ``l2 · ||W||² / 2`` (MNIST codes can be separable): deterministic, so
    it needs no seed. Non-finite codes give NaN.

    Reference: Alain & Bengio 2017, "Understanding intermediate layers using linear
    classifier probes".
    """
    if train_z.dim() != 2 or test_z.dim() != 2 or train_z.shape[1] != test_z.shape[1]:
        raise ValueError(f"expected codes [N, d] and [M, d], got {tuple(train_z.shape)} and {tuple(test_z.shape)}")
    if not (torch.isfinite(train_z).all() and torch.isfinite(test_z).all()):
        return float("nan")
    # Autograd inside an inference-mode caller: leave it, and copy the (inference) inputs.
    with torch.inference_mode(False), torch.enable_grad():
        x = train_z.detach().to(torch.float64).clone()
        y = train_y.detach().clone()
        mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
        x = (x - mean) / std
        w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, device=x.device, requires_grad=True)
        b = torch.zeros(n_classes, dtype=torch.float64, device=x.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-9, tolerance_change=1e-12, history_size=20)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(x @ w + b, y) + 0.5 * l2 * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        xt = (test_z.detach().to(torch.float64).clone() - mean) / std
        return accuracy((xt @ w + b).detach(), test_y.detach().clone())
