"""One shard of the data folder preprocessed: the step the ParallelFor runs once per shard.

KFP serialises the function's source into the step, so it imports what it uses inside its body."""

from kfp.dsl import Dataset, Output


def preprocess_shard(
    data_uri: str,
    shard_index: int,
    num_shards: int,
    image_size: int,
    classes: str,
    val_fraction: float,
    data_fingerprint: str,
    shard: Output[Dataset],
):
    """Decode, check, resize and write one shard of every split.

    `data_fingerprint` is not read here: it is part of the step's cache key, so that a changed
    folder is never answered with the shards of its earlier contents."""
    from kubedetect.config import DataConfig, PreprocessConfig
    from kubedetect.data.shards import preprocess

    config = PreprocessConfig(image_size=image_size, num_shards=num_shards, shard_index=shard_index)
    data = DataConfig(
        classes=tuple(classes.split(",")) if classes else None, val_fraction=val_fraction
    )
    part = preprocess(data_uri, shard.path, config, data)
    shard.metadata["shard_index"] = shard_index
    shard.metadata["images"] = len(part["images"])
    shard.metadata["data_fingerprint"] = data_fingerprint
