"""Per-cell array shapes shared by every layer (base layer: imports nothing of ours).

ROI_SHAPE: the detector's RoIAlign features of one cell, (channels, height, width) = (256, 14, 14) (METHODS §1.3).
CROP_SHAPE: one cell's image crop, (3, 128, 128) RGB uint8 (METHODS §1.4).
"""
ROI_SHAPE = (256, 14, 14)
CROP_SHAPE = (3, 128, 128)
