"""How good a model is: a model against a split of the shards (`evaluate`), COCO metrics through
pycocotools (`coco`), the plots people look at (`plots`), and the quality gate that lets a new
model replace the one in service only if it is not worse (`champion`).

It imports `data`, `io` and `inference`; it never imports `training` or `network`.
"""
