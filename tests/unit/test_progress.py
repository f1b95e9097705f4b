"""What a running job shows: progress lines, and Ray's own output kept off the screen."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

from fer_ray.progress import Progress, format_duration, progress_line
from fer_ray.training.sweep import trial_line


def test_progress_line_says_done_of_total_rate_time_left_and_statuses():
    line = progress_line("preprocess", 120, 177, 120, 10.0, {"ok": 118, "no_face": 2}, "images")
    assert line == "preprocess: 120/177 images (67%), 12.0/s, about 5 s left; no_face=2, ok=118"


def test_progress_line_of_slow_units_says_seconds_each_and_no_time_left_when_done():
    assert progress_line("train", 2, 10, 2, 40.0, {}, "epochs") == (
        "train: 2/10 epochs (20%), 20 s each, about 3 min left")
    assert progress_line("train", 10, 10, 10, 200.0, {}, "epochs") == "train: 10/10 epochs (100%), 20 s each"


def test_rate_counts_only_what_this_attempt_did():
    # 100 inputs were committed by an interrupted run; this attempt did 10 in 10 s
    assert "1.0/s, about 60 s left" in progress_line("preprocess", 110, 170, 10, 10.0, {})


def test_durations_read_in_the_unit_that_fits():
    assert [format_duration(s) for s in (42, 600, 7200)] == ["42 s", "10 min", "2.0 h"]


def test_plain_progress_ends_with_a_line_of_the_final_counts():
    counts = iter([{"inputs": 5, "status": {"ok": 5}}] * 5 + [{"inputs": 9, "status": {"ok": 8, "bad": 1}}] * 50)
    screen = io.StringIO()  # not a terminal: plain lines
    with Progress("preprocess", 9, lambda: next(counts), "images", stream=screen):
        pass
    assert screen.getvalue().splitlines()[-1].startswith("preprocess: 5/9 images (55%)")


def test_a_failing_progress_read_never_fails_the_job():
    def unreadable() -> dict:
        raise OSError("storage down")

    screen = io.StringIO()
    with Progress("preprocess", 9, unreadable, stream=screen):
        pass
    assert screen.getvalue().startswith("preprocess: 0/9 inputs")


def test_hidden_progress_prints_nothing():
    screen = io.StringIO()
    with Progress("train", 3, lambda: {"inputs": 1}, stream=screen, shown=False):
        pass
    assert screen.getvalue() == ""


def test_trial_line_names_the_searched_values_and_the_score():
    line = trial_line(2, 4, {"model": "landmark_mlp", "lr": 0.00312, "batch_size": 32, "other": 1},
                      {"val_macro_f1": 0.5234, "training_iteration": 10})
    assert line == ("tune: trial 2/4 done: model=landmark_mlp lr=0.00312 batch_size=32: val_macro_f1 0.523 "
                    "after 10 epochs")


LIBRARY_OUTPUT = textwrap.dedent("""
    import json, logging, os, sys, warnings
    from fer_ray import logs
    run_log = logs.RunLog("preprocess")
    with logs.LibraryOutputToLog(run_log):
        os.write(2, b"C++ core line\\n")
        logging.getLogger("ray.data").info("Ray Data record")
        logging.getLogger("some.library").warning("a library's warning")
        warnings.warn("a Python warning")
        print("fer-ray's own line")
        print("fer-ray's own error", file=sys.stderr)
        exec(compile('print("printed by Ray")', "ray_code.py", "exec"), {"__name__": "ray.tune.output"})
        # a stream wrapper of Ray's (its copy of colorama) passes fer-ray's own line on
        wrapper = {"__name__": "ray.thirdparty_files.colorama.ansitowin32", "sys": sys}
        exec(compile("def write(text): sys.stdout.write(text)", "wrapper.py", "exec"), wrapper)
        wrapper["write"]("fer-ray's line through a wrapper\\n")
        # ...and so does Ray's replacement of `print` (ray.experimental.tqdm_ray's safe_print)
        patched = {"__name__": "ray.experimental.tqdm_ray", "_print": print}
        exec(compile("def safe_print(*args, **kwargs): _print(*args, **kwargs)", "tqdm_ray.py", "exec"), patched)
        patched["safe_print"]("fer-ray's line through Ray's print")
    print("after")
    run_log.close()
    print(json.dumps(str(run_log.path)))
""")


def test_library_output_goes_to_the_run_log_and_ours_to_the_screen(tmp_path):
    done = subprocess.run([sys.executable, "-c", LIBRARY_OUTPUT], capture_output=True, text=True, timeout=120,
                          env={"FER_RAY_LOG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["fer-ray's own line", "fer-ray's line through a wrapper", "fer-ray's line through Ray's print",
                         "after"]
    assert done.stderr.strip() == "fer-ray's own error"
    log = open(json.loads(lines[-1])).read()
    for line in ("C++ core line", "Ray Data record", "a library's warning", "a Python warning", "printed by Ray"):
        assert line in log and line not in done.stdout + done.stderr


NOTEBOOK_OUTPUT = textwrap.dedent("""
    import io, json, logging, os, sys
    class Cell(io.StringIO):  # a notebook cell's output: a stream without a file descriptor
        def fileno(self):
            raise io.UnsupportedOperation("fileno")
    cell = sys.stdout = sys.stderr = Cell()
    import ray.data  # its console handlers hold the cell, as in a notebook
    from fer_ray import logs
    run_log = logs.RunLog("preprocess")
    with logs.LibraryOutputToLog(run_log):
        logging.getLogger("ray.data").info("Ray Data record")
        logging.getLogger("ray").warning("Ray's warning")
        print("fer-ray's own line")
    logging.getLogger("ray.data").warning("Ray Data record after the run")
    run_log.close()
    os.write(1, json.dumps([cell.getvalue(), str(run_log.path)]).encode())
""")


def test_in_a_notebook_rays_records_go_to_the_run_log_and_come_back_after(tmp_path):
    """A notebook's streams have no file descriptor to redirect: Ray's console handlers are
    pointed at the log while the run lasts, and back at the cell after it."""
    done = subprocess.run([sys.executable, "-c", NOTEBOOK_OUTPUT], capture_output=True, text=True, timeout=120,
                          env={"FER_RAY_LOG_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    cell, log_path = json.loads(done.stdout)
    assert "fer-ray's own line" in cell and "Ray Data record after the run" in cell
    log = open(log_path).read()
    for line in ("Ray Data record\n", "Ray's warning"):
        assert line in log and line not in cell
