"""Pictures users look at during training."""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from mapseg_nnunet.data.atomic import atomic_path


def save_reconstruction_png(views: Dict[str, Tuple[np.ndarray, np.ndarray, np.ndarray]], path: str) -> None:
    """Rows: local patch and global view; columns: masked input, reconstruction, original (middle slice of the
    first channel), as the paper's Suppl. Fig. 3."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(views), 3, figsize=(9, 3 * len(views)))
    axes = np.atleast_2d(axes)
    for row, (name, volumes) in enumerate(views.items()):
        # one grey scale per row, the original's range ([0, 1] in MAPSeg's convention, wider on z-scored data)
        vmin, vmax = np.percentile(volumes[2][0], (0.5, 99.5))
        for col, (title, volume) in enumerate(zip(("masked input", "reconstruction", "original"), volumes)):
            ax = axes[row, col]
            ax.imshow(volume[0, volume.shape[1] // 2], cmap="gray", vmin=vmin, vmax=max(vmax, vmin + 1e-6))
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
