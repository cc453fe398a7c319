"""Weakly supervised segmentation by image selection (paper 002): ``cam-mt``.

From image-level labels (tumor / normal) only: a CAM classifier (one branch, or
spotlight + compensation branches), Algorithm 1 and the ROI-stability rule to
pick the images whose CAMs are trustworthy, pseudo masks from a box -> mask
engine prompted with their ROIs (Segment Anything, Flip Learning or any
baseline), and a Mean Teacher U-Net on pseudo-labelled and unlabelled images.
Importing :mod:`flipseg.methods` registers the ``sam`` segmenter.
"""

from flipseg.methods.common import lazy_exports

# Names are imported on first use so that `flipseg --help` does not load PyTorch.
__all__, __getattr__ = lazy_exports(__name__, {
    "CamClassifier": "flipseg.methods.cam_mt.cams",
    "CamClassifierConfig": "flipseg.methods.cam_mt.config",
    "CamMTConfig": "flipseg.methods.cam_mt.config",
    "CamMTModel": "flipseg.methods.cam_mt.mean_teacher",
    "MeanTeacherConfig": "flipseg.methods.cam_mt.config",
    "RoiSelection": "flipseg.methods.cam_mt.cams",
    "SamSegmenter": "flipseg.methods.cam_mt.engines",
    "SelectionConfig": "flipseg.methods.cam_mt.config",
    "TABLE_II_ROWS": "flipseg.methods.cam_mt.pipeline",
    "compute_cams": "flipseg.methods.cam_mt.cams",
    "evaluate_segmentations": "flipseg.methods.cam_mt.pipeline",
    "make_engine": "flipseg.methods.cam_mt.engines",
    "normalize_cam": "flipseg.methods.cam_mt.cams",
    "paper_config": "flipseg.methods.cam_mt.config",
    "prepare_pseudo_labels": "flipseg.methods.cam_mt.pipeline",
    "roi_from_cam": "flipseg.methods.cam_mt.cams",
    "rois_agree": "flipseg.methods.cam_mt.cams",
    "run_cam_mt": "flipseg.methods.cam_mt.pipeline",
    "run_table_ii": "flipseg.methods.cam_mt.pipeline",
    "select_image": "flipseg.methods.cam_mt.cams",
    "top_percent_threshold": "flipseg.methods.cam_mt.cams",
    "train_cam_classifier": "flipseg.methods.cam_mt.cams",
    "train_mean_teacher": "flipseg.methods.cam_mt.mean_teacher",
})
