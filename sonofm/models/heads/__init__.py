"""Task heads that sit on an image tower's `feature_maps`.

- `pyramid`: multi-level decoders shared by dense heads: the UNETR-style decoder for ViT/DINOv2
  (four same-stride maps lifted to a pyramid) and the UNet/FPN-style decoder for Swin/ConvNeXt/
  MONAI-SwinV2 pyramids, plus the hybrid-tuning (NextGen-UIA) fusion of blocks at 1/4, 1/2, 3/4 depth.
- `segmentation`, `classification`: heads of the `segment` and `classify` fine-tuning tasks.
- `landmarks`, `regression`, `detection`, `enhancement`: heads of the other fine-tuning tasks.

Every head is ``head(feature_maps: list[Tensor]) -> Tensor | dict``; a head whose class sets
``wants_image = True`` is called as ``head(feature_maps, image=images)`` by `TaskModel` (UNETR's
full-resolution skip connection from the input image).
"""

from __future__ import annotations
