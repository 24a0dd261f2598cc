"""Training: `python -m kubedetect.training.train`, the TFJob container command, read top to
bottom in `train`; the input pipeline (`inputs`, `augment`, `targets`), the losses, the weight
average (`ema`), the length of a run (`budget`), validation during training, `checkpoints` to
resume from, who the workers are (`cluster`), N local workers standing in for a TFJob
(`launch`), and several candidate runs ranked (`candidates`).

It may import every other part of the core; nothing else in the core imports it.
"""
