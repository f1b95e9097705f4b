"""Fitting a run's resource requests to a cluster, without Ray: what fits is kept, the
auto CPU share is fitted down, and what cannot fit fails with the field, the need, what the
cluster has and what to change (Ray itself would wait for it forever)."""
from __future__ import annotations

import math

import pytest

from fer_ray.config import ConfigError, TrainConfig, TuneConfig
from fer_ray.runtime import DATA_CPUS, Capacity, check_classifier_gpu, check_face_actors, fit_train, trials_at_once
from fer_ray.training import sweep
from fer_ray.training.sweep import TRIAL_CPUS

LAPTOP = Capacity.of_nodes({"CPU": 2.0, "memory": 8e9})
WORKSTATION = Capacity.of_nodes({"CPU": 16.0})
GPU_NODES = Capacity.of_nodes(*[{"CPU": 8.0, "GPU": 2.0}] * 4)  # 32 CPUs, 8 GPUs


def fails(function, *args) -> str:
    with pytest.raises(ConfigError) as err:
        function(*args)
    return str(err.value)


def test_train_default_is_auto():
    assert TrainConfig().cpus_per_worker == 0  # fitted when the run joins its cluster


def test_a_sweep_resolves_cpus_per_worker_for_every_trial_and_how_many_run_at_once():
    cfg = TuneConfig(train=TrainConfig(workers=2))
    assert sweep.fit_to_cluster(cfg, LAPTOP) == 1
    assert cfg.train.cpus_per_worker == 0.49  # what trials and config.yaml get
    cfg = TuneConfig(max_concurrent=2, train=TrainConfig(workers=2, cpus_per_worker=0.5))
    assert fails(sweep.fit_to_cluster, cfg, LAPTOP).startswith("cpus_per_worker: 2 workers x 0.5 CPU")


@pytest.mark.parametrize("capacity, workers, trial_cpus, expected", [
    (WORKSTATION, 2, 0.0, 1.0),            # room for 1 CPU each: the auto default
    (WORKSTATION, 2, TRIAL_CPUS, 1.0),
    (LAPTOP, 2, 0.0, 0.5),                 # 2 CPUs: one left for Ray Data, half each
    (LAPTOP, 2, TRIAL_CPUS, 0.49),         # and the Tune trial's share besides
    (LAPTOP, 1, TRIAL_CPUS, 0.99),
    (Capacity.of_nodes({"CPU": 4.0}), 3, 0.0, 1.0),
    (Capacity.of_nodes({"CPU": 4.0}), 7, 0.0, 0.42),   # 3/7 rounded down
])
def test_auto_cpus_per_worker_fits_workers_trial_and_data_reading(capacity, workers, trial_cpus, expected):
    cpus = fit_train(workers, 0, False, capacity, trial_cpus)
    assert cpus == expected
    assert workers * cpus + trial_cpus + DATA_CPUS <= capacity.amount("CPU")


def test_explicit_cpus_per_worker_that_fits_is_kept():
    assert fit_train(2, 0.5, False, LAPTOP) == 0.5
    assert fit_train(4, 2.0, True, GPU_NODES, TRIAL_CPUS) == 2.0


def test_explicit_cpus_per_worker_that_cannot_fit_names_field_need_cluster_and_change():
    message = fails(fit_train, 2, 1.0, False, LAPTOP, TRIAL_CPUS)
    assert message.startswith("cpus_per_worker: 2 workers x 1 CPU plus 0.01 for the Tune trial and "
                              "1 for Ray Data's reading need 3.01 CPUs, the cluster has 2 CPUs")
    assert "--cpus-per-worker 0.49" in message
    message = fails(fit_train, 2, 1.0, False, LAPTOP)
    assert "need 3 CPUs" in message and "--cpus-per-worker 0.5" in message and "--workers 1" in message


def test_no_cpu_left_for_the_workers_fails_naming_workers():
    message = fails(fit_train, 1, 0, False, Capacity.of_nodes({"CPU": 1.0}))
    assert message.startswith("workers: ") and "the cluster has 1 CPU" in message
    assert "more CPUs" in message
    assert "--workers 50" in fails(fit_train, 64, 0, False, Capacity.of_nodes({"CPU": 1.5}))


def test_gpu_workers_need_a_gpu_each():
    assert fit_train(8, 0, True, GPU_NODES) == 1.0
    none = fails(fit_train, 2, 0, True, WORKSTATION)
    assert none.startswith("gpu: 2 workers x 1 GPU need 2 GPUs, the cluster has none") and "--gpu" in none
    too_few = fails(fit_train, 16, 0, True, GPU_NODES)
    assert too_few.startswith("gpu, workers: 16 workers x 1 GPU need 16 GPUs, the cluster has 8 GPUs")
    assert "--workers 8" in too_few


def test_one_worker_must_fit_on_one_node():
    four_nodes = Capacity.of_nodes(*[{"CPU": 4.0}] * 4)
    assert fit_train(2, 4.0, False, four_nodes) == 4.0
    message = fails(fit_train, 1, 8.0, False, four_nodes)  # 16 CPUs in all, 4 on any one node
    assert message.startswith("cpus_per_worker: one worker needs 8 CPUs on one node, the most a node has is 4")
    assert "--cpus-per-worker 4" in message
    mixed = Capacity.of_nodes({"CPU": 32.0}, {"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0})
    message = fails(fit_train, 2, 6.0, True, mixed)  # the 32-CPU node has no GPU
    assert "6 CPUs and 1 GPU on one node" in message and "the most a node with a GPU has is 4 CPUs" in message


@pytest.mark.parametrize("capacity, workers, cpus, gpu, expected", [
    (LAPTOP, 2, 0.49, False, 1),
    (WORKSTATION, 2, 1.0, False, 7),       # (16 - 1) // 2.01
    (WORKSTATION, 1, 0.5, False, 29),      # (16 - 1) // 0.51
    (GPU_NODES, 2, 1.0, True, 4),          # 8 GPUs // 2, although the CPUs hold 15
])
def test_trials_at_once_fit_the_cluster(capacity, workers, cpus, gpu, expected):
    assert trials_at_once(workers, cpus, gpu, capacity, TRIAL_CPUS) == expected
    assert trials_at_once(workers, cpus, gpu, capacity, TRIAL_CPUS, requested=1) == 1


def test_default_tune_on_two_cpus_fits_one_trial_at_a_time():
    cpus = fit_train(2, 0, False, LAPTOP, TRIAL_CPUS)
    assert trials_at_once(2, cpus, False, LAPTOP, TRIAL_CPUS) == 1


def test_max_concurrent_beyond_the_cluster_fails_naming_it():
    message = fails(trials_at_once, 2, 0.49, False, LAPTOP, TRIAL_CPUS, 4)
    assert message.startswith("max_concurrent: 4 trials at once")
    assert "need 4.96 CPUs; the cluster has 2 CPUs" in message and "--max-concurrent 1" in message
    message = fails(trials_at_once, 2, 1.0, True, GPU_NODES, TRIAL_CPUS, 6)
    assert "12 GPUs" in message and "8 GPUs" in message and "--max-concurrent 4" in message


def test_face_actors_on_cpus_need_no_gpu():
    check_face_actors(0, 0.0, 0.8, LAPTOP)
    check_face_actors(8, 0.0, 0.8, LAPTOP)  # more actors than CPUs start as CPUs free up


def test_face_actors_on_gpus():
    check_face_actors(0, 1.0, 0.8, GPU_NODES)
    check_face_actors(16, 0.5, 0.8, GPU_NODES)
    none = fails(check_face_actors, 0, 1.0, 0.8, LAPTOP)
    assert none.startswith("num_gpus: a face actor asks for 1 GPU, the cluster has none") and "--num-gpus 0" in none
    too_many = fails(check_face_actors, 12, 1.0, 0.8, GPU_NODES)
    assert too_many.startswith("workers: 12 face actors x 1 GPU need 12 GPUs, the cluster has 8")
    assert "--workers 8" in too_many
    too_big = fails(check_face_actors, 0, 4.0, 0.8, GPU_NODES)  # 8 GPUs, 2 per node
    assert too_big.startswith("num_gpus: a face actor needs 4 GPUs and 0.8 CPU on one node")
    assert "--num-gpus 2" in too_big



def test_predicts_classifier_takes_a_gpu_share_beside_the_face_actors():
    check_classifier_gpu(0, 0.5, Capacity.of_nodes({"CPU": 16.0, "GPU": 1.0}))
    check_classifier_gpu(7, 1.0, GPU_NODES)
    one_gpu = fails(check_classifier_gpu, 0, 1.0, Capacity.of_nodes({"CPU": 16.0, "GPU": 1.0}))
    assert one_gpu == ("num_gpus: 1 face actor and the classifier, 1 GPU each, need 2 GPUs, the cluster has 1: "
                       "use --num-gpus 0.5 or less")
    too_many = fails(check_classifier_gpu, 8, 1.0, GPU_NODES)
    assert too_many.startswith("num_gpus: 8 face actors and the classifier, 1 GPU each, need 9 GPUs")
    assert too_many.endswith("use --num-gpus 0.88 or less, or --workers 7")

def test_autoscaling_cluster_counts_the_nodes_it_may_start():
    # a CPU-less head, up to 16 CPU workers and 4 one-GPU workers (cluster/aws.yaml)
    capacity = Capacity.of_node_types([({"CPU": 0}, 1), ({"CPU": 32}, 16), ({"CPU": 8, "GPU": 1}, 4)])
    assert capacity.amount("CPU") == 32 * 16 + 8 * 4 and capacity.amount("GPU") == 4
    assert fit_train(4, 0, True, capacity) == 1.0
    assert "the cluster has 4 GPUs" in fails(fit_train, 8, 0, True, capacity)
    unlimited = Capacity.of_node_types([({"CPU": 8, "GPU": 1}, -1)], limits={"GPU": 6})
    assert math.isinf(unlimited.amount("CPU")) and unlimited.amount("GPU") == 6
