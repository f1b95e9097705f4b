"""One run per output at a time (fer_ray.lease): the lease a run holds from its plan to its
commit, on local files and on the S3 test server, with real processes as holders."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from fer_ray import lease, results, storage
from fer_ray.config import PreprocessConfig, RetryConfig
from fer_ray.lease import Holder, OutputBusy, acquire_lease, read_holder
from fer_ray.pipelines import preprocess, runs

RETRY = RetryConfig(storage_attempts=2, storage_backoff_s=0.1)


def write_holder(output: str, **fields) -> Holder:
    """A lease as another run would have left it."""
    now = time.time()
    holder = Holder(**{"job": "preprocess", "run": "other-run", "host": "elsewhere", "machine": "elsewhere", "pid": 1,
                       "process_started": "", "token": "theirs", "since": now, "heartbeat": now, **fields})
    storage.write_bytes(lease.lease_uri(output), holder.to_json())
    return holder


def write_local_holder(output: str, pid: int, started: str | None = None) -> Holder:
    """A lease held by process `pid` of this machine."""
    return write_holder(output, host=socket.gethostname(), machine=lease.this_machine(), pid=pid,
                        process_started=lease.process_start(pid) if started is None else started)


@pytest.fixture
def other_process():
    """A live process of this machine besides this one (the run holding an output)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield child.pid
    child.kill()
    child.wait()


def ended_process() -> tuple[int, str]:
    """The pid and start time of a process of this host that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = lease.process_start(child.pid)
    child.wait()
    return child.pid, started


def s3_output(server) -> str:
    """An output in a new bucket of the S3 test server."""
    name = f"lease-{time.monotonic_ns()}"
    server.create_bucket(name)
    return f"s3://{name}/out"


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return s3_output(request.getfixturevalue("s3_server"))


def test_a_free_output_is_leased_to_this_process_and_released_at_the_end(output):
    held = acquire_lease(output, "preprocess", "run-1", RETRY)
    holder = read_holder(output)
    assert (holder.run, holder.pid, holder.host, holder.token) == ("run-1", held.holder.pid, socket.gethostname(),
                                                                     held.holder.token)
    held.check_held()  # raises if not ours
    held.release()
    assert read_holder(output) is None and not storage.exists(lease.lease_uri(output))
    assert not storage.exists(output)  # nothing left, not even S3's empty folder markers


def test_a_run_ending_with_nothing_staged_leaves_no_output_folder_it_made(tmp_path):
    output = tmp_path / "new" / "out"
    acquire_lease(str(output), "preprocess", "run-1", RETRY).release()
    assert not output.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    acquire_lease(str(kept), "preprocess", "run-1", RETRY).release()
    assert kept.is_dir() and not any(kept.iterdir())  # it was there before: it stays


def test_a_second_run_is_refused_naming_the_holder_and_the_lease_stays_the_first_runs(output):
    first = acquire_lease(output, "preprocess", "run-1", RETRY)
    try:
        with pytest.raises(OutputBusy, match=r"another run is writing into this output .*preprocess run run-1, "
                                             rf"process {first.holder.pid} on "):
            acquire_lease(output, "synthesize", "run-2", RETRY)
        assert read_holder(output).token == first.holder.token
        first.check_held()
    finally:
        first.release()


def test_a_lease_never_sure_in_its_tries_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    """Every try too slow between its read and its write to be sure of the lease (more than
    half its wait): OutputBusy saying so, and no lease or folder left behind."""
    monkeypatch.setattr(lease, "CONFIRM_S", 0.0)
    output = tmp_path / "out"
    with pytest.raises(OutputBusy, match=rf"could not take the output's lease in {lease.ATTEMPTS} tries"):
        acquire_lease(str(output), "preprocess", "run-1", RETRY)
    assert not output.exists()
    assert not lease._HELD_HERE


def test_slow_storage_gets_the_lease_on_a_longer_try(s3_server, caplog):
    """Every request to S3 answered 60 ms late, so the first try's read and write take longer
    than half its wait (seen on a loaded CI machine, where each of three equal tries was refused):
    a later try, waiting longer, takes the lease."""
    output = s3_output(s3_server)
    with s3_server.slowly(0.06), caplog.at_level("INFO", logger="fer_ray.lease"):
        held = acquire_lease(output, "preprocess", "run-1", RETRY)
        try:
            assert read_holder(output).token == held.holder.token
        finally:
            held.release()
    assert "more than half the 0.4 s wait; trying again" in caplog.text
    assert read_holder(output) is None


def test_a_lease_not_renewed_in_time_is_taken_over(output, capsys):
    old = write_holder(output, heartbeat=time.time() - lease.EXPIRES_S - 5)
    held = acquire_lease(output, "preprocess", "run-2", RETRY)
    try:
        assert "taking over the lease of preprocess run other-run" in capsys.readouterr().err
        assert read_holder(output).token == held.holder.token != old.token
    finally:
        held.release()


def test_a_lease_of_an_ended_process_on_this_host_is_taken_over_at_once(tmp_path):
    output = str(tmp_path / "out")
    pid, started = ended_process()
    assert started and not lease.process_alive(pid, started)
    write_local_holder(output, pid, started)
    held = acquire_lease(output, "preprocess", "run-2", RETRY)
    held.release()


def test_a_fresh_lease_of_another_machine_holds_whatever_its_pid_is_here(tmp_path):
    """Same host name, another machine or container: its pid says nothing here."""
    output = str(tmp_path / "out")
    pid, _ = ended_process()
    write_holder(output, host=socket.gethostname(), pid=pid, process_started="1")
    with pytest.raises(OutputBusy, match=f"process {pid} on"):
        acquire_lease(output, "preprocess", "run-2", RETRY)


def test_a_lease_this_process_failed_to_release_does_not_block_its_next_run(tmp_path):
    """Storage down at a run's end leaves its lease; the same process (a notebook, a test) runs
    again: that lease is no other run's."""
    output = str(tmp_path / "out")
    left = acquire_lease(output, "preprocess", "run-1", RETRY)
    lease._HELD_HERE.discard(left.holder.token)  # what release does first, before its storage calls fail
    left._stop.set()
    held = acquire_lease(output, "preprocess", "run-1", RETRY)
    assert read_holder(output).token == held.holder.token != left.holder.token
    held.release()


def test_a_live_process_on_this_host_holds_its_lease_but_not_under_another_start_time(tmp_path):
    output = str(tmp_path / "out")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = lease.process_start(child.pid)
        assert lease.process_alive(child.pid, started)
        assert not lease.process_alive(child.pid, str(int(started) + 1))  # its pid, reused by another process
        write_local_holder(output, child.pid, started)
        with pytest.raises(OutputBusy, match=f"process {child.pid} on"):
            acquire_lease(output, "preprocess", "run-2", RETRY)
    finally:
        child.kill()
        child.wait()


def test_a_run_whose_lease_was_taken_over_may_not_commit_and_does_not_remove_the_new_lease(tmp_path):
    output = str(tmp_path / "out")
    held = acquire_lease(output, "preprocess", "run-1", RETRY)
    write_holder(output)  # as if ours had expired during an outage and another run took it
    with pytest.raises(OutputBusy, match="this run lost the output's lease.*held by preprocess run other-run"):
        held.check_held()
    held.release()
    assert read_holder(output).token == "theirs"


@pytest.fixture
def beating(tmp_path, monkeypatch):
    """A lease held with a heartbeat every 0.2 s."""
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.2)
    held = acquire_lease(str(tmp_path / "out"), "preprocess", "run-1", RETRY)
    yield held
    held.release()


def test_the_holder_renews_its_lease_while_it_runs(beating):
    first = read_holder(beating.output).heartbeat
    time.sleep(1.0)
    assert read_holder(beating.output).heartbeat > first


def test_the_heartbeat_never_writes_over_a_run_that_took_the_lease_over(beating):
    write_holder(beating.output)
    time.sleep(1.0)
    assert read_holder(beating.output).token == "theirs"


def test_a_lease_file_removed_by_hand_is_written_again_and_the_run_may_still_commit(beating):
    storage.remove_dir(beating.uri)
    beating.check_held()
    time.sleep(1.0)
    assert read_holder(beating.output).token == beating.holder.token


def test_an_unreadable_lease_file_does_not_block_the_output(tmp_path):
    output = str(tmp_path / "out")
    storage.write_bytes(lease.lease_uri(output), b"{not json")
    acquire_lease(output, "preprocess", "run-1", RETRY).release()
    storage.write_bytes(lease.lease_uri(output), json.dumps({"job": "x"}).encode())
    acquire_lease(output, "preprocess", "run-1", RETRY).release()


def test_a_job_refused_for_a_busy_output_fails_before_any_work_and_leaves_the_committed_result(tmp_path,
                                                                                               other_process):
    """Through the preprocess pipeline: refused at its plan, before Ray starts or anything is
    staged; the committed result stays as it was."""
    output = str(tmp_path / "out")
    committed = results.commit_tables(output, "preprocess", {"faces": [pa.table({"x": [1]})]})
    other = write_local_holder(output, other_process)
    cfg = PreprocessConfig(layout="folder", input=str(tmp_path / "images"), output=output)
    (tmp_path / "images" / "happy").mkdir(parents=True)
    (tmp_path / "images" / "happy" / "a.jpg").write_bytes(b"not an image")
    with pytest.raises(OutputBusy, match="another run is writing into this output"):
        preprocess.run(cfg)
    assert results.read_commit(output).run == committed.run
    assert storage.list_dirs(storage.join(output, results.RUNS_DIR)) == [committed.run]
    assert read_holder(output).token == other.token


def test_holding_plans_the_run_again_under_the_lease(tmp_path, monkeypatch):
    """A run of the same id that commits between this run's plan and its lease makes this run
    up to date."""
    cfg = PreprocessConfig(layout="folder", input=str(tmp_path / "images"), output=str(tmp_path / "out"))
    planned = runs.plan("preprocess", cfg.output, runs.result_settings(cfg), "input-1", retry=RETRY)
    assert planned.state == runs.NEW

    def another_run_commits_first(*args):
        results.publish(results.Commit(cfg.output, "preprocess", planned.id, {}), RETRY)
        return acquire_lease(*args)

    monkeypatch.setattr(lease, "acquire_lease", another_run_commits_first)
    with runs.holding("preprocess", cfg, "input-1") as staged:
        assert staged.up_to_date and staged.lease is not None and staged.id == planned.id
    assert read_holder(cfg.output) is None


def test_a_run_whose_lease_was_taken_over_fails_naming_the_new_holder_before_counting(tmp_path):
    """The output removed under a running run and taken by another (seen: both runs then
    wrote into one staged run, and the first ended on counts that did not add up)."""
    cfg = PreprocessConfig(layout="folder", input=str(tmp_path / "images"), output=str(tmp_path / "out"))
    committed = results.commit_tables(cfg.output, "preprocess", {"faces": [pa.table({"x": [1]})]})
    with runs.holding("preprocess", cfg, "input-1") as staged:
        storage.remove_dir(staged.lease.uri)
        write_holder(cfg.output)
        with pytest.raises(OutputBusy, match="its file removed.*held by preprocess run other-run"):
            runs.finish_counts(staged, expected_inputs=3)
    assert read_holder(cfg.output).token == "theirs"
    assert results.read_commit(cfg.output).run == committed.run  # the previous result is what readers see


def preprocess_one_image(tmp_path, output: str, capsys) -> tuple[int, list[str]]:
    """`fer-ray preprocess` of a folder with one (bad) image into `output`: its exit code and
    the lines it wrote to stderr."""
    from fer_ray import cli

    (tmp_path / "images" / "happy").mkdir(parents=True)
    (tmp_path / "images" / "happy" / "a.jpg").write_bytes(b"not an image")
    capsys.readouterr()
    code = cli.main(["preprocess", "--layout", "folder", "--input", str(tmp_path / "images"), "--output", output])
    return code, capsys.readouterr().err.strip().splitlines()


def test_the_command_refused_for_a_busy_output_says_so_in_one_line_and_exits_1(tmp_path, capsys, other_process):
    output = str(tmp_path / "out")
    write_local_holder(output, other_process)
    code, err = preprocess_one_image(tmp_path, output, capsys)
    assert code == 1
    assert err[-1].startswith("fer-ray preprocess: failed: OutputBusy: another run is writing into this output "
                              "(one at a time): wait for it to end or give another output; it is preprocess run "
                              f"other-run, process {other_process} on {socket.gethostname()} since "), err
    assert not storage.exists(storage.join(output, results.RUNS_DIR))


def test_the_command_never_sure_of_the_lease_exits_1_in_one_line_and_keeps_the_committed_result(tmp_path, capsys,
                                                                                                 monkeypatch):
    """Storage too slow for every try (made so by a zero wait): the user's line, exit 1, the
    committed result as it was and no lease left."""
    monkeypatch.setattr(lease, "CONFIRM_S", 0.0)
    output = str(tmp_path / "out")
    committed = results.commit_tables(output, "preprocess", {"faces": [pa.table({"x": [1]})]})
    code, err = preprocess_one_image(tmp_path, output, capsys)
    assert code == 1
    assert err[-1].startswith(f"fer-ray preprocess: failed: OutputBusy: {output}: could not take the output's "
                              f"lease in {lease.ATTEMPTS} tries (storage too slow, or another run taking it); "
                              f"try again (details: "), err
    assert results.read_commit(output).run == committed.run
    assert storage.list_dirs(storage.join(output, results.RUNS_DIR)) == [committed.run]
    assert read_holder(output) is None


@pytest.mark.parametrize("command", ["train", "tune", "evaluate"])
def test_training_sweeps_and_evaluations_hold_their_output_too(tmp_path, capsys, other_process, command):
    """Refused for the busy output before reading any data (an evaluation checks its checkpoint
    first): one line, exit 1, an earlier result's file as it was and the holder's lease kept."""
    from fer_ray import cli

    output = str(tmp_path / "out")
    other = write_local_holder(output, other_process)
    (tmp_path / "out" / "metrics.json").write_text('{"accuracy": 0.5}')  # an earlier run's
    checkpoint = ["--checkpoint", "pretrained"] if command == "evaluate" else []
    capsys.readouterr()
    code = cli.main([command, *checkpoint, "--data", str(tmp_path / "faces"), "--output", output])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith(f"fer-ray {command}: failed: OutputBusy: another run "
                                                             "is writing into this output"), err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [lease.LEASE_FILE, "metrics.json"]
    assert (tmp_path / "out" / "metrics.json").read_text() == '{"accuracy": 0.5}'
    assert read_holder(output).token == other.token


def test_the_api_evaluation_is_refused_for_a_busy_output_too(tmp_path, other_process):
    import fer_ray

    output = str(tmp_path / "eval")
    write_local_holder(output, other_process)
    with pytest.raises(OutputBusy, match="another run is writing into this output"):
        fer_ray.evaluate("pretrained", str(tmp_path / "faces"), output=output)
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == [lease.LEASE_FILE]
