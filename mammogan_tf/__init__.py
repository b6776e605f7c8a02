"""mammogan_tf: GAN-based lesion synthesis and data augmentation for breast imaging.

Stages (each writes a folder with ``manifest.json``):
``prepare`` (images + annotations -> patch shards), ``train`` (shards -> checkpoints),
``synthesize`` (checkpoint -> marked synthetic patches), ``evaluate`` (-> metrics, plots).
"""

__version__ = "0.1.0"
