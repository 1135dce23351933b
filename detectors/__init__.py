"""White-cell detectors: one :class:`Detector` interface over torchvision (default) or detectron2
Mask R-CNN backends, the cell store's "roi" stage, training and evaluation.

>>> from detectors import make_detector
>>> detector = make_detector(backbone="mobilenet_v2", weights=None, min_size=256, max_size=512)
"""
from detectors.base import (CROP_SIZE, ROI_SHAPE, Detections, Detector, DetectorBackend, RawDetections,
                            detectron2_available, make_detector)
from detectors.roi_stage import RoiStageReport, record_fields, write_roi_stage

__all__ = ["CROP_SIZE", "ROI_SHAPE", "Detections", "Detector", "DetectorBackend", "RawDetections",
           "RoiStageReport", "detectron2_available", "make_detector", "record_fields", "write_roi_stage"]
