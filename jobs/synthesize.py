r"""Entrypoint for

    ray job submit --working-dir . -- python jobs/synthesize.py \
        --input s3://curated/jaffe --output s3://curated/jaffe-mixed --method region
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fer_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["synthesize", *sys.argv[1:]]))
