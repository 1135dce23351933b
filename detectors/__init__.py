"""White-cell detectors: one :class:`Detector` interface over torchvision (default) or detectron2
Mask R-CNN backends, detection over image records (:mod:`detectors.records`), training and evaluation.
The cell store's roi stage that writes the detections is :func:`aecfe.store.roi.write_roi_stage`.

>>> from detectors import make_detector
>>> detector = make_detector(backbone="mobilenet_v2", weights=None, min_size=256, max_size=512)
"""
from detectors.base import (CROP_SIZE, ROI_SHAPE, Detections, Detector, DetectorBackend, RawDetections,
                            detectron2_available, make_detector)
from detectors.records import ImageOutcome, detect_records, record_fields

__all__ = ["CROP_SIZE", "ROI_SHAPE", "Detections", "Detector", "DetectorBackend", "ImageOutcome", "RawDetections",
           "detect_records", "detectron2_available", "make_detector", "record_fields"]
