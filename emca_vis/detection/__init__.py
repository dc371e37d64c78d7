"""Detection and instance segmentation: torchvision's detectors over emca-vis backbones
(:mod:`.models`), COCO-format data and the synthetic ``multishapes`` (:mod:`.data`), COCO
metrics by pycocotools (:mod:`.evaluate`).

Importing the package itself is cheap (names only); the submodules load torchvision's
detection code and pycocotools.
"""

from .names import FAMILIES, is_detector_name, list_detectors, parse_detector_name

__all__ = ["FAMILIES", "is_detector_name", "list_detectors", "parse_detector_name"]
