"""Synthetic multi-domain blood-smear data: the embedded default for the demo and the tests.

Procedurally drawn fields (plasma, red cells with central pallor, white cells of five classes with
class-specific nuclei, cytoplasm and granules), rendered per lab with its own stain colours,
lighting, magnification, blur, noise, crop framing and class mix. No downloads, no real data.

>>> from aecfe.synthetic import default_domains, make_single_cell_images
>>> lab_a, lab_b, lab_c = default_domains()
>>> cells = make_single_cell_images(lab_b, 4, seed=0)
>>> cells[0].image.shape, cells[0].masks.shape, cells[0].labels[0] in lab_b.present_classes
((128, 128, 3), (1, 128, 128), True)
"""
from aecfe.synthetic.generator import Field, make_fields, make_single_cell_images, mask_to_box
from aecfe.synthetic.styles import CLASSES, DomainStyle, Illumination, Stain, default_domains
from aecfe.synthetic.writers import uncompressed_rle, write_class_folders, write_coco

__all__ = [
    "CLASSES", "DomainStyle", "Field", "Illumination", "Stain", "default_domains", "make_fields",
    "make_single_cell_images", "mask_to_box", "uncompressed_rle", "write_class_folders",
    "write_coco",
]
