"""VIkwargs, the alias pair and how layers pass the VI keyword arguments on."""

import pytest
import torch

from torch_blue import vi
from torch_blue.vi.distributions import MeanFieldNormal
from torch_blue.vi.utils.common_types import VIkwargs, check_vi_kwargs, vi_kwargs

KEYWORD_ONLY = [
    (vi.VIConvTranspose2d, (2, 3, 3)),
    (vi.VIEmbedding, (10, 4)),
    (vi.VIBatchNorm1d, (4,)),
    (vi.VILayerNorm, (4,)),
    (vi.VILSTM, (3, 5)),
]


def test_vikwargs_lists_upstreams_keys_and_the_optional_estimator():
    keys = set(VIkwargs.__annotations__)
    assert "estimator" in keys and "estimator" in VIkwargs.__optional_keys__
    assert keys - {"estimator"} == set(VIkwargs.__required_keys__)


def test_vi_kwargs_picks_the_forwarded_arguments_from_a_namespace():
    namespace = {key: object() for key in VIkwargs.__required_keys__}
    namespace.update(in_features=3, estimator="flipout")
    picked = vi_kwargs(namespace)
    assert set(picked) == set(VIkwargs.__required_keys__)
    assert all(picked[key] is namespace[key] for key in picked)


@pytest.mark.parametrize(
    ("cls", "args"), KEYWORD_ONLY, ids=lambda v: getattr(v, "__name__", "")
)
def test_layers_without_an_upstream_signature_take_vi_arguments_by_keyword(cls, args):
    layer = cls(*args, return_log_probs=False, dtype=torch.float64)
    assert not layer.return_log_probs
    assert next(layer.parameters()).dtype == torch.float64
    with pytest.raises(
        TypeError, match=rf"{cls.__name__}: unexpected keyword arguments \['priors'\]"
    ):
        cls(*args, priors=MeanFieldNormal())


def test_check_vi_kwargs_returns_a_copy():
    given = {"dtype": torch.float64}
    checked = check_vi_kwargs("Layer", given)
    assert checked == given and checked is not given
