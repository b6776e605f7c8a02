"""mammogan_tf: GAN-based lesion synthesis and data augmentation for breast imaging.

Stages (each writes a folder with ``manifest.json``):
``prepare`` (images + annotations -> patch shards), ``train`` (shards -> checkpoints),
``synthesize`` (checkpoint -> marked synthetic patches), ``evaluate`` (-> metrics, plots).
"""

import os

# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512 VNNI/BF16 or
# AMX; elsewhere (AVX2 machines, most AMD EPYC/Ryzen) convolutions fall back to Eigen, about 2x
# slower for our GAN steps (benchmarks/README: fridadar64 3.7 -> 7.3 images/s on 2 AVX2 cores).
# On unless the user chose (TF_ENABLE_ONEDNN_OPTS=0 turns it off); it must be set before
# TensorFlow is imported, which importing this package first ensures.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
