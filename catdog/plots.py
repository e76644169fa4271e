"""Figures people look at: learning curves with the train/val gap (and where overfitting
starts), confusion matrix, ROC, saliency maps, accuracy against training photos (the data
curve), and accuracy against inference cost. Each returns a matplotlib Figure; callers
save it, log it, or inline it in the report (`png_bytes`)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are files and MLflow artifacts, never windows

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(
    history: dict[str, list[float]],
    title: str = "",
    overfit_epoch: int | None = None,
    verdict: str | None = None,
):
    """Loss and accuracy per epoch, train vs val, with the gap between them shaded; a dotted red
    line where overfitting starts, and the fit verdict in the title."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        train = np.asarray(history.get(metric, []), dtype=float)
        val = np.asarray(history.get(f"val_{metric}", []), dtype=float)
        epochs = np.arange(1, len(train) + 1)
        ax.plot(epochs, train, "o-", label=f"train {metric}")
        if len(val):
            ax.plot(epochs[: len(val)], val, "s-", label=f"val {metric}")
            k = min(len(train), len(val))
            ax.fill_between(
                epochs[:k], train[:k], val[:k], alpha=0.15, color="tab:red", label="train-val gap"
            )
        if metric == "accuracy" and len(val):
            best = int(np.argmax(val))
            ax.axvline(best + 1, ls="--", c="grey", lw=1)
            ax.annotate(
                f"best {val[best]:.3f}\ngap {train[best] - val[best]:+.3f}",
                (best + 1, val[best]),
                textcoords="offset points",
                xytext=(5, -30),
            )
        if overfit_epoch:
            ax.axvline(
                overfit_epoch,
                ls=":",
                c="tab:red",
                lw=1.5,
                label=f"overfitting from epoch {overfit_epoch}",
            )
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = title or "learning curves"
    fig.suptitle(f"{title} ({verdict})" if verdict else title)
    fig.tight_layout()
    return fig


def confusion_matrix(cm: np.ndarray, labels, title: str = ""):
    """Counts with true classes down and predicted ones across, in class order."""
    n = len(labels)
    side = max(4.2, 0.55 * n + 1.8)
    fig, ax = plt.subplots(figsize=(side, side * 0.95))
    ax.imshow(cm, cmap="Blues")
    size = 13 if n <= 4 else max(6, 13 - n // 2)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
                fontsize=size,
            )
    ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return fig


def roc(curves: dict, classes, title: str = ""):
    """ROC curves, {class: (fpr, tpr, auc)}: the second class's for two classes (the first called
    the second counts as a false positive), else each class against the rest."""
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} AUC {auc:.3f}" if len(curves) > 1 else f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", c="grey", lw=1)
    if len(classes) == 2:
        ax.set_xlabel(f"false positive rate ({classes[0]} called {classes[1]})")
        ax.set_ylabel(f"true positive rate ({classes[1]} found)")
    else:
        ax.set_xlabel("false positive rate (others called the class)")
        ax.set_ylabel("true positive rate (the class found)")
    ax.set_title(title or "ROC")
    ax.legend(loc="lower right", fontsize=8 if len(curves) > 1 else None)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def saliency_grid(images: np.ndarray, heatmaps: np.ndarray, captions: list[str], title: str = ""):
    """Each image beside itself with its heatmap over it (0-1, where the model looked)."""
    n = len(images)
    fig, axes = plt.subplots(2, max(n, 1), figsize=(2.3 * max(n, 1), 5), squeeze=False)
    for i in range(n):
        img = np.clip(images[i], 0, 255).astype(np.uint8)
        axes[0, i].imshow(img)
        axes[0, i].set_title(captions[i], fontsize=8)
        axes[1, i].imshow(img)
        axes[1, i].imshow(heatmaps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(title or "where the model looked")
    fig.tight_layout()
    return fig


def data_curve(
    n: np.ndarray,
    accuracy: np.ndarray,
    interval: np.ndarray,
    fit=None,
    extrapolated=None,
    title: str = "",
):
    """Validation accuracy against the number of training photos (log axis): each point with its
    95% interval as an error bar, the fitted trend over the photos measured (FIT: x, y), and its
    extension (EXTRAPOLATED: x, y, low, high) dashed, inside its interval band."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    n, accuracy, interval = (np.asarray(a, dtype=float) for a in (n, accuracy, interval))
    ax.errorbar(
        n,
        accuracy,
        yerr=np.vstack([accuracy - interval[:, 0], interval[:, 1] - accuracy]),
        fmt="o",
        color="tab:blue",
        capsize=4,
        zorder=3,
        label="measured (95% interval over the validation photos)",
    )
    if fit is not None:
        ax.plot(*fit, "-", color="tab:orange", label="fit: accuracy = a + b·ln(photos)")
    if extrapolated is not None:
        x, y, low, high = extrapolated
        ax.fill_between(
            x, low, high, color="tab:orange", alpha=0.18, label="95% interval of the extrapolation"
        )
        ax.plot(x, y, "--", color="tab:orange", label="extrapolated")
        ax.plot(x[-1:], y[-1:], "D", color="tab:orange")
        ax.annotate(
            f"{y[-1]:.3f} at {x[-1]:,.0f}",
            (x[-1], y[-1]),
            textcoords="offset points",
            xytext=(-10, 10),
            ha="right",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ticks = sorted(set(n.astype(int)) | ({int(extrapolated[0][-1])} if extrapolated else set()))
    ax.set_xticks(ticks)
    ax.set_xlabel("training photos (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "validation accuracy against training photos", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.tight_layout()
    return fig


def accuracy_against_cost(names, ms_one, ms_batch, accuracy, metric: str = "accuracy"):
    """Each model's accuracy against its milliseconds per image on this machine (log axis):
    filled in a batch of 32, hollow for one image alone, joined by a line."""
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, one, batch, acc) in enumerate(zip(names, ms_one, ms_batch, accuracy)):
        c = colors[i % len(colors)]
        ax.plot([batch, one], [acc, acc], "-", color=c, alpha=0.5)
        ax.plot([batch], [acc], "o", color=c, markersize=8, label=name)
        ax.plot([one], [acc], "o", markerfacecolor="white", color=c, markersize=8)
        ax.annotate(
            name, (batch, acc), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=8
        )
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(plt.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.margins(x=0.1, y=0.15)
    ax.set_xlabel("ms per image on this machine (filled: in a batch of 32; hollow: alone)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against inference cost", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return fig


def png_bytes(fig, dpi: int = 100) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
