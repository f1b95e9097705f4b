"""The CLI boundary: a failed run prints one line naming its log file, never a traceback;
the log file holds the traceback and the library's log records. No Ray: the failing
command (`sample-data` into a path under a regular file) fails on its first write."""
from __future__ import annotations

import builtins
import errno
import logging
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

from fer_ray import cli, logs, sample_data

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAILURE = re.compile(r"^fer-ray sample-data: failed: (\w+): (.+) \(details: (.+\.log)\)$")


@pytest.fixture
def log_dir(tmp_path, monkeypatch) -> pathlib.Path:
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(tmp_path / "logs"))
    return tmp_path / "logs"


@pytest.fixture
def blocked_output(tmp_path) -> str:
    """An output path below a regular file: creating it raises an OS error."""
    (tmp_path / "a_file").write_text("not a directory")
    return str(tmp_path / "a_file" / "out")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def failure_of(err: str) -> tuple[str, pathlib.Path]:
    """(exception type, log file) from the one failure line, which must be the last line."""
    match = FAILURE.match(err.rstrip("\n").splitlines()[-1])
    assert match, err
    return match.group(1), pathlib.Path(match.group(3))


def test_a_failed_run_is_one_line_and_the_traceback_is_in_the_log(capsys, log_dir, blocked_output):
    code, _, err = run(capsys, "sample-data", "--output", blocked_output)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    kind, log_file = failure_of(err)
    assert issubclass(getattr(builtins, kind), OSError), kind
    assert log_file.parent == log_dir and log_file.name.startswith("sample-data-")
    assert str(os.getpid()) in log_file.name
    text = log_file.read_text()
    assert "Traceback (most recent call last)" in text and f"{kind}:" in text
    assert "fer-ray sample-data started" in text and "sample_data.py" in text


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_also_prints_the_traceback(capsys, log_dir, blocked_output, where):
    argv = ["sample-data", "--output", blocked_output]
    argv = ["--verbose", *argv] if where == "before" else [*argv, "--verbose"]
    code, _, err = run(capsys, *argv)
    kind, log_file = failure_of(err)
    assert code == 1 and "Traceback (most recent call last)" in err and f"\n{kind}: " in err
    assert "Traceback (most recent call last)" in log_file.read_text()


def test_verbose_is_off_unless_asked():
    parser = cli.build_parser()
    assert parser.parse_args(["models"]).verbose is False
    assert parser.parse_args(["--verbose", "models"]).verbose is True
    assert parser.parse_args(["models", "--verbose"]).verbose is True


def test_each_invocation_gets_its_own_log(capsys, log_dir, blocked_output):
    files = {failure_of(run(capsys, "sample-data", "--output", blocked_output)[2])[1] for _ in range(3)}
    assert len(files) == 3 and all(f.exists() for f in files)
    assert sorted(p.name for p in log_dir.iterdir()) == sorted(f.name for f in files)


def test_library_records_reach_the_log_and_secrets_do_not(capsys, log_dir, blocked_output, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-in-the-environment")
    logger = logging.getLogger("fer_ray.sample_data")
    real_write = sample_data.write_sample_data

    def logging_write(output_uri, **kwargs):
        logger.info("drawing the sample layouts")
        logger.debug("below INFO: not kept")
        return real_write(blocked_output, **kwargs)  # the URI below only travels in argv

    monkeypatch.setattr(sample_data, "write_sample_data", logging_write)
    _, _, err = run(capsys, "sample-data", "--output", "s3://KEYID:hunter2@bucket/x")
    text = failure_of(err)[1].read_text()
    assert "INFO fer_ray.sample_data: drawing the sample layouts" in text and "below INFO" not in text
    assert "s3://***@bucket/x" in text
    assert "s3cr3t-in-the-environment" not in text and "hunter2" not in text
    assert logging.getLogger("fer_ray").handlers == [], "the run's handler outlives the run"


def test_a_successful_run_writes_its_log_too(capsys, log_dir):
    code, out, err = run(capsys, "models")
    assert code == 0 and err == "" and "resnet18" in out
    (log_file,) = log_dir.iterdir()
    assert log_file.name.startswith("models-") and "finished: exit code 0" in log_file.read_text()


def test_configuration_errors_stay_exit_2_and_are_logged(capsys, log_dir, tmp_path):
    code, _, err = run(capsys, "preprocess", "--layout", "nope", "--input", str(tmp_path), "--output", str(tmp_path))
    assert code == 2 and err.startswith("fer-ray: configuration error: layout: 'nope'") and err.count("\n") == 1
    (log_file,) = log_dir.iterdir()
    assert "configuration error: layout: 'nope'" in log_file.read_text()


def test_a_bad_training_placement_exits_2_naming_the_field_before_touching_the_output(capsys, log_dir, tmp_path):
    output = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", str(tmp_path), "--output", str(output), "--placement", "strict")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("fer-ray: configuration error: placement: 'strict' is not valid; choose one of: pack, spread")
    assert not output.exists()


def test_interrupted_run_exits_130_with_one_line(capsys, log_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sample_data, "write_sample_data", interrupted)
    code, _, err = run(capsys, "sample-data", "--output", "unused")
    assert code == 130 and err.count("\n") == 1 and err.startswith("fer-ray sample-data: interrupted (details: ")
    (log_file,) = log_dir.iterdir()
    assert "KeyboardInterrupt" in log_file.read_text()


def test_an_interrupt_that_says_how_to_resume_is_shown_on_its_line(capsys, log_dir, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("1 of 2 trials ended; the same command finishes it")

    monkeypatch.setattr(sample_data, "write_sample_data", interrupted)
    code, _, err = run(capsys, "sample-data", "--output", "unused")
    assert code == 130 and err.count("\n") == 1
    assert err.startswith("fer-ray sample-data: interrupted: 1 of 2 trials ended; the same command finishes it "
                          "(details: ")


def test_the_temp_dir_takes_the_log_when_the_log_dir_cannot_be_made(capsys, tmp_path, monkeypatch, blocked_output):
    monkeypatch.setenv(logs.LOG_DIR_ENV, str(tmp_path / "a_file" / "logs"))  # below a regular file
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-tmp"))
    (tmp_path / "system-tmp").mkdir()
    code, _, err = run(capsys, "sample-data", "--output", blocked_output)
    _, log_file = failure_of(err)
    assert code == 1 and log_file.parent == tmp_path / "system-tmp" / "fer-ray-logs"
    assert "Traceback" in log_file.read_text()


def test_failure_message_is_its_first_line_shortened(capsys, log_dir, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("x" * 5000 + "\nsecond line")

    monkeypatch.setattr(sample_data, "write_sample_data", fails)
    _, _, err = run(capsys, "sample-data", "--output", "unused")
    assert err.count("\n") == 1 and "second line" not in err and "(5000 characters)" in err and len(err) < 500
    assert failure_of(err)[0] == "RuntimeError"


def test_a_storage_outage_outside_our_retries_says_so_in_its_one_line(capsys, log_dir, monkeypatch):
    # what Ray Data's own checkpoint I/O raises when S3 is down (pyarrow's message)
    def outage(*args, **kwargs):
        raise OSError("When getting information for key 'run/_checkpoints/x' in bucket 'b': AWS Error "
                      "NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Couldn't connect to server")

    monkeypatch.setattr(sample_data, "write_sample_data", outage)
    code, _, err = run(capsys, "sample-data", "--output", "unused")
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"fer-ray sample-data: failed: {cli.STORAGE_DOWN}; last error: OSError: When getting"), err
    assert "(details: " in err


def test_a_full_disk_says_so_and_how_to_resume_in_its_one_line(capsys, log_dir, monkeypatch):
    """A real ENOSPC (a write to /dev/full), re-raised as Ray Data's retry does, with its own
    notice where the file name goes."""
    enospc = None
    try:
        with open("/dev/full", "wb") as full:
            full.write(b"x")
    except OSError as err:
        enospc = err
    if not isinstance(enospc, OSError) or enospc.errno != errno.ENOSPC:
        pytest.skip("no /dev/full here")

    def full_disk(*args, **kwargs):
        raise OSError(enospc.errno, enospc.strerror, "Failed to apply UDF transform after 1/1 attempts.\nTo change")

    monkeypatch.setattr(sample_data, "write_sample_data", full_disk)
    code, _, err = run(capsys, "sample-data", "--output", "unused")
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith(f"fer-ray sample-data: failed: {cli.DISK_FULL}; last error: No space left on device "
                          "(details: "), err


def test_a_real_process_gets_the_same_one_line(tmp_path, blocked_output):
    env = {**os.environ, logs.LOG_DIR_ENV: str(tmp_path / "logs"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "fer_ray.cli", "sample-data", "--output", blocked_output],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" in failure_of(done.stderr)[1].read_text()
