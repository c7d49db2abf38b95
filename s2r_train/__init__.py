"""s2r training side: perspective-crop data loading (``crops``, ``data``, ``splits``), the sim→real
GAN (models, losses, trainer), metrics and inference.

Nothing here is imported eagerly: ``import s2r_train`` stays cheap (no torch import).
"""

__version__ = "0.1.0"
