"""Champion and challenger: a new model replaces the one in service only if it is not worse.

The quality gate's thresholds say whether a model is good enough on its own; they cannot say
whether it is better than what already serves. So the new model (the challenger) and the model
in service (the champion, as the registry knows it: kubedetect.inference.registry.in_service) are
both run by the one evaluator on the same split of the new run's data, the `test` split where the
data has one (images no candidate was trained on or chosen by), else `val`. The challenger
passes if its mAP@0.5:0.95 is at most `margin` points below the champion's.

No comparison can be made (and the challenger passes on its own merits) when nothing is in
service yet, or when the champion cannot run on this data: other classes, another input size,
a folder that fails its checksums. The decision says which.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubedetect.errors import KubedetectError
from kubedetect.evaluation.evaluate import resolve_split

METRIC = "map50_95"


@dataclass(frozen=True)
class Comparison:
    """The challenger's and the champion's scores on one split, and the verdict."""

    split: str
    margin: float  # points of mAP@0.5:0.95 the challenger may fall short by
    challenger: dict  # {"map50": ..., "map50_95": ...}
    champion: dict | None  # None: no comparison (see `note`)
    champion_dir: str | None
    note: str = ""

    @property
    def passed(self) -> bool:
        if self.champion is None:
            return True
        return self.challenger[METRIC] >= self.champion[METRIC] - self.margin / 100

    def check(self) -> tuple[str, bool]:
        """The gate's line for this comparison, and whether it passed."""
        new = self.challenger[METRIC]
        if self.champion is None:
            return f"champion: {self.note}; the new model's mAP@0.5:0.95 {new:.3f}", True
        old = self.champion[METRIC]
        return (
            f"not worse than the model in service: mAP@0.5:0.95 {new:.3f} against {old:.3f} "
            f"({(new - old) * 100:+.2f} points, margin {self.margin:.2f}) on {self.split}",
            self.passed,
        )

    def metrics(self) -> dict[str, float]:
        """Both scores for the run's metrics (the champion's only where there is one)."""
        values = {f"challenger_{k}": v for k, v in self.challenger.items()}
        if self.champion is not None:
            values |= {f"champion_{k}": v for k, v in self.champion.items()}
            values["champion_margin"] = self.margin
        return values


def _scores(model_dir: str, shards_dir: str, split: str, threads: int) -> dict:
    from kubedetect.config import EvalConfig  # noqa: PLC0415
    from kubedetect.evaluation.evaluate import evaluate  # noqa: PLC0415

    config = EvalConfig(split=split, plots=False, threads=threads)
    metrics = evaluate(model_dir, shards_dir, None, config, progress=False)
    return {"map50": float(metrics["map50"]), "map50_95": float(metrics["map50_95"])}


def compare(
    challenger_dir: str,
    champion_dir: str | None,
    shards_dir: str,
    margin: float,
    *,
    threads: int = 0,
) -> Comparison:
    """Evaluate the challenger and, where it can run on this data, the champion."""
    from kubedetect.data.shards import load_manifest  # noqa: PLC0415
    from kubedetect.inference.ensemble import verify  # noqa: PLC0415
    from kubedetect.io.modelcard import ModelCard  # noqa: PLC0415

    split = resolve_split(shards_dir, "auto")  # test where the data has one, else val
    challenger = _scores(challenger_dir, shards_dir, split, threads)

    def without(note: str) -> Comparison:
        return Comparison(split, margin, challenger, None, champion_dir, note)

    if champion_dir is None:
        return without("no model in service yet")
    manifest = load_manifest(shards_dir)
    try:
        card = verify(champion_dir)
    except KubedetectError as exc:
        return without(f"the model in service ({champion_dir}) cannot be run: {exc}")
    if tuple(card.classes) != tuple(manifest["classes"]):
        return without(
            f"the model in service knows other classes ({', '.join(card.classes)}): not comparable"
        )
    if card.input_size != int(manifest["image_size"]):
        return without(
            f"the model in service takes {card.input_size} px images, this data is "
            f"{manifest['image_size']} px: not comparable"
        )
    if card.sha256 == ModelCard.load(challenger_dir).sha256:
        champion = dict(challenger)  # the same model: the same scores
    else:
        champion = _scores(champion_dir, shards_dir, split, threads)
    return Comparison(split, margin, challenger, champion, champion_dir)
