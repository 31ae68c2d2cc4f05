"""The ViT classifier: MONAI's ViT, its logits only."""

from __future__ import annotations

import torch
from monai.networks.nets import ViT

from medmdm.testing import ViTClassifier

OPTIONS = {
    "in_channels": 1,
    "img_size": (32, 32),
    "patch_size": 8,
    "hidden_size": 16,
    "mlp_dim": 32,
    "num_layers": 1,
    "num_heads": 2,
    "spatial_dims": 2,
}


def test_it_returns_the_logits_of_monai_vit_with_the_same_weights() -> None:
    torch.manual_seed(0)
    model = ViTClassifier(**OPTIONS).eval()
    reference = ViT(classification=True, **OPTIONS).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.rand((3, 1, 32, 32))
    logits = model(x)
    assert logits.shape == (3, 2)
    torch.testing.assert_close(logits, reference(x)[0])
