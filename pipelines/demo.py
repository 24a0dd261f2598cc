"""`make demo`: synthetic data (or DATA=path/to/voc) through what kubedetect can do, locally.

Today: synthetic VOC data, then parallel preprocessing into TFRecord shards. The later stages
(training, quantization, serving) join here as they land.
"""

from __future__ import annotations

import argparse
import os
import sys

from kubedetect.config import PreprocessConfig
from kubedetect.data.synth import synthesize
from kubedetect.errors import KubedetectError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="where everything is written")
    parser.add_argument("--data", default=None, help="a Pascal VOC folder instead of synthetic data")
    parser.add_argument("--images", type=int, default=1500, help="synthetic images to make")
    args = parser.parse_args(argv)

    from kubedetect.preprocess import preprocess, report_of

    data_dir = args.data or os.path.join(args.out, "data")
    try:
        if not args.data:
            print(f"[1/2] synthetic data: {args.images} images -> {data_dir}")
            synthesize(data_dir, args.images, seed=0)
        shards_dir = os.path.join(args.out, "shards")
        print(f"[2/2] preprocessing {data_dir} -> {shards_dir}")
        manifest = preprocess(data_dir, shards_dir, PreprocessConfig())
    except KubedetectError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print()
    print(report_of(manifest).summary())
    print()
    print("what the demo produced:")
    print(f"  data       {data_dir}")
    for split, entry in manifest["splits"].items():
        print(f"  {split:<10} {entry['images']} images in {len(entry['shards'])} shards under {shards_dir}")
    print(f"  manifest   {os.path.join(shards_dir, 'dataset.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
