"""Entrypoint for

    ray job submit --working-dir . -- python jobs/preprocess.py --layout ... --input ... --output ...
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fer_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
