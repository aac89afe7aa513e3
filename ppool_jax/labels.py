"""Label conventions shared by the data pipeline, the metrics and the training step.

A dependency-free module, so that the training step and the metrics need not import the data
pipeline (and with it PIL) for one constant.
"""

IGNORE = 255  # void / "don't care": never trained on, never scored (VOC's 255)
