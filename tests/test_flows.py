"""The bijector test recipe (STYLE.md §3) for every PIE layer, plus layer-specific properties."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from flow_helpers import (
    BIJECTORS,
    DTYPE,
    autograd_logdet,
    coupling_additive_conv,
    coupling_saturated,
    perturb,
)
from torch.distributions import Normal

from models.flows import (
    AffineCoupling,
    CheckerboardDownsample,
    HouseholderConv1x1,
    HouseholderLinear,
    PseudoSplit,
    conv_net,
    mlp,
)


def ids(make) -> str:
    return make.__name__


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest.one_thread)."""


@pytest.mark.parametrize("make", BIJECTORS, ids=ids)
def test_well_formed(make):
    layer, x = make(batch=3)
    y, logdet = layer(x)
    assert y.shape == (3, *layer.output_shape(tuple(x.shape[1:])))
    assert y.dtype == x.dtype == logdet.dtype == DTYPE
    assert logdet.shape == (3,)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    # Non-identity: the parameters were perturbed (or the layer permutes/shifts by design).
    assert (y.reshape(3, -1) - x.reshape(3, -1)).abs().max() > 1e-2


@pytest.mark.parametrize("make", BIJECTORS, ids=ids)
def test_round_trip(make):
    layer, x = make(batch=3)
    y, _ = layer(x)
    x_back, _ = layer.inverse(y)
    torch.testing.assert_close(x_back, x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("make", BIJECTORS, ids=ids)
def test_logdet_matches_autograd(make):
    layer, x = make(batch=1)
    _, logdet = layer(x)
    expected = autograd_logdet(lambda v: layer(v)[0], x)
    torch.testing.assert_close(logdet[0], expected, atol=1e-8, rtol=0)


@pytest.mark.parametrize("make", BIJECTORS, ids=ids)
def test_forward_and_inverse_logdets_cancel(make):
    layer, x = make(batch=3)
    y, logdet = layer(x)
    _, logdet_inv = layer.inverse(y)
    torch.testing.assert_close(logdet + logdet_inv, torch.zeros_like(logdet), atol=1e-10, rtol=0)


def test_additive_coupling_preserves_volume_and_still_mixes():
    layer, x = coupling_additive_conv(batch=3)
    y, logdet = layer(x)
    assert torch.equal(logdet, torch.zeros(3, dtype=DTYPE))
    # Sub-networks output only the shift: one channel per feature of the half they update.
    assert layer.net1[-1].out_channels == layer.c1 and layer.net2[-1].out_channels == layer.c2
    assert (y - x).abs().max() > 1e-2  # both halves are shifted, it is not the identity


def test_scale_clamp_bounds_every_scale():
    layer, x = coupling_saturated(batch=64)
    c = layer.scale_clamp
    x1, x2 = x.split([layer.c1, layer.c2], dim=1)
    log_s1, _ = layer._scale_shift(layer.net1, x2, layer.c1)
    raw = layer.net1(x2)[:, : layer.c1]
    assert raw.abs().max() > 3 * c  # the raw log-scales do reach far past the clamp...
    assert log_s1.abs().max() <= c  # ...and the applied scales stay in [e^-c, e^c]
    assert log_s1.abs().max() > 0.9 * c
    _, logdet = layer(x)
    assert logdet.abs().max() <= c * 6  # 6 scaled features, each |log s| <= c


@pytest.mark.parametrize("n", [1, 3, 4, 8, 20])  # <= 3: one by one; more: compact WY form
def test_householder_matrix_is_the_product_of_its_reflections(n):
    torch.manual_seed(n)
    layer = HouseholderLinear(8, n).to(DTYPE)
    expected = torch.eye(8, dtype=DTYPE)
    for v in layer.vectors:  # W = H(v_n) ... H(v_1), each H(v) = I - 2 v vᵀ / vᵀv built densely
        expected = (torch.eye(8, dtype=DTYPE) - 2 * torch.outer(v, v) / v.dot(v)) @ expected
    torch.testing.assert_close(layer.matrix(), expected, atol=1e-13, rtol=0)


@pytest.mark.parametrize("cls", [HouseholderConv1x1, HouseholderLinear])
def test_householder_full_rank_reaches_any_direction(cls):
    """3 reflections in a width-8 map fix a 5-d subspace (W - I has rank <= 3); 8 do not."""
    torch.manual_seed(0)
    few, full = cls(8, 3).to(DTYPE), cls(8, 8).to(DTYPE)
    eye = torch.eye(8, dtype=DTYPE)
    assert torch.linalg.matrix_rank(few.matrix() - eye) == 3
    assert torch.linalg.matrix_rank(full.matrix() - eye) == 8
    w = full.matrix()
    torch.testing.assert_close(w @ w.T, eye, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cls", [HouseholderConv1x1, HouseholderLinear])
def test_householder_is_orthogonal(cls):
    torch.manual_seed(0)
    layer = cls(7, 3).to(DTYPE)
    w = layer.matrix()
    eye = torch.eye(7, dtype=DTYPE)
    torch.testing.assert_close(w @ w.T, eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(w.T @ w, eye, atol=1e-12, rtol=0)
    # A product of 3 reflections is an improper rotation (det -1), not a permutation/identity.
    torch.testing.assert_close(torch.linalg.det(w), torch.tensor(-1.0, dtype=DTYPE))
    assert (w - eye).abs().max() > 1e-2


@pytest.mark.parametrize("n", [1, 3, 4, 8])  # both sides of SEQUENTIAL_MAX_REFLECTIONS, and full width
@pytest.mark.parametrize("cls, shape", [(HouseholderConv1x1, (5, 8, 3, 3)), (HouseholderLinear, (5, 8))])
def test_householder_impls_agree_forward_inverse_and_gradients(cls, shape, n):
    """``impl="reflections"`` is the same map as the materialised matrix (the default)."""
    torch.manual_seed(n)
    matrix = cls(8, n).to(DTYPE)
    refl = cls(8, n, impl="reflections").to(DTYPE)
    refl.load_state_dict(matrix.state_dict())
    x = torch.randn(shape, dtype=DTYPE, requires_grad=True)
    outs = {}
    for name, layer in (("matrix", matrix), ("reflections", refl)):
        y, logdet = layer(x)
        x_back, logdet_inv = layer.inverse(y)
        grads = torch.autograd.grad((y * torch.arange(y.numel(), dtype=DTYPE).view_as(y)).sum(),
                                    [x, layer.vectors])
        outs[name] = (y, x_back, logdet, logdet_inv, *grads)
    assert (outs["reflections"][0] - x).abs().max() > 1e-2  # not the identity
    for got, expected in zip(outs["reflections"], outs["matrix"], strict=True):
        torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)  # float64 rounding (gradients ~1e3)


def test_householder_set_impl_switches_every_map_of_a_pie_and_keeps_its_outputs():
    from flow_helpers import tiny_pie_config

    from models.flows.householder import householder_maps, set_impl
    from models.pie import PIE

    torch.manual_seed(0)
    model = perturb(PIE(tiny_pie_config()).to(DTYPE), scale=0.1).eval()
    x = torch.rand(3, 1, 8, 8, dtype=DTYPE) * 0.9 + 0.05
    z = torch.randn(3, model.latent_dim, dtype=DTYPE)
    with torch.no_grad():
        loss, image = model.loss(x)["loss"], model.decode(z)
        n_maps = 2 * len(model.blocks)  # couplings_per_block = 2: one map after each coupling
        assert set_impl(model, "reflections") == len(householder_maps(model)) == n_maps
        assert {m.impl for m in householder_maps(model)} == {"reflections"}
        torch.testing.assert_close(model.loss(x)["loss"], loss, atol=1e-12, rtol=0)
        torch.testing.assert_close(model.decode(z), image, atol=1e-12, rtol=0)
        set_impl(model, "matrix")
        assert torch.equal(model.loss(x)["loss"], loss)  # back to the default path, bit for bit
    with pytest.raises(ValueError, match="impl"):
        set_impl(model, "dense")
    with pytest.raises(ValueError, match="impl"):
        HouseholderLinear(4, 2, impl="dense")


def test_householder_conv_mixes_channels_per_pixel():
    torch.manual_seed(0)
    layer = HouseholderConv1x1(4, 3).to(DTYPE)
    x = torch.randn(2, 4, 3, 5, dtype=DTYPE)
    expected = torch.einsum("ij,bjhw->bihw", layer.matrix(), x)
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-12, rtol=0)


def test_downsample_arange_layout():
    x = torch.arange(16, dtype=DTYPE).reshape(1, 1, 4, 4)
    y, logdet = CheckerboardDownsample()(x)
    # y[:, 2i + j, h, w] = x[:, 0, 2h + i, 2w + j]: one channel per checkerboard phase.
    expected = torch.tensor(
        [[[[0, 2], [8, 10]], [[1, 3], [9, 11]], [[4, 6], [12, 14]], [[5, 7], [13, 15]]]],
        dtype=DTYPE,
    )
    assert torch.equal(y, expected)
    assert torch.equal(logdet, torch.zeros(1, dtype=DTYPE))
    # Two input channels: channel c fills output channels 4c .. 4c + 3.
    x2 = torch.arange(32, dtype=DTYPE).reshape(1, 2, 4, 4)
    y2, _ = CheckerboardDownsample()(x2)
    assert torch.equal(y2[:, 4:], expected + 16)
    assert torch.equal(CheckerboardDownsample().inverse(y2)[0], x2)


def test_downsample_rejects_odd_sizes():
    with pytest.raises(ValueError, match="even"):
        CheckerboardDownsample().output_shape((1, 7, 7))


@pytest.mark.parametrize(
    "shape, wrong",
    [((4, 3, 3), (2, 4, 2, 2)), ((4, 3, 3), (2, 6, 3, 3)), ((6,), (2, 5)), ((6,), (2, 6, 1))],
)
def test_coupling_rejects_wrong_input_shape(shape, wrong):
    sub = partial(conv_net, hidden=4) if len(shape) == 3 else partial(mlp, hidden=4)
    layer = AffineCoupling(shape, sub).to(DTYPE)
    with pytest.raises(ValueError, match="expects"):
        layer(torch.zeros(wrong, dtype=DTYPE))
    with pytest.raises(ValueError, match="expects"):
        layer.inverse(torch.zeros(wrong, dtype=DTYPE))
    with pytest.raises(ValueError, match="expects"):
        layer.output_shape(wrong[1:])


# --- PseudoSplit: NOT a bijection. merge is a right inverse of split; r is scored, not kept.


def _splits() -> list[tuple[PseudoSplit, tuple[int, ...]]]:
    torch.manual_seed(0)
    conv = PseudoSplit((4, 3, 3), 1, eps2=0.3, g=conv_net(1, 3, hidden=5))
    lin = PseudoSplit((7,), 3, eps2=0.3, g=mlp(3, 4, hidden=8))
    zero_g = PseudoSplit((7,), 2, eps2=1.0, g=None)
    return [
        (perturb(conv).to(DTYPE), (4, 3, 3)),
        (perturb(lin).to(DTYPE), (7,)),
        (zero_g.to(DTYPE), (7,)),
    ]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["conv", "linear", "g_zero"])
def test_split_merge_then_split_returns_z(index):
    split, shape = _splits()[index]
    z = torch.randn(3, *split.output_shape(shape), dtype=DTYPE)
    x = split.merge(z)
    assert x.shape == (3, *shape)
    z_again, r = split.split(x)
    assert torch.equal(z_again, z)
    assert torch.equal(r, split.predict_residual(z))
    if split.g is not None:
        assert r.abs().max() > 1e-2  # g was perturbed away from its zero initialisation


@pytest.mark.parametrize("index", [0, 1, 2], ids=["conv", "linear", "g_zero"])
def test_split_residual_term_matches_torch_normal(index):
    split, shape = _splits()[index]
    x = torch.randn(3, *shape, dtype=DTYPE)
    z, r, log_pr = split(x)
    assert torch.equal(z, x[:, : split.keep]) and torch.equal(r, x[:, split.keep :])
    mean = split.g(z) if split.g is not None else torch.zeros_like(r)
    # eps2 is a variance: the std handed to Normal is its square root.
    expected = Normal(mean, split.eps2**0.5).log_prob(r).flatten(1).sum(1)
    assert log_pr.shape == (3,)
    torch.testing.assert_close(log_pr, expected, atol=1e-10, rtol=0)


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variance"):
        PseudoSplit((4,), 2, eps2=0.0, g=None)
    with pytest.raises(ValueError, match="keep"):
        PseudoSplit((4,), 4, eps2=0.1, g=None)
