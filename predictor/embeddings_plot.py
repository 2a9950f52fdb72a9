"""Pictures of the learned task meta-features z (task-aware-performance-prediction.md Sec. 5.4, Fig. 4;
ranking-architectures-meta-learning.md Appendix A.5): PCA and t-SNE of z computed from 10 random
sample batches per task. Batches of one task should land close together.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import torch

from nasdb.errors import ArgumentError
from predictor.model import PerformancePredictor

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore


def batch_embeddings(model: PerformancePredictor, tasks: dict[str, tuple[np.ndarray, np.ndarray]], *,
                     n_batches: int = 10, batch_size: int | None = None, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """z of ``n_batches`` random sample batches per task: (labels, (T * n_batches, Z)).

    A batch holds ``batch_size`` samples (default: the training batch size), at most half of
    the task's samples, so that the batches of a small task are different realizations too.
    """
    if model.phi is None:
        raise ArgumentError("this predictor was built without meta-features: there is no z to plot")
    batch_size = batch_size or model.config.sample_batch_size
    rng = np.random.default_rng(seed)
    labels, zs = [], []
    with torch.no_grad():
        for name, (x, y) in tasks.items():
            size = max(1, min(batch_size, len(x) // 2))
            for _ in range(n_batches):
                idx = rng.choice(len(x), size, replace=False)
                z = model.embed_task(torch.as_tensor(x[idx], dtype=torch.float32),
                                     torch.as_tensor(y[idx], dtype=torch.int64))  # (Z,)
                labels.append(name)
                zs.append(z.numpy())
    return labels, np.stack(zs)  # (T * n_batches, Z)


def plot_embeddings(labels: list[str], z: np.ndarray, out_dir: str | os.PathLike, *, perplexity: float = 70.0,
                    seed: int = 0, highlight: Iterable[str] = (), title: str = "task meta-features") -> list[Path]:
    """Write ``task_embeddings_pca.png`` and ``task_embeddings_tsne.png``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z = np.asarray(z, dtype=np.float64)
    names = list(dict.fromkeys(labels))
    highlight = set(highlight)
    # t-SNE needs perplexity < number of points; the paper's 70 fits 16 tasks x 10 batches.
    perp = min(perplexity, max(2.0, (len(z) - 1) / 3))
    projections = {
        "pca": PCA(n_components=2, random_state=seed).fit_transform(z),
        "tsne": TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(z),
    }
    cmap = plt.get_cmap("tab20")
    paths = []
    for kind, xy in projections.items():
        fig, ax = plt.subplots(figsize=(8, 6.5))
        for i, name in enumerate(names):
            mask = np.array([lab == name for lab in labels])
            ax.scatter(xy[mask, 0], xy[mask, 1], s=40 if name in highlight else 18, label=name,
                       color="black" if name in highlight else cmap(i % 20),
                       marker="*" if name in highlight else "o")
        ax.set_title(f"{title}: {kind.upper()}" + (f" (perplexity {perp:g})" if kind == "tsne" else ""))
        ax.legend(fontsize=7, loc="best", ncol=2)
        fig.tight_layout()
        path = out / f"task_embeddings_{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_predictor_embeddings(store: ExperimentStore, out_dir: str | os.PathLike, predictor_id: str | None = None, *,
                              extra_tasks: Iterable[str] = (), n_batches: int = 10, seed: int = 0) -> list[Path]:
    """Plot the z of a stored predictor's training tasks plus ``extra_tasks`` (e.g. held-out ones, starred)."""
    from predictor.checkpoint import load_predictor

    ckpt = load_predictor(store, predictor_id)
    extra = [t for t in extra_tasks if t not in ckpt.tasks]
    tasks = {name: store.task(name).samples("train") for name in [*ckpt.tasks, *extra]}
    labels, z = batch_embeddings(ckpt.model, tasks, n_batches=n_batches, seed=seed)
    return plot_embeddings(labels, z, out_dir, seed=seed, highlight=extra,
                           title=f"predictor {ckpt.predictor_id} meta-features")


if __name__ == "__main__":  # the CLI's entry point (predictor/cli.py)
    from predictor.cli import embeddings_main

    raise SystemExit(embeddings_main())
