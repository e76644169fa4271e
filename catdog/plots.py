"""Figures people look at: learning curves with the train/val gap, confusion matrix, ROC,
and the comparison of architectures. Each returns a matplotlib Figure; callers save or log it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files and MLflow artifacts, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(history: dict[str, list[float]], title: str = ""):
    """Loss and accuracy per epoch, train vs val, with the gap between them shaded."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        train = np.asarray(history.get(metric, []), dtype=float)
        val = np.asarray(history.get(f"val_{metric}", []), dtype=float)
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, "o-", label=f"train {metric}")
        if len(val):
            ax.plot(epochs[: len(val)], val, "s-", label=f"val {metric}")
            k = min(len(train), len(val))
            ax.fill_between(epochs[:k], train[:k], val[:k], alpha=0.15, color="tab:red",
                            label="train-val gap")
        if metric == "accuracy" and len(val):
            best = int(np.argmax(val))
            ax.axvline(best + 1, ls="--", c="grey", lw=1)
            ax.annotate(f"best {val[best]:.3f}\ngap {train[best] - val[best]:+.3f}",
                        (best + 1, val[best]), textcoords="offset points", xytext=(5, -30))
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title or "learning curves")
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, labels=("cat", "dog"), title: str = ""):
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=13)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return fig


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float, title: str = ""):
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", c="grey", lw=1)
    ax.set_xlabel("false positive rate (cats called dogs)")
    ax.set_ylabel("true positive rate (dogs found)")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
