"""Entrypoint for

    ray job submit --working-dir . -- python jobs/train.py --data s3://... --model resnet18 --workers 8 --gpu --output s3://...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fer_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
