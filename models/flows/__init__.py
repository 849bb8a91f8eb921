"""Invertible layers of the Pseudo-Invertible Encoder (PIE, ICLR 2019 submission).

Direction convention (see :class:`Bijector`): ``forward`` maps data to latent.

- :class:`CheckerboardDownsample`: space-to-depth, Sec. 4.4.
- :class:`AffineCoupling`: two-sided affine coupling, Eq. 18.
- :class:`HouseholderConv1x1`, :class:`HouseholderLinear`: Householder products, Eq. 19.
- :class:`PseudoSplit`: split with residual density N(g(z), eps² I), Eq. 20 (not a bijection).
- :class:`LogitTransform`, :class:`CenterTransform`: [0, 1] pixels to the flow's domain.
- :func:`conv_net`, :func:`mlp`: the coupling and g_l sub-networks (zero-initialised output).
"""

from models.flows.base import Bijector, Sequential, Shape, check_shape
from models.flows.coupling import AffineCoupling, SubnetFactory
from models.flows.downsample import CheckerboardDownsample
from models.flows.householder import HouseholderConv1x1, HouseholderLinear
from models.flows.split import PseudoSplit
from models.flows.subnets import conv_net, mlp
from models.flows.transforms import CenterTransform, LogitTransform

__all__ = [
    "AffineCoupling",
    "Bijector",
    "CenterTransform",
    "CheckerboardDownsample",
    "HouseholderConv1x1",
    "HouseholderLinear",
    "LogitTransform",
    "PseudoSplit",
    "Sequential",
    "Shape",
    "SubnetFactory",
    "check_shape",
    "conv_net",
    "mlp",
]
