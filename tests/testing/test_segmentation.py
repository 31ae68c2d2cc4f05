"""The threshold segmenter: each voxel's logits depend on that voxel only."""

from __future__ import annotations

import torch

from medmdm.testing import ThresholdSegmenter, box_image, region_mask


def test_each_voxel_depends_on_itself_only() -> None:
    box = ((2, 5), (3, 7), (1, 4))
    x = box_image((8, 8, 6), box, channels=2)
    model = ThresholdSegmenter(threshold=0.5, gain=4.0)
    logits = model(x)
    assert logits.shape == (1, 2, 8, 8, 6)
    torch.testing.assert_close(logits[:, 1], 4.0 * (x.mean(1) - 0.5))
    torch.testing.assert_close(logits[:, 0], -logits[:, 1])
    assert torch.equal(logits.argmax(1)[0], region_mask((8, 8, 6), box))
    changed = x.clone()
    changed[..., 0, 0, 0] = 9.0
    difference = (model(changed) - logits).abs().sum(1)[0]
    assert difference[0, 0, 0] > 0 and difference.flatten()[1:].eq(0).all()
