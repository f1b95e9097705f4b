"""cluster/ holds configs users apply as they are (issue 24): each test checks them against what
will read them, and each check is shown to catch a broken copy too."""
from __future__ import annotations

import copy
import glob
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from tests import cluster_configs as cc
from tests.cluster import free_port

JOBS = ("preprocess", "synthesize", "train", "tune", "label_videos")
GPU_JOBS = ("train", "label_videos")


def rayjobs() -> dict[str, dict]:
    """The RayJob of each job script, by the script's name."""
    found = {}
    for _, doc in cc.of_kind("RayJob"):
        script = shlex.split(doc["spec"]["entrypoint"])[1]
        found[os.path.basename(script).removesuffix(".py")] = doc
    return found


def kuberay_documents() -> list[tuple[str, dict]]:
    return cc.of_kind(*cc.KUBERAY_KINDS)


def service_accounts() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in cc.of_kind("ServiceAccount")}


def document_id(item) -> str:
    name, doc = item
    return f"{name}:{doc['metadata']['name']}"


@pytest.mark.parametrize("path", cc.cluster_yaml_files(), ids=lambda p: os.path.relpath(p, cc.REPO))
def test_every_yaml_under_cluster_parses(path):
    documents = cc.load_documents(path)
    assert documents and all(isinstance(doc, dict) and doc for doc in documents)


def test_a_rayjob_for_each_job_and_a_raycluster():
    assert sorted(rayjobs()) == sorted(JOBS)
    assert len(cc.of_kind("RayCluster")) == 1


@pytest.mark.parametrize("item", kuberay_documents(), ids=document_id)
def test_kuberay_manifest_fits_the_crd_schema_and_the_controller(item):
    _, doc = item
    assert doc["apiVersion"] == "ray.io/v1"
    assert cc.schema_problems(doc) == []
    assert cc.controller_problems(doc) == []


@pytest.mark.parametrize("item", kuberay_documents(), ids=document_id)
def test_kuberay_manifest_follows_our_rules(item):
    _, doc = item
    assert cc.policy_problems(doc, service_accounts()) == []


def test_gpu_jobs_and_the_raycluster_have_gpu_workers_with_bounds():
    documents = [rayjobs()[job] for job in GPU_JOBS] + [doc for _, doc in cc.of_kind("RayCluster")]
    for doc in documents:
        gpu = [g for name, g in cc.groups(cc.cluster_specs(doc)) if name == "gpu"]
        assert gpu and gpu[0]["maxReplicas"] >= 1, doc["metadata"]["name"]
        assert all(cc.GPU_RESOURCE in c["resources"]["limits"] for c in cc.ray_containers(gpu[0]))


def test_the_service_account_is_an_irsa_example():
    accounts = service_accounts()
    used = {g["template"]["spec"].get("serviceAccountName") for _, doc in kuberay_documents()
            for _, g in cc.groups(cc.cluster_specs(doc))}
    assert used <= set(accounts)
    assert all(re.match(r"arn:aws:iam::\d{12}:role/", a["metadata"]["annotations"][cc.IRSA_ANNOTATION])
               for a in accounts.values())


def test_schema_check_catches_misspelled_fields_wrong_types_and_values():
    doc = rayjobs()["train"]
    misspelled = copy.deepcopy(doc)
    misspelled["spec"]["shutdownAfterJobFinish"] = misspelled["spec"].pop("shutdownAfterJobFinishes")
    assert cc.schema_problems(misspelled) == ["spec.shutdownAfterJobFinish: unknown field"]
    deep = copy.deepcopy(doc)
    worker = deep["spec"]["rayClusterSpec"]["workerGroupSpecs"][1]
    worker["minReplica"] = worker.pop("minReplicas")
    worker["template"]["spec"]["containers"][0]["envFrm"] = []
    assert cc.schema_problems(deep) == [
        "spec.rayClusterSpec.workerGroupSpecs.1: 'minReplicas' is a required property",
        "spec.rayClusterSpec.workerGroupSpecs[1].minReplica: unknown field",
        "spec.rayClusterSpec.workerGroupSpecs[1].template.spec.containers[0].envFrm: unknown field"]
    wrong = copy.deepcopy(doc)
    wrong["spec"]["rayClusterSpec"]["authOptions"]["mode"] = "tokens"
    wrong["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = "4"
    problems = cc.schema_problems(wrong)
    assert any(p.startswith("spec.rayClusterSpec.authOptions.mode: 'tokens' is not one of") for p in problems)
    assert any(p.startswith("spec.rayClusterSpec.workerGroupSpecs.0.maxReplicas: '4' is not of type") for p in problems)


def test_schema_check_refuses_a_field_the_pruned_fixture_left_out():
    doc = copy.deepcopy(rayjobs()["tune"])
    doc["spec"]["activeDeadlineSeconds"] = 86400  # a real RayJob field that no manifest of ours uses
    assert cc.schema_problems(doc) == [
        "spec.activeDeadlineSeconds: not in the pruned schema fixture; run tests/fixtures/kuberay/prune_crd.py again"]


def test_controller_and_policy_checks_catch_broken_clusters():
    doc = copy.deepcopy(rayjobs()["label_videos"])
    spec = doc["spec"]["rayClusterSpec"]
    spec["workerGroupSpecs"][1]["minReplicas"] = 9  # above maxReplicas 8
    doc["metadata"]["name"] = "Fer_Ray"
    assert cc.controller_problems(doc) == [
        "metadata.name 'Fer_Ray': a DNS-1035 label of at most 47 characters",
        "gpu: replicas 2 must lie in minReplicas 9 .. maxReplicas 8"]
    del spec["authOptions"]
    spec["rayVersion"] = "2.59.0"
    doc["spec"]["shutdownAfterJobFinishes"] = False
    del spec["workerGroupSpecs"][1]["template"]["spec"]["containers"][0]["resources"]["limits"][cc.GPU_RESOURCE]
    assert cc.policy_problems(doc, service_accounts()) == [
        f"rayVersion '2.59.0' is not the pinned Ray {cc.project_pins()['ray']}",
        "authOptions: needs mode: token and the token's secretName",
        "dashboard-host 0.0.0.0: reachable from the network without token auth",
        f"gpu/ray-worker: {cc.GPU_RESOURCE} limits belong to the gpu group, and only there",
        "shutdownAfterJobFinishes: must be true"]


def test_pods_without_irsa_or_a_secret_have_no_s3_credentials():
    doc = copy.deepcopy(rayjobs()["synthesize"])
    head = doc["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    del head["serviceAccountName"]
    assert cc.policy_problems(doc, service_accounts()) == []  # the Secret is still there
    head["containers"][0]["envFrom"] = []
    assert cc.policy_problems(doc, service_accounts()) == [
        "head/ray-head: S3 credentials from neither an IRSA service account nor a Secret"]


@pytest.mark.parametrize("job", JOBS)
def test_entrypoint_runs_a_job_script_with_flags_and_configs_it_has(job):
    entrypoint = rayjobs()[job]["spec"]["entrypoint"]
    assert cc.entrypoint_problems(entrypoint) == []


def test_a_renamed_or_shortened_flag_breaks_the_entrypoint_check():
    entrypoint = rayjobs()["train"]["spec"]["entrypoint"]
    assert cc.entrypoint_problems(entrypoint.replace("--workers", "--num-workers")) == [
        "/app/jobs/train.py: no flag --num-workers (fer-ray train)"]
    # argparse would take --work for --workers; a cluster run of a renamed flag must not
    assert cc.entrypoint_problems(entrypoint.replace("--workers", "--work")) == [
        "/app/jobs/train.py: no flag --work (fer-ray train)"]
    assert cc.entrypoint_problems(entrypoint.replace("jobs/train.py", "jobs/training.py")) == [
        "/app/jobs/training.py: no such job script in jobs/"]


def test_entrypoint_configs_must_exist_load_and_validate():
    entrypoint = rayjobs()["preprocess"]["spec"]["entrypoint"]
    missing = cc.entrypoint_problems(entrypoint.replace("preprocess.yaml", "preprocessing.yaml"))
    assert len(missing) == 1 and "cannot read it" in missing[0]
    assert cc.entrypoint_problems(entrypoint + " --size 0") == ["fer-ray preprocess: face.size: 0 must be > 0"]


def test_the_aws_launcher_config_fits_rays_autoscaler_schema_and_our_rules():
    (config,) = cc.load_documents(os.path.join(cc.CLUSTER, "aws.yaml"))
    assert cc.autoscaler_problems(config) == []
    worker_types = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    assert {"cpu_worker", "gpu_worker"} <= set(worker_types)
    assert all(t["min_workers"] <= t["max_workers"] for t in worker_types.values())


def test_the_autoscaler_check_catches_a_misspelled_key_and_an_open_dashboard():
    (config,) = cc.load_documents(os.path.join(cc.CLUSTER, "aws.yaml"))
    misspelled = copy.deepcopy(config)
    misspelled["idle_timeout_minute"] = misspelled.pop("idle_timeout_minutes")
    assert any("'idle_timeout_minute' was unexpected" in p for p in cc.autoscaler_problems(misspelled))
    opened = copy.deepcopy(config)
    opened["head_start_ray_commands"] = [c.replace("RAY_AUTH_MODE=token ", "").replace("127.0.0.1", "0.0.0.0")
                                         for c in config["head_start_ray_commands"]]
    opened["worker_start_ray_commands"] = [c.replace("PATH=/app/.venv/bin:$PATH ", "")
                                           for c in config["worker_start_ray_commands"]]
    del opened["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"]
    assert cc.autoscaler_problems(opened) == [
        "gpu_worker: S3 access needs an IamInstanceProfile (no keys on the nodes)",
        "head_start_ray_commands: every `ray start` needs RAY_AUTH_MODE=token",
        "head_start_ray_commands: the dashboard must listen on 127.0.0.1 (reach it with `ray dashboard`)",
        "worker_start_ray_commands: every `ray start` needs the image's environment (/app/.venv/bin) first on PATH"]


def test_every_config_starts_the_same_image_of_this_version():
    (config,) = cc.load_documents(os.path.join(cc.CLUSTER, "aws.yaml"))
    used = {config["docker"]["image"]} | {image for _, doc in kuberay_documents() for image in cc.images(doc)}
    assert len(used) == 1
    assert used.pop().rpartition(":")[2] == cc.project_pins()["version"]


def test_dockerfile_builds_on_the_official_ray_image_of_the_pins():
    pins = cc.project_pins()
    assert cc.dockerfile_base() == f"rayproject/ray:{pins['ray']}-{pins['python']}"
    with open(os.path.join(cc.CLUSTER, "Dockerfile")) as f:
        lines = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert f"WORKDIR {cc.APP_DIR}" in lines  # where the manifests' entrypoints and configs point
    assert [line for line in lines if line.startswith("USER")][-1] == "USER ray"  # Ray's unprivileged user
    assert any(line.startswith("ENV PATH=/app/.venv/bin:") for line in lines)  # `ray start` runs the project's Python
    assert any(line.startswith("RUN") and "bash scripts/setup.sh" in line for line in lines)
    assert not any("demo" in line for line in lines if line.startswith(("RUN", "CMD", "ENTRYPOINT")))


def test_no_credentials_under_cluster():
    files = [p for p in glob.glob(os.path.join(cc.CLUSTER, "**", "*"), recursive=True) if os.path.isfile(p)]
    files.append(os.path.join(cc.REPO, ".dockerignore"))
    found = {}
    for path in files:
        with open(path) as f:
            hits = cc.credentials_in(f.read())
        if hits:
            found[os.path.relpath(path, cc.REPO)] = hits
    assert found == {}


def test_the_credential_scan_finds_planted_keys():
    planted = ("env:\n  - {name: AWS_SECRET_ACCESS_KEY, value: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY}\n"
               "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
               "stringData:\n  auth_token: 3f1c9a7d5e2b4c6a8f0e1d2c3b4a5968\n")
    assert len(cc.credentials_in(planted)) >= 3
    assert cc.credentials_in("--from-literal=AWS_SECRET_ACCESS_KEY=... auth_token=$(openssl rand -hex 32)") == []


def run_job_script(job: str, *args: str) -> subprocess.CompletedProcess:
    """The job's entrypoint as `ray job submit -- python jobs/<job>.py ...` runs it on the head,
    with RAY_ADDRESS naming a port nothing listens on: touching Ray would hang, not fail fast."""
    env = {**os.environ, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    return subprocess.run([sys.executable, f"jobs/{job}.py", *args], cwd=cc.REPO, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("job", JOBS)
def test_a_flag_the_cli_does_not_have_fails_at_once_naming_it(job):
    done = run_job_script(job, "--no-such-flag", "3")
    assert done.returncode == 2 and done.stdout == ""
    command = cc.job_command(os.path.join(cc.REPO, "jobs", f"{job}.py"))
    assert done.stderr == (f"fer-ray {command}: error: unrecognized arguments: --no-such-flag 3; "
                           f"--help lists the flags of fer-ray {command}\n")


def test_a_misspelled_flag_gets_the_closest_one_and_help_lists_them():
    done = run_job_script("label_videos", "--input", "x", "--output", "y", "--num-gpu", "1")
    assert done.returncode == 2
    assert "unrecognized arguments: --num-gpu (did you mean --num-gpus?) 1;" in done.stderr
    listed = run_job_script("label_videos", "--help")
    assert listed.returncode == 0 and "--num-gpus" in listed.stdout


def test_prefixes_of_flags_are_refused(capsys):
    from fer_ray import cli

    with pytest.raises(SystemExit) as exited:
        cli.parse_command_line(cli.build_parser(), ["preprocess", "--inp", "x"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --inp (did you mean --input?) x;" in capsys.readouterr().err


def test_the_pruned_fixture_names_its_kuberay_source():
    for kind in cc.KUBERAY_KINDS:
        with open(os.path.join(cc.KUBERAY_FIXTURES, f"{kind.lower()}.v1.schema.yaml")) as f:
            text = f.read()
        assert "KubeRay v1.7.0" in text.splitlines()[0] and re.search(r"commit [0-9a-f]{40}", text.splitlines()[1])
        expected = {"entrypoint", "rayClusterSpec"} if kind == "RayJob" else {"authOptions", "workerGroupSpecs"}
        assert set(yaml.safe_load(text)["properties"]["spec"]["properties"]) >= expected
