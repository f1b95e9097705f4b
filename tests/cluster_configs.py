"""Checks of the cluster configs under cluster/ against what reads them: KubeRay's CRD schema
(a pruned copy in tests/fixtures/kuberay/) and its controller's rules, Ray's autoscaler schema
(shipped in the ray package), fer-ray's own command-line parser and config loader, and the
Dockerfile's pins. Each check returns a list of problems (empty = fine), so the tests can show
that a broken config is caught as well as that ours pass."""
from __future__ import annotations

import ast
import glob
import ipaddress
import json
import os
import re
import shlex
import tomllib

import jsonschema
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.path.join(REPO, "cluster")
KUBERAY_FIXTURES = os.path.join(REPO, "tests", "fixtures", "kuberay")
APP_DIR = "/app"  # where cluster/Dockerfile puts the repository in the image
KUBERAY_KINDS = ("RayJob", "RayCluster")
# KubeRay's controller (utils/constant.go): a RayJob's cluster name adds a 6-character suffix
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47}
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MIN_TOKEN_RAY = (2, 52)  # KubeRay refuses authOptions.mode token below this Ray version
LOOPBACK_NAMES = ("localhost",)
GPU_RESOURCE = "nvidia.com/gpu"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"


def cluster_yaml_files() -> list[str]:
    return sorted(glob.glob(os.path.join(CLUSTER, "**", "*.yaml"), recursive=True))


def load_documents(path: str) -> list:
    with open(path) as f:
        return list(yaml.safe_load_all(f))


def all_documents() -> list[tuple[str, dict]]:
    """(file name relative to the repo, document) for every YAML document under cluster/."""
    return [(os.path.relpath(path, REPO), doc) for path in cluster_yaml_files() for doc in load_documents(path)]


def of_kind(*kinds: str) -> list[tuple[str, dict]]:
    return [(name, doc) for name, doc in all_documents() if isinstance(doc, dict) and doc.get("kind") in kinds]


def project_pins() -> dict:
    """The Ray version, the Python tag (py311) and the project version of pyproject.toml."""
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    ray_pin = next(dep for dep in project["project"]["dependencies"] if re.match(r"ray(\[.*\])?==", dep))
    return {"ray": ray_pin.split("==")[1], "python": project["tool"]["ruff"]["target-version"],
            "version": project["project"]["version"]}


# --- KubeRay -------------------------------------------------------------------------------

def crd_schema(kind: str) -> dict:
    with open(os.path.join(KUBERAY_FIXTURES, f"{kind.lower()}.v1.schema.yaml")) as f:
        return yaml.safe_load(f)


def schema_problems(doc: dict) -> list[str]:
    """What the CRD's schema refuses (types, enums, required fields), and every key it does not know."""
    schema = crd_schema(doc["kind"])
    validator = jsonschema.Draft7Validator(schema)
    found = [f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
             for error in validator.iter_errors(doc)]
    return found + unknown_keys(doc, schema, "")


def unknown_keys(value, schema: dict, path: str) -> list[str]:
    """Keys the schema does not list. Kubernetes' structural schemas do not say
    additionalProperties: false (the API server prunes unknown fields silently), so a
    misspelled field would pass jsonschema and be dropped on `kubectl apply`."""
    if schema.get("x-pruned"):
        return [f"{path}: not in the pruned schema fixture; run tests/fixtures/kuberay/prune_crd.py again"]
    if isinstance(value, list):
        return [problem for i, item in enumerate(value)
                for problem in unknown_keys(item, schema.get("items", {}), f"{path}[{i}]")]
    if not isinstance(value, dict):
        return []
    if "properties" in schema:
        known = schema["properties"]
        problems = [f"{path}.{key}".lstrip(".") + ": unknown field" for key in value if key not in known]
        return problems + [problem for key, item in value.items() if key in known
                           for problem in unknown_keys(item, known[key], f"{path}.{key}".lstrip("."))]
    if isinstance(schema.get("additionalProperties"), dict):  # a map, e.g. resources.limits
        return [problem for key, item in value.items()
                for problem in unknown_keys(item, schema["additionalProperties"], f"{path}.{key}")]
    return []  # free-form (metadata, x-kubernetes-preserve-unknown-fields): the API server checks it


def cluster_specs(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


def groups(spec: dict) -> list[tuple[str, dict]]:
    """(name, group spec) of the head group and each worker group."""
    return [("head", spec["headGroupSpec"])] + [(g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs", [])]


def ray_containers(group: dict) -> list[dict]:
    return group["template"]["spec"].get("containers", [])


def controller_problems(doc: dict) -> list[str]:
    """What KubeRay's controller (utils/validation.go) refuses, for the fields we use."""
    kind, name = doc["kind"], doc["metadata"].get("name", "")
    problems = []
    if not DNS_1035_LABEL.match(name) or len(name) > MAX_NAME_LENGTH[kind]:
        problems.append(f"metadata.name {name!r}: a DNS-1035 label of at most {MAX_NAME_LENGTH[kind]} characters")
    spec = cluster_specs(doc)
    for group_name, group in groups(spec):
        if not ray_containers(group):
            problems.append(f"{group_name}: no container")
        low, high, now = group.get("minReplicas", 0), group.get("maxReplicas"), group.get("replicas")
        if group_name != "head" and high is not None and not (0 <= low <= (now if now is not None else low) <= high):
            problems.append(f"{group_name}: replicas {now} must lie in minReplicas {low} .. maxReplicas {high}")
    auth = spec.get("authOptions") or {}
    ray_version = tuple(int(part) for part in spec.get("rayVersion", "0.0").split(".")[:2])
    if auth.get("mode") == "token" and ray_version < MIN_TOKEN_RAY:
        problems.append(f"rayVersion {spec.get('rayVersion')!r}: token auth needs Ray >= 2.52")
    return problems


def policy_problems(doc: dict, service_accounts: dict[str, dict]) -> list[str]:
    """fer-ray's own rules for a RayJob/RayCluster (issue 24): the pinned Ray, token auth from a
    Secret, the dashboard never open without it, autoscaling bounds, GPU limits on GPU groups,
    S3 credentials from an IRSA service account or a Secret, the job's cluster torn down after."""
    spec, problems = cluster_specs(doc), []
    pins = project_pins()
    if spec.get("rayVersion") != pins["ray"]:
        problems.append(f"rayVersion {spec.get('rayVersion')!r} is not the pinned Ray {pins['ray']}")
    auth = spec.get("authOptions") or {}
    if auth.get("mode") != "token" or not auth.get("secretName"):
        problems.append("authOptions: needs mode: token and the token's secretName")
    # KubeRay binds the dashboard to 0.0.0.0 unless rayStartParams says otherwise
    host = spec["headGroupSpec"].get("rayStartParams", {}).get("dashboard-host", "0.0.0.0")
    if not is_loopback(host) and auth.get("mode") != "token":
        problems.append(f"dashboard-host {host}: reachable from the network without token auth")
    if not spec.get("enableInTreeAutoscaling"):
        problems.append("enableInTreeAutoscaling: must be true")
    for group_name, group in groups(spec):
        problems += group_problems(group_name, group, service_accounts)
    if doc["kind"] == "RayJob" and doc["spec"].get("shutdownAfterJobFinishes") is not True:
        problems.append("shutdownAfterJobFinishes: must be true")
    return problems


def group_problems(group_name: str, group: dict, service_accounts: dict[str, dict]) -> list[str]:
    problems = []
    if group_name != "head" and ("minReplicas" not in group or "maxReplicas" not in group):
        problems.append(f"{group_name}: autoscaling bounds minReplicas and maxReplicas are required")
    pod = group["template"]["spec"]
    account = service_accounts.get(pod.get("serviceAccountName", ""), {})
    has_irsa = IRSA_ANNOTATION in (account.get("metadata", {}).get("annotations") or {})
    for container in ray_containers(group):
        from_secret = any("secretRef" in source for source in container.get("envFrom", []))
        if not (has_irsa or from_secret):
            problems.append(f"{group_name}/{container['name']}: S3 credentials from neither an IRSA service "
                            "account nor a Secret")
        limits = container.get("resources", {}).get("limits", {})
        if (group_name == "gpu") != (GPU_RESOURCE in limits):
            problems.append(f"{group_name}/{container['name']}: {GPU_RESOURCE} limits belong to the gpu group, "
                            "and only there")
    return problems


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def images(doc: dict) -> set[str]:
    return {c["image"] for _, group in groups(cluster_specs(doc)) for c in ray_containers(group)}


# --- entrypoints and flags -------------------------------------------------------------------

def job_command(script: str) -> str:
    """The fer-ray command a jobs/*.py script runs: the first item of its `main([...])` call."""
    with open(script) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "main" and node.args
                and isinstance(node.args[0], ast.List) and isinstance(node.args[0].elts[0], ast.Constant)):
            return node.args[0].elts[0].value
    raise AssertionError(f"{script}: no main([<command>, ...]) call")


def local_path(image_path: str) -> str:
    """A path in the image (under /app) as the path in this checkout."""
    return os.path.join(REPO, os.path.relpath(image_path, APP_DIR)) if image_path.startswith(APP_DIR + "/") else ""


def entrypoint_problems(entrypoint: str) -> list[str]:
    """An entrypoint must run an existing jobs/*.py with flags its parser has (exactly: the
    same name, not a prefix of one), configs that exist and load, and a valid config."""
    from fer_ray import cli

    argv = shlex.split(entrypoint)
    if len(argv) < 2 or argv[0] != "python" or not re.fullmatch(rf"{APP_DIR}/jobs/\w+\.py", argv[1]):
        return [f"{entrypoint[:60]!r}: expected `python {APP_DIR}/jobs/<name>.py ...`"]
    script = local_path(argv[1])
    if not os.path.isfile(script):
        return [f"{argv[1]}: no such job script in jobs/"]
    command = cli.command_parsers(cli.build_parser())[job_command(script)]
    flags = [arg.partition("=")[0] for arg in argv[2:] if arg.startswith("--")]
    problems = [f"{argv[1]}: no flag {flag} (fer-ray {job_command(script)})" for flag in flags
                if flag not in command._option_string_actions]
    return problems or config_problems(job_command(script), command, [local_config(a) for a in argv[2:]])


def local_config(arg: str) -> str:
    """Config files are named by their path in the image; read them from this checkout."""
    return local_path(arg) if arg.startswith(f"{APP_DIR}/configs/") else arg


def config_problems(name: str, command, args: list[str]) -> list[str]:
    from fer_ray import cli
    from fer_ray.config import ConfigError

    config_classes = {"preprocess": cli.PreprocessConfig, "synthesize": cli.SynthesizeConfig,
                      "train": cli.TrainConfig, "tune": cli.TuneConfig, "label-videos": cli.LabelVideosConfig}
    namespace, unknown = command.parse_known_args(args)
    if unknown:
        return [f"fer-ray {name}: unrecognised {unknown}"]
    if namespace.config and not namespace.config.startswith(os.path.join(REPO, "configs") + os.sep):
        return [f"--config {namespace.config}: not a file of configs/ in the image"]
    try:
        cli.build_config(config_classes[name], namespace).validate()
    except ConfigError as err:
        return [f"fer-ray {name}: {err}"]
    return []


# --- Ray's autoscaler ------------------------------------------------------------------------

def ray_autoscaler_schema() -> dict:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def autoscaler_problems(config: dict) -> list[str]:
    """What Ray's autoscaler schema refuses (it does set additionalProperties: false), then our
    rules: S3 from instance profiles, token auth on every node, the dashboard on loopback."""
    validator = jsonschema.Draft7Validator(ray_autoscaler_schema())
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in validator.iter_errors(config)]
    if problems:
        return problems
    node_types = config["available_node_types"]
    if config.get("head_node_type") not in node_types:
        problems.append(f"head_node_type {config.get('head_node_type')!r} is not in available_node_types")
    problems += [f"{name}: S3 access needs an IamInstanceProfile (no keys on the nodes)"
                 for name, node_type in node_types.items() if "IamInstanceProfile" not in node_type["node_config"]]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        problems += start_command_problems(key, [c for c in config.get(key, []) if "ray start" in c])
    if "~/.ray/auth_token" not in (config.get("file_mounts") or {}):
        problems.append("file_mounts: the token file ~/.ray/auth_token must reach every node")
    return problems


def start_command_problems(key: str, starts: list[str]) -> list[str]:
    problems = []
    if not starts or not all("RAY_AUTH_MODE=token" in c for c in starts):
        problems.append(f"{key}: every `ray start` needs RAY_AUTH_MODE=token")
    if not all(re.search(rf"PATH={APP_DIR}/\.venv/bin:", c) for c in starts):
        problems.append(f"{key}: every `ray start` needs the image's environment ({APP_DIR}/.venv/bin) "
                        "first on PATH")
    hosts = [re.search(r"--dashboard-host[= ](\S+)", c) for c in starts]
    if key.startswith("head") and not all(host and is_loopback(host.group(1)) for host in hosts):
        problems.append(f"{key}: the dashboard must listen on 127.0.0.1 (reach it with `ray dashboard`)")
    return problems


# --- Dockerfile and credentials --------------------------------------------------------------

def dockerfile_base() -> str:
    """The FROM image of cluster/Dockerfile with its build arguments' defaults filled in."""
    defaults, base = {}, ""
    with open(os.path.join(CLUSTER, "Dockerfile")) as f:
        for line in f:
            words = line.split(maxsplit=1)
            if words[:1] == ["ARG"] and "=" in words[1] and not base:
                name, _, value = words[1].strip().partition("=")
                defaults[name] = value.strip('"')
            elif words[:1] == ["FROM"]:
                base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], words[1].split()[0])
    return base


CREDENTIAL_PATTERNS = (
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # an AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{20,}"),
    re.compile(r"(?i)aws_access_key_id\s*[=:]\s*['\"]?[A-Z0-9]{16,}"),
    re.compile(r"(?i)aws_session_token\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{20,}"),
    re.compile(r"(?i)auth_token\s*[=:]\s*['\"]?[A-Za-z0-9_\-]{16,}"),  # a Ray token written out
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)


def credentials_in(text: str) -> list[str]:
    return [match.group(0) for pattern in CREDENTIAL_PATTERNS for match in pattern.finditer(text)]
