"""The plots people look at instead of numbers: PR curves, the confusion matrix, a grid of
validation images with predicted and true boxes, and the training curves. matplotlib (Agg: no
display needed), one PNG each."""

from __future__ import annotations

import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TRUE_COLOUR = "#00c853"
PALETTE = plt.get_cmap("tab10")


def evaluation_plots(
    out_dir, metrics, data, found, threshold, grid_images, history=None
) -> dict[str, str]:
    """Every evaluation plot into out_dir; returns {name: file}."""
    written = {
        "pr_curves": pr_curves(
            metrics["pr_curves"], metrics, os.path.join(out_dir, "pr_curves.png")
        ),
        "confusion_matrix": confusion(
            np.asarray(metrics["confusion_matrix"]["counts"]),
            metrics["confusion_matrix"]["labels"],
            os.path.join(out_dir, "confusion_matrix.png"),
        ),
        "detections": detection_grid(
            data.images[:grid_images],
            data.truths[:grid_images],
            found[:grid_images],
            data.classes,
            threshold,
            os.path.join(out_dir, "detections.png"),
            split=metrics.get("split", "validation"),
        ),
    }
    if history:
        written["training_curves"] = training_curves(
            history, os.path.join(out_dir, "training_curves.png")
        )
    return {k: os.path.basename(v) for k, v in written.items()}


def pr_curves(curves: dict, metrics: dict, path: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 5))
    for k, (name, curve) in enumerate(curves.items()):
        ap = metrics["per_class"][name]["ap50"]
        label = f"{name} (AP50 {ap:.3f})" if ap is not None else name
        ax.plot(curve["recall"], curve["precision"], color=PALETTE(k % 10), label=label)
    ax.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title=f"precision-recall at IoU {metrics['iou_threshold']:g}: "
        f"mAP@0.5 {metrics['map50']:.3f}",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def confusion(counts: np.ndarray, labels: list[str], path: str) -> str:
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (counts)")
    top = counts.max() if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if value > top / 2 else "black",
        )
    return _save(fig, path)


def detection_grid(
    images, truths, found, classes, threshold: float, path: str, split: str = "validation"
) -> str:
    """True boxes dashed green, predictions in class colours with class and score."""
    count = max(1, len(images))
    cols = min(4, count)
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, truth, detections in zip(axes.flat, images, truths, found, strict=False):
        size = image.shape[0]
        ax.imshow(image)
        for box in truth.boxes * size:
            ax.add_patch(
                plt.Rectangle(
                    box[:2],
                    *(box[2:] - box[:2]),
                    fill=False,
                    edgecolor=TRUE_COLOUR,
                    linestyle="--",
                    linewidth=1.2,
                )
            )
        shown = detections.filter(threshold)
        for box, score, cls in zip(shown.boxes * size, shown.scores, shown.class_ids, strict=True):
            colour = PALETTE(int(cls) % 10)
            ax.add_patch(
                plt.Rectangle(
                    box[:2], *(box[2:] - box[:2]), fill=False, edgecolor=colour, linewidth=1.5
                )
            )
            ax.text(
                box[0],
                box[1] - 2,
                f"{classes[cls]} {score:.2f}",
                color="white",
                fontsize=6,
                bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0},
            )
    fig.suptitle(
        f"{split} images: true boxes dashed green, detections with score >= {threshold:g}",
        fontsize=9,
    )
    return _save(fig, path)


def read_history(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def training_curves(history_csv: str, path: str) -> str:
    rows = read_history(history_csv)
    epochs = [r["epoch"] for r in rows]
    fig, (loss_ax, map_ax, speed_ax) = plt.subplots(1, 3, figsize=(14, 4))
    for term in ("loss", "heatmap_loss", "size_loss", "offset_loss"):
        if rows and term in rows[0]:
            loss_ax.plot(epochs, [r[term] for r in rows], label=term)
    loss_ax.set(xlabel="epoch", ylabel="training loss", yscale="log", title="losses")
    loss_ax.legend(fontsize=8)
    for key, label in (("val_map50", "mAP@0.5"), ("val_map50_95", "mAP@0.5:0.95")):
        points = [(r["train_seconds"] / 60, r[key]) for r in rows if r.get(key) is not None]
        if points:
            map_ax.plot(*zip(*points, strict=True), marker="o", label=label)
    map_ax.set(
        xlabel="training time (min)", ylabel="validation mAP", ylim=(0, 1), title="validation mAP"
    )
    map_ax.grid(alpha=0.3)
    map_ax.legend(fontsize=8)
    speed_ax.plot(epochs, [r["images_per_second"] for r in rows], marker=".")
    speed_ax.set(xlabel="epoch", ylabel="images / s (all workers)", title="throughput")
    return _save(fig, path)


def _number(text: str):
    if text in ("", None):
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
