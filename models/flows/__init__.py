"""Invertible layers of the Pseudo-Invertible Encoder (PIE, ICLR 2019 submission).

Direction convention (see :class:`Bijector`): ``forward`` maps data to latent.

- :class:`CheckerboardDownsample`: space-to-depth, Sec. 4.4.
- :class:`AffineCoupling`: two-sided affine coupling, Eq. 18.
- :class:`HouseholderConv1x1`, :class:`HouseholderLinear`: Householder products, Eq. 19.
- :class:`PseudoSplit`: split with residual density N(g(z), eps² I), Eq. 20 (not a bijection).
"""

from models.flows.base import Bijector, Sequential, Shape, check_shape
from models.flows.coupling import AffineCoupling, SubnetFactory
from models.flows.downsample import CheckerboardDownsample
from models.flows.householder import HouseholderConv1x1, HouseholderLinear
from models.flows.split import PseudoSplit

__all__ = [
    "AffineCoupling",
    "Bijector",
    "CheckerboardDownsample",
    "HouseholderConv1x1",
    "HouseholderLinear",
    "PseudoSplit",
    "Sequential",
    "Shape",
    "SubnetFactory",
    "check_shape",
]
