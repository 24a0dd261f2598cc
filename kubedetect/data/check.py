"""`kubedetect data check`: every annotation parsed and every image decoded, nothing written."""

from __future__ import annotations

from tqdm import tqdm

from kubedetect.config import DataConfig
from kubedetect.data.prepare import PrepareSettings, image_pool
from kubedetect.data.report import ImageSummary, Report, summarize
from kubedetect.data.scan import scan


def check(
    root: str, config: DataConfig = DataConfig(), *, workers: int = 1, progress: bool = True
) -> Report:
    settings = PrepareSettings(
        root=root,
        image_size=512,
        jpeg_quality=0,
        max_image_pixels=config.max_image_pixels,
        encode=False,
    )
    images = []
    # The workers start while this process scans the annotations.
    pool = image_pool(settings, workers)
    with pool:
        dataset = scan(root, config, progress=progress)
        problems = list(dataset.problems)
        results = tqdm(
            pool.map(dataset.records),
            total=len(dataset.records),
            desc="images",
            unit="img",
            disable=not progress,
        )
        for prepared in results:
            problems.extend(prepared.problems)
            if prepared.ok:
                images.append(summary_of(prepared))
    return summarize(dataset.classes.names, images, problems)


def summary_of(prepared) -> ImageSummary:
    record = prepared.record
    return ImageSummary(
        key=record.key,
        image=record.image,
        sha256=prepared.sha256,
        split=record.split,
        class_ids=tuple(int(c) for c in prepared.class_ids),
    )
