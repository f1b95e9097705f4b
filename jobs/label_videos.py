r"""Entrypoint for

    ray job submit --working-dir . -- python jobs/label_videos.py \
        --input s3://archive/interviews/ --output s3://labels/interviews-v1 --checkpoint pretrained --fps 5
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fer_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["label-videos", *sys.argv[1:]]))
