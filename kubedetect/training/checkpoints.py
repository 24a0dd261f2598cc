"""Checkpoints of a training run: the model, the optimizer and the averaged and best weights,
saved every --checkpoint-every steps (or at epoch ends) and at the end, so that a restarted
worker (a TFJob pod rescheduled, a local worker killed) resumes where the job was.

Every worker saves (saving may need all of them); only the chief's copy is kept, in the
checkpoint folder (the workspace volume on a cluster), with the history of the epochs done
beside it; the others write to a temporary folder they remove.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from kubedetect.config import TrainConfig
from kubedetect.errors import KubedetectError

HISTORY = "history.csv"  # the epochs done so far, kept beside the checkpoints


class Checkpoints:
    """One training run's checkpoints: `trackables` (what tf.train.Checkpoint saves: the model,
    the optimizer, the weight average and the best weights) in --checkpoint-dir, or in
    MODEL_DIR/checkpoints, removed after the export unless asked to keep them."""

    def __init__(self, trackables: dict, model_dir: str, config: TrainConfig, is_chief: bool):
        import tensorflow as tf  # noqa: PLC0415

        self.directory = config.checkpoint_dir or os.path.join(model_dir, "checkpoints")
        self.keep = bool(config.checkpoint_dir) or config.keep_checkpoints
        self.is_chief = is_chief
        self.checkpoint = tf.train.Checkpoint(**trackables)
        self.write_dir = (
            self.directory if self.is_chief else tempfile.mkdtemp(prefix="kubedetect-worker-ckpt-")
        )
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir, max_to_keep=2)

    def restore(self) -> tuple[str | None, list[dict]]:
        """The latest checkpoint restored, if a previous run of this job left one: its path and
        the history of the epochs it had done (None and [] on a first run)."""
        import tensorflow as tf  # noqa: PLC0415

        latest = tf.train.latest_checkpoint(self.directory)
        if not latest:
            return None, []
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as exc:
            raise KubedetectError(
                f"{latest}: this checkpoint does not fit the model being trained (other model "
                f"settings or classes?); use another --checkpoint-dir or remove it ({exc})"
            ) from None
        return latest, _read_history(os.path.join(self.directory, HISTORY))

    def save(self, step: int, history: list[dict]) -> None:
        import tensorflow as tf  # noqa: PLC0415

        from kubedetect.io import fs  # noqa: PLC0415
        from kubedetect.network.export import history_csv  # noqa: PLC0415

        self.manager.save(checkpoint_number=step)
        if self.is_chief:
            fs.write_text(fs.join(self.directory, HISTORY), history_csv(history))
        else:
            tf.io.gfile.rmtree(self.write_dir)

    def clean_up(self) -> None:
        """After the export: a worker's private copy always; the chief's unless asked to keep
        them (--keep-checkpoints, or a --checkpoint-dir of the user's)."""
        import tensorflow as tf  # noqa: PLC0415

        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
        elif not self.keep:
            tf.io.gfile.rmtree(self.directory)


def _read_history(path: str) -> list[dict]:
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.evaluation.plots import read_history  # noqa: PLC0415

    if not tf.io.gfile.exists(path):
        return []
    if "://" not in path:
        return read_history(path)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, HISTORY)
        tf.io.gfile.copy(path, local, overwrite=True)
        return read_history(local)
