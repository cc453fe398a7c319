"""Writers of masks for other tools: PNG and NIfTI files (:mod:`~flipseg.export.masks`),
COCO RLE (:mod:`~flipseg.export.coco`), DICOM-SEG (:mod:`~flipseg.export.dicom_seg`) and
nnU-Net v2 raw datasets (:mod:`~flipseg.export.nnunet`).

Every file is written atomically with the usual permissions of a new file (``0o666`` less
the umask). Import the sub-module you need: pycocotools and highdicom are imported only
by theirs. ``docs/formats.md`` describes what each format holds.
"""

__all__: list[str] = []
