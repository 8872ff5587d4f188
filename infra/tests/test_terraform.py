"""The deployment's promises, read from the Terraform itself (no Terraform binary here).

python-hcl2 parses every .tf under infra/; each test follows the values it checks from the
environment root (infra/envs/*) through the module calls to the resources, so that a promise
broken in any one place fails here:

- every service runs at least two tasks, in private subnets of at least two zones, and that
  floor runs on Fargate on demand (Spot only above it);
- the queue-driven services scale on their backlog divided by the running tasks that the tasks'
  own heartbeat counts (cli/src/cmd/health.rs), which every service sends; no Container Insights;
- every queue has a dead-letter queue;
- every queue, table, secret and log group (and the alarm topic, the image repository and the
  rotation's schedule) is encrypted with the deployment's customer-managed key, and the key lets
  CloudWatch Logs encrypt every log group the deployment makes;
- no IAM statement allows a data action (SQS, DynamoDB, Secrets Manager, KMS, EventBridge,
  Logs, S3, ECR's image actions...) on "*";
- the queue, table, index, bus, rule and secret names are the backend's
  (backends/aws/src/names.rs and the queue names of ports/src/queue.rs: what
  `como-saga infra bootstrap` creates), spelled in names.tf only;
- the API checks tokens against the edge's user pool and client, and nothing else;
- the data keys' secret (`<prefix>/data-keys`, named as app/src/stack.rs names it) is made
  empty (no secret version: no key in the state) and read only by the roles that seal or open
  a guest's contact (the API, the orchestrator, the SevenRooms worker), written only by the
  `keys` role that the deploy workflow's `keys init` runs under;
- the roles that erase guests (the API, the orchestrator) may rewrite the dead letters that
  hold them (the request queue's and the SevenRooms command queue's);
- the deploy workflow makes the data keys before any service rolls, and rolls the SevenRooms
  worker, then the orchestrator, then the API (every reader of a sealed guest before its
  writer), each job stable on its new revision before the next starts; the roll-service
  action's scripts pass shellcheck.

Run: `python -m pytest infra/tests` (infra/check.sh installs python-hcl2 and pytest).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import hcl2
import pytest
from hcl2 import SerializationOptions

INFRA = Path(__file__).resolve().parents[1]
REPO = INFRA.parent
ENVS = INFRA / "envs"
MODULES = INFRA / "modules"

OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)

# The services of the compute module, each of which must run active-active.
SERVICES = {"api", "orchestrator", "worker-crm", "worker-sevenrooms"}


# --- reading the Terraform ------------------------------------------------------------------


@lru_cache(maxsize=None)
def parse(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=OPTIONS)


def tf_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.tf"))


class Directory:
    """One Terraform directory (a module or an environment root), merged over its files."""

    def __init__(self, path: Path):
        self.path = path
        self.files = tf_files(path)
        assert self.files, f"no .tf files in {path}"

    def blocks(self, kind: str):
        """(file, body) of every top-level block of a kind: resource, data, module..."""
        for f in self.files:
            for block in parse(f).get(kind, []):
                yield f, block

    def labelled(self, kind: str, type_: str) -> dict[str, dict]:
        """{name: body} of the `kind "type_" "name"` blocks (resource, data)."""
        found = {}
        for _, block in self.blocks(kind):
            for t, named in block.items():
                if t == type_:
                    found.update(named)
        return found

    def resources(self, type_: str) -> dict[str, dict]:
        return self.labelled("resource", type_)

    def data(self, type_: str) -> dict[str, dict]:
        return self.labelled("data", type_)

    def all_resources(self):
        """(type, name, body) of every resource."""
        for _, block in self.blocks("resource"):
            for type_, named in block.items():
                for name, body in named.items():
                    yield type_, name, body

    def variables(self) -> dict[str, dict]:
        found = {}
        for _, block in self.blocks("variable"):
            found.update(block)
        return found

    def locals(self) -> dict:
        found = {}
        for _, block in self.blocks("locals"):
            found.update(block)
        return found

    def outputs(self) -> dict[str, dict]:
        found = {}
        for _, block in self.blocks("output"):
            found.update(block)
        return found

    def modules(self) -> dict[str, dict]:
        found = {}
        for _, block in self.blocks("module"):
            found.update(block)
        return found

    def module_path(self, call: dict) -> Path:
        return (self.path / call["source"]).resolve()


def module(name: str) -> Directory:
    return Directory(MODULES / name)


def envs() -> list[Directory]:
    found = [Directory(p) for p in sorted(ENVS.iterdir()) if p.is_dir() and tf_files(p)]
    assert found, "no environment root under infra/envs"
    return found


def calls_of(name: str) -> list[tuple[Directory, dict]]:
    """Every environment root's call of a module, with the root."""
    found = []
    for env in envs():
        for call in env.modules().values():
            if env.module_path(call) == (MODULES / name).resolve():
                found.append((env, call))
    assert found, f"no environment calls the {name} module"
    return found


def one(blocks):
    """A nested block that appears once (python-hcl2 gives nested blocks as lists)."""
    assert isinstance(blocks, list) and len(blocks) == 1, blocks
    return blocks[0]


def default(directory: Directory, variable: str):
    v = directory.variables()[variable]
    assert "default" in v, f"{directory.path}: variable {variable} has no default"
    return v["default"]


def validations(directory: Directory, variable: str) -> list[str]:
    v = directory.variables()[variable]
    return [c["condition"] for c in v.get("validation", [])]


# --- the backend's names (the single source of truth) ---------------------------------------


@lru_cache(maxsize=None)
def backend_names() -> dict:
    """The constants of backends/aws/src/names.rs, and the queue names of ports/src/queue.rs."""
    text = (REPO / "backends/aws/src/names.rs").read_text()
    consts = dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', text))
    arrays = {
        name: [
            consts.get(item.strip(), item.strip().strip('"'))
            for item in body.split(",")
            if item.strip()
        ]
        for name, body in re.findall(r"pub const (\w+): \[&str; \d+\] = \[([^\]]*)\];", text)
    }
    # The naming rules themselves: the prefix and a dash, the dead-letter suffix, the slash.
    assert 'format!("{}-{name}", self.prefix)' in text
    assert 'format!("{}{DLQ_SUFFIX}", self.queue(queue))' in text
    assert 'format!("{}/{name}", self.prefix)' in text

    queue_rs = (REPO / "ports/src/queue.rs").read_text()
    as_str = queue_rs[queue_rs.index("fn as_str") :]
    as_str = as_str[: as_str.index("\n    }\n")]
    queues = re.findall(r'=> "([a-z-]+)"', as_str)
    assert len(queues) >= 5, queues

    bootstrap = (REPO / "backends/aws/src/bootstrap.rs").read_text()
    projections = {
        name: [s.strip().strip('"') for s in body.split(",") if s.strip()]
        for name, body in re.findall(r"pub const (\w+_PROJECTION): \[&str; \d+\] = \[([^\]]*)\];", bootstrap)
    }
    return {"consts": consts, "arrays": arrays, "queues": queues, "projections": projections}


@lru_cache(maxsize=None)
def data_keys_secret() -> str:
    """The data keys' secret's own name, as the application reads it: names.rs's if it names
    it, else app/src/stack.rs's DATA_KEYS_SECRET."""
    for path in ("backends/aws/src/names.rs", "app/src/stack.rs"):
        m = re.search(r'pub const DATA_KEYS_SECRET: &str = "([^"]+)";', (REPO / path).read_text())
        if m:
            return m.group(1)
    raise AssertionError("no DATA_KEYS_SECRET in names.rs or app/src/stack.rs")


def secrets_made(names: dict) -> list[str]:
    """The own names of the secrets names.tf's `secret` map makes: its list local, a list or a
    concat() of list locals and lists of string locals."""
    list_name, _ = for_template(names["secret"])
    members = names[list_name]
    if isinstance(members, list):
        return members
    m = re.fullmatch(r"\$\{concat\((.*)\)\}", members)
    assert m, f"names.tf {list_name} is neither a list nor a concat(): {members}"
    made = []
    for part in re.findall(r"\[[^\]]*\]|[\w.]+", m.group(1)):
        if part.startswith("["):
            made += [names[r.strip().removeprefix("local.")] for r in part[1:-1].split(",") if r.strip()]
        else:
            made += names[part.removeprefix("local.")]
    return made


def render(template: str, prefix: str, item: str = "") -> str:
    """A names.tf name template with the prefix and the item (q, s) filled in."""
    names = module("data").locals()
    out = template
    for local in ("dlq_suffix", "table", "bus", "booking_rule"):
        out = out.replace("${local.%s}" % local, names[local])
    out = out.replace("${var.prefix}", prefix)
    for var in ("${q}", "${s}"):
        out = out.replace(var, item)
    assert "${" not in out, out
    return out


def for_template(expr: str) -> tuple[str, str]:
    """`${{for q in local.LIST : q => "TEMPLATE"}}` -> (LIST, TEMPLATE)."""
    m = re.fullmatch(r'\$\{\{for (\w) in local\.(\w+) : \1 => "(.*)"\}\}', expr)
    assert m, f"not a name template: {expr}"
    return m.group(2), m.group(3)


# --- 1. every service runs at least two tasks in subnets of two zones -----------------------


def test_every_service_runs_at_least_two_tasks_in_two_zones():
    compute = module("compute")
    services = compute.locals()["services"]
    assert set(services) == SERVICES, "the compute module's services changed: update SERVICES"

    # The tasks per service: at least two at the start and under autoscaling, whatever the root.
    assert any(">= 2" in c for c in validations(compute, "min_tasks"))
    for env, call in calls_of("compute"):
        assert call.get("min_tasks") == "${var.min_tasks}", f"{env.path}: min_tasks must come from the root"
        floor = default(env, "min_tasks")
        assert set(floor) == SERVICES, f"{env.path}: min_tasks names every service"
        assert all(n >= 2 for n in floor.values()), f"{env.path}: fewer than two tasks: {floor}"
    assert all(n >= 2 for n in default(compute, "min_tasks").values())

    service = compute.resources("aws_ecs_service")["role"]
    assert service["for_each"] == "${local.services}"
    assert service["desired_count"] == "${var.min_tasks[each.key]}"

    # The floor runs on Fargate on demand: the strategy's base is min_tasks on FARGATE, and no
    # other provider (Spot) has a base; Spot is for the queue-driven services only, never the API.
    assert "launch_type" not in service, "a launch type would bypass the capacity provider strategy"
    strategy = service["capacity_provider_strategy"]
    on_demand = [s for s in strategy if s["capacity_provider"] == "FARGATE"]
    assert len(on_demand) == 1 and on_demand[0]["base"] == "${var.min_tasks[each.key]}", strategy
    for s in strategy:
        if s["capacity_provider"] != "FARGATE":
            assert s.get("base", 0) == 0, f"{s['capacity_provider']} has a base: the floor must be on demand"
    for d in service.get("dynamic", []):
        for c in d.get("capacity_provider_strategy", {}).get("content", []):
            assert c.get("base", 0) == 0, "a dynamic capacity provider has a base: the floor must be on demand"
    assert {"FARGATE", "FARGATE_SPOT"} >= set(
        one(list(compute.resources("aws_ecs_cluster_capacity_providers").values()))["capacity_providers"]
    )
    assert "local.backlog_queues" in compute.locals()["spot"], "Spot must be limited to the queue-driven services"
    assert "api" not in compute.locals()["backlog_queues"]
    net = one(service["network_configuration"])
    assert net["subnets"] == "${var.private_subnet_ids}"
    assert net["assign_public_ip"] is False
    breaker = one(service["deployment_circuit_breaker"])
    assert breaker["enable"] is True and breaker["rollback"] is True

    target = compute.resources("aws_appautoscaling_target")["role"]
    assert target["for_each"] == "${local.services}"
    assert target["min_capacity"] == "${var.min_tasks[each.key]}"
    for name, action in compute.resources("aws_appautoscaling_scheduled_action").items():
        floor = one(action["scalable_target_action"])["min_capacity"]
        assert "var.min_tasks[each.key]" in str(floor), f"scheduled action {name} may go below min_tasks"

    # The subnets: the network module's private subnets, one per zone, at least two zones.
    assert any("length(var.private_subnet_ids) >= 2" in c for c in validations(compute, "private_subnet_ids"))
    network = module("network")
    for env, call in calls_of("compute"):
        assert call["private_subnet_ids"] == "${module.network.private_subnet_ids}", env.path
    assert network.outputs()["private_subnet_ids"]["value"] == "${[for az in local.azs : aws_subnet.private[az].id]}"
    private = network.resources("aws_subnet")["private"]
    assert private["for_each"] == "${toset(local.azs)}"
    assert private["availability_zone"] == "${each.value}"
    assert "map_public_ip_on_launch" not in private or private["map_public_ip_on_launch"] is False
    assert network.locals()["azs"] == "${data.aws_availability_zones.chosen.names}"
    chosen = network.data("aws_availability_zones")["chosen"]
    zone_filter = one(chosen["filter"])
    assert zone_filter["name"] == "zone-name" and zone_filter["values"] == "${var.availability_zones}"
    assert any("length(var.availability_zones) >= 2" in c for c in validations(network, "availability_zones"))
    for env, call in calls_of("network"):
        assert call["availability_zones"] == "${var.availability_zones}", env.path
        zones = default(env, "availability_zones")
        assert len(set(zones)) >= 2, f"{env.path}: the default zones are fewer than two: {zones}"

    # The private subnets reach the internet through NAT only, and only the load balancer is public.
    route = one(network.resources("aws_route_table")["private"]["route"])
    assert "nat_gateway_id" in route and "gateway_id" not in route
    lb = module("edge").resources("aws_lb")["api"]
    assert lb["subnets"] == "${var.public_subnet_ids}"
    for env, call in calls_of("edge"):
        assert call["public_subnet_ids"] == "${module.network.public_subnet_ids}", env.path


# --- 1b. the backlog per task divides by the tasks' heartbeat, not Container Insights --------


@lru_cache(maxsize=None)
def heartbeat_in_code() -> dict:
    """What cli/src/cmd/health.rs prints: the environment variables, the metric, its dimension
    and how often a task beats."""
    text = (REPO / "cli/src/cmd/health.rs").read_text()
    consts = dict(re.findall(r'pub const (\w+_ENV): &str = "([^"]*)";', text))
    every = re.search(r"pub const HEARTBEAT_EVERY: Duration = Duration::from_secs\((\d+)\);", text)
    metric = re.search(r'"Metrics": \[\{"Name": "(\w+)", "Unit": "Count"\}\]', text)
    dims = re.search(r'"Dimensions": \[\["(\w+)"\]\]', text)
    assert every and metric and dims, "cli/src/cmd/health.rs no longer reads as expected"
    return {
        "namespace_env": consts["EMF_NAMESPACE_ENV"],
        "service_env": consts["EMF_SERVICE_ENV"],
        "every_seconds": int(every.group(1)),
        "metric": metric.group(1),
        "dimension": dims.group(1),
    }


def test_the_backlog_scaling_divides_by_the_heartbeat_that_every_service_sends():
    code = heartbeat_in_code()
    compute = module("compute")
    heartbeat = compute.locals()["heartbeat"]
    assert heartbeat["metric"] == code["metric"]
    assert heartbeat["beats_per_minute"] == 60 // code["every_seconds"]

    # Every service's task definition sets the namespace and names its service (the role).
    task = compute.resources("aws_ecs_task_definition")["role"]
    assert task["for_each"] == "${local.services}"
    defs = task["container_definitions"]
    assert f'{{name = "{code["namespace_env"]}", value = local.heartbeat.namespace}}' in defs, (
        f"the services do not set {code['namespace_env']}: no heartbeat, nothing to divide by"
    )
    assert f'{{name = "{code["service_env"]}", value = each.key}}' in defs

    # Each queue-driven service's policy: visible messages over its heartbeats a minute / 6.
    backlog = compute.locals()["backlog_queues"]
    assert set(backlog) == SERVICES - {"api"}, "every service but the API scales on its backlog"
    policy = compute.resources("aws_appautoscaling_policy")["backlog"]
    assert policy["for_each"] == "${local.backlog_queues}"
    spec = one(one(policy["target_tracking_scaling_policy_configuration"])["customized_metric_specification"])
    metrics = {m["id"]: m for m in spec["metrics"]}
    beats = [
        i
        for i, m in metrics.items()
        if "metric_stat" in m
        and one(one(m["metric_stat"])["metric"])
        == {
            "namespace": "${local.heartbeat.namespace}",
            "metric_name": "${local.heartbeat.metric}",
            "dimensions": [{"name": code["dimension"], "value": "${each.key}"}],
        }
        and one(m["metric_stat"])["stat"] in ("SampleCount", "Sum")
    ]
    assert len(beats) == 1, "the backlog policy does not read the service's heartbeat"
    tasks = [i for i, m in metrics.items() if m.get("expression") == f"{beats[0]} / ${{local.heartbeat.beats_per_minute}}"]
    assert len(tasks) == 1, "no running-task count from the heartbeat (beats a minute / beats per task)"
    returned = [m for m in metrics.values() if m.get("return_data") is True]
    assert len(returned) == 1
    divided = re.fullmatch(r"\((.+)\) / IF\((\w+) > 1, \2, 1\)", returned[0]["expression"])
    assert divided and divided.group(2) == tasks[0], (
        f"the backlog is not divided by the running tasks, guarded to at least one: {returned[0]['expression']}"
    )
    queues = [d["metrics"] for d in spec.get("dynamic", []) if "metrics" in d]
    assert queues and "ApproximateNumberOfMessagesVisible" in str(queues) and "q${i}" in divided.group(1)

    # Container Insights is off and nothing reads its metrics.
    cluster = compute.resources("aws_ecs_cluster")["como"]
    assert {s["name"]: s["value"] for s in cluster.get("setting", [])}.get("containerInsights", "disabled") == "disabled"
    for path in sorted(INFRA.rglob("*.tf")):
        text = path.read_text()
        assert "ECS/ContainerInsights" not in text and "RunningTaskCount" not in text, (
            f"{path.relative_to(REPO)} reads Container Insights"
        )

    # The observability module alarms on the same heartbeat, below each service's floor.
    assert compute.outputs()["heartbeat"]["value"] == {
        "namespace": "${local.heartbeat.namespace}",
        "metric": "${local.heartbeat.metric}",
        "beats_per_minute": "${local.heartbeat.beats_per_minute}",
        "floor": "${{for role in keys(local.services) : role => var.min_tasks[role]}}",
    }
    for env, call in calls_of("observability"):
        assert call["heartbeat"] == "${module.compute.heartbeat}", env.path
    floor = module("observability").resources("aws_cloudwatch_metric_alarm")["below_floor"]
    assert floor["for_each"] == "${var.heartbeat.floor}"
    assert floor["treat_missing_data"] == "breaching", "no heartbeat at all must alarm"


# --- 2. every queue has a dead-letter queue -------------------------------------------------


def test_every_queue_has_a_dead_letter_queue():
    data = module("data")
    queues = data.resources("aws_sqs_queue")
    names = data.locals()
    dlqs = {n for n, q in queues.items() if q.get("for_each") == "${local.dlq}"}
    assert dlqs, "no dead-letter queues"
    for name, queue in queues.items():
        if name in dlqs:
            continue
        policy = queue.get("redrive_policy", "")
        m = re.search(r"deadLetterTargetArn = aws_sqs_queue\.(\w+)\[each\.key\]\.arn", policy)
        assert m, f"aws_sqs_queue.{name} has no dead-letter queue"
        assert m.group(1) in dlqs, f"aws_sqs_queue.{name} dead-letters into a queue that is not one"
        assert "maxReceiveCount = var.max_receives" in policy
        # The queue and its dead-letter queue are made for the same names.
        main_list, _ = for_template(names[queue["for_each"].removeprefix("${local.").removesuffix("}")])
        dlq_list, _ = for_template(names["dlq"])
        assert main_list == dlq_list, f"aws_sqs_queue.{name} and its dead-letter queues differ"
    # Every dead-letter queue takes from its own queue only.
    allow = data.resources("aws_sqs_queue_redrive_allow_policy")
    assert any("byQueue" in a["redrive_allow_policy"] for a in allow.values())

    # No queue is made anywhere else.
    for directory in [module(m.name) for m in MODULES.iterdir() if m.is_dir()] + envs():
        if directory.path.name == "data":
            continue
        assert not directory.resources("aws_sqs_queue"), f"{directory.path} makes a queue"


# --- 3. every queue, table, secret and log group names the key -------------------------------


KEY_ATTRIBUTE = {
    "aws_sqs_queue": lambda r: r.get("kms_master_key_id"),
    "aws_dynamodb_table": lambda r: one(r["server_side_encryption"]).get("kms_key_arn")
    if one(r["server_side_encryption"]).get("enabled") is True
    else None,
    "aws_secretsmanager_secret": lambda r: r.get("kms_key_id"),
    "aws_cloudwatch_log_group": lambda r: r.get("kms_key_id"),
    "aws_sns_topic": lambda r: r.get("kms_master_key_id"),
    "aws_ecr_repository": lambda r: one(r["encryption_configuration"]).get("kms_key")
    if one(r["encryption_configuration"]).get("encryption_type") == "KMS"
    else None,
    "aws_scheduler_schedule": lambda r: r.get("kms_key_arn"),
}


def names_the_key(directory: Directory, value) -> bool:
    """The value is the data module's customer-managed key: directly, or through the module
    variable kms_key_arn that every root sets to module.data.kms_key_arn."""
    if directory.path == (MODULES / "data").resolve():
        keys = directory.resources("aws_kms_key")
        return any(value == f"${{aws_kms_key.{k}.arn}}" for k in keys)
    if value != "${var.kms_key_arn}":
        return False
    data_output = module("data").outputs()["kms_key_arn"]["value"]
    assert re.fullmatch(r"\$\{aws_kms_key\.\w+\.arn\}", data_output)
    for env, call in calls_of(directory.path.name):
        if call.get("kms_key_arn") != "${module.data.kms_key_arn}":
            return False
    return True


def test_every_queue_table_secret_and_log_group_names_the_key():
    checked = {t: 0 for t in KEY_ATTRIBUTE}
    for m in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        directory = Directory(m.resolve())
        for type_, name, body in directory.all_resources():
            if type_ not in KEY_ATTRIBUTE:
                continue
            assert "sqs_managed_sse_enabled" not in body, f"{m.name}: {type_}.{name} uses SQS-managed keys"
            value = KEY_ATTRIBUTE[type_](body)
            assert names_the_key(directory, value), f"{m.name}: {type_}.{name} is not encrypted with the key ({value})"
            checked[type_] += 1
    for env in envs():
        for type_, name, _ in env.all_resources():
            assert type_ not in KEY_ATTRIBUTE, f"{env.path}: {type_}.{name} belongs in a module"
    for type_ in ("aws_sqs_queue", "aws_dynamodb_table", "aws_secretsmanager_secret", "aws_cloudwatch_log_group"):
        assert checked[type_] > 0, f"no {type_} found"
    keys = module("data").resources("aws_kms_key")
    assert len(keys) == 1 and all(k["enable_key_rotation"] is True for k in keys.values())


def log_group_names(prefix: str) -> list[str]:
    """Every log group the modules make, named for a prefix (for_each over the roles)."""
    names = []
    for m in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        directory = Directory(m)
        for name, group in directory.resources("aws_cloudwatch_log_group").items():
            template = group["name"].replace("${var.prefix}", prefix)
            if "${each.value}" in template:
                roles = default(directory, "roles")
                assert group["for_each"] == "${toset(var.roles)}", f"{m.name}: log group {name}"
                names += [template.replace("${each.value}", r) for r in roles]
            else:
                assert "${" not in template, f"{m.name}: log group {name} is named {template}"
                names.append(template)
    return names


def test_the_key_lets_cloudwatch_logs_encrypt_every_log_group():
    kms = module("data").data("aws_iam_policy_document")["kms"]
    logs = [s for s in kms["statement"] if "logs." in str(s.get("principals"))]
    assert logs, "the key policy does not let CloudWatch Logs use the key"
    assert "var.log_group_patterns" in str(logs[0]["condition"])
    for env, call in calls_of("data"):
        prefix = default(env, "prefix")
        assert call["log_group_patterns"] == "${local.log_group_patterns}"
        patterns = [p.replace("${var.prefix}", prefix) for p in env.locals()["log_group_patterns"]]
        for group in log_group_names(prefix):
            assert any(fnmatch.fnmatchcase(group, p) for p in patterns), (
                f"{env.path}: the key policy does not cover log group {group} ({patterns})"
            )


# --- 4. no IAM statement for data actions has "*" as its resource -----------------------------

# Services whose actions read or write the deployment's data.
DATA_SERVICES = {"sqs", "dynamodb", "secretsmanager", "kms", "events", "logs", "s3", "sns", "ssm", "ecr"}
# Actions that take no resource at all: "*" is the only way to grant them.
NO_RESOURCE_ACTIONS = {"ecr:GetAuthorizationToken", "ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition"}


def key_policies() -> set[tuple[Path, str]]:
    """The policy documents attached to KMS keys as key policies: their "*" is the key."""
    found = set()
    for m in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        directory = Directory(m)
        for key in directory.resources("aws_kms_key").values():
            ref = re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", key["policy"])
            assert ref, "a key policy not from an aws_iam_policy_document"
            found.add((m.resolve(), ref.group(1)))
    return found


def statements(document: dict):
    for s in document.get("statement", []):
        yield s
    for d in document.get("dynamic", []):
        for s in d.get("statement", {}).get("content", []):
            yield s


def wildcard(resources) -> bool:
    if isinstance(resources, list):
        return any(r == "*" for r in resources)
    return '"*"' in str(resources)


def test_no_iam_statement_allows_data_actions_on_every_resource():
    keys = key_policies()
    checked = 0
    for m in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        directory = Directory(m)
        for name, document in directory.data("aws_iam_policy_document").items():
            if (m.resolve(), name) in keys:
                continue
            for s in statements(document):
                checked += 1
                assert "not_resources" not in s, f"{m.name}: {name} uses not_resources"
                actions = s.get("actions", [])
                data_actions = [a for a in actions if a.split(":")[0] in DATA_SERVICES or a == "*"]
                if not wildcard(s.get("resources", [])):
                    continue
                assert set(actions) <= NO_RESOURCE_ACTIONS, (
                    f'{m.name}: {name}, statement {s.get("sid")}: {data_actions or actions} on "*"'
                )
    assert checked > 20, "the IAM policy documents were not found"

    # Every policy attached anywhere comes from a policy document the loop above read.
    attach = {
        "aws_iam_role_policy": "policy",
        "aws_iam_policy": "policy",
        "aws_sqs_queue_policy": "policy",
        "aws_cloudwatch_log_resource_policy": "policy_document",
        "aws_sns_topic_policy": "policy",
        "aws_iam_role": "assume_role_policy",
        "aws_vpc_endpoint": "policy",
    }
    for m in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        for type_, name, body in Directory(m).all_resources():
            if type_ in attach and attach[type_] in body:
                assert re.fullmatch(
                    r"\$\{(each\.value|data\.aws_iam_policy_document\.\w+(\[[^\]]+\])?\.json)\}", body[attach[type_]]
                ), f"{m.name}: {type_}.{name} has an inline policy"
        for type_, name, body in Directory(m).all_resources():
            if type_ == "aws_iam_role_policy" and body["policy"] == "${each.value}":
                roles = Directory(m).locals()["task_roles"]
                assert all(re.fullmatch(r"\$\{data\.aws_iam_policy_document\.\w+(\[[^\]]+\])?\.json\}", v) for v in roles.values())


# --- 5. the names are the ones `como-saga infra bootstrap` creates ----------------------------


def test_names_tf_spells_the_backends_names():
    truth = backend_names()
    consts, arrays = truth["consts"], truth["arrays"]
    names = module("data").locals()
    assert names["queue_names"] == truth["queues"]
    expected = {
        "dlq_suffix": "DLQ_SUFFIX",
        "table": "TABLE",
        "status_index": "STATUS_INDEX",
        "due_index": "DUE_INDEX",
        "ttl_attribute": "TTL_ATTRIBUTE",
        "bus": "BUS",
        "booking_rule": "BOOKING_RULE",
        "booking_target_id": "BOOKING_TARGET_ID",
        "booking_source": "BOOKING_SOURCE",
        "booking_detail_type": "BOOKING_DETAIL_TYPE",
        "event_source": "EVENT_SOURCE",
    }
    for local, const in expected.items():
        assert names[local] == consts[const], f"names.tf {local} = {names[local]!r}, names.rs {const} = {consts[const]!r}"
    assert names["secret_names"] == arrays["SECRETS"]
    # The data keys' secret is the application's name, made besides the backend's SECRETS (which
    # `infra bootstrap` creates and seeds), once.
    assert names["data_keys_secret"] == data_keys_secret()
    assert sorted(secrets_made(names)) == sorted(set(arrays["SECRETS"]) | {data_keys_secret()})
    assert len(secrets_made(names)) == len(set(secrets_made(names))), secrets_made(names)
    assert names["roles"] == arrays["ROLES"]
    assert names["status_index_projection"] == truth["projections"]["STATUS_INDEX_PROJECTION"]
    assert names["due_index_projection"] == truth["projections"]["DUE_INDEX_PROJECTION"]

    # The full names, by names.rs's rules, for the default prefix and another.
    for prefix in (consts["DEFAULT_PREFIX"], "p"):
        for q in truth["queues"]:
            assert render(for_template(names["queue"])[1], prefix, q) == f"{prefix}-{q}"
            assert render(for_template(names["dlq"])[1], prefix, q) == f"{prefix}-{q}{consts['DLQ_SUFFIX']}"
        assert render(names["table_name"], prefix) == f"{prefix}-{consts['TABLE']}"
        assert render(names["bus_name"], prefix) == f"{prefix}-{consts['BUS']}"
        assert render(names["rule_name"], prefix) == f"{prefix}-{consts['BOOKING_RULE']}"
        for s in arrays["SECRETS"] + [data_keys_secret()]:
            assert render(for_template(names["secret"])[1], prefix, s) == f"{prefix}/{s}"

    # The default prefix, in the module and in every root, is the backend's.
    assert default(module("data"), "prefix") == consts["DEFAULT_PREFIX"]
    for env, call in calls_of("data"):
        assert default(env, "prefix") == consts["DEFAULT_PREFIX"], f"{env.path}: the default prefix is not the backend's"
        assert call["prefix"] == "${var.prefix}"
        assert default(env, "max_receives") == default(module("data"), "max_receives")
        assert call["max_receives"] == "${var.max_receives}"
    # Every role that runs as a service of its own is one of the compute module's services.
    assert set(arrays["ROLES"]) <= SERVICES


def test_the_resources_take_their_names_from_names_tf():
    data = module("data")
    queues = data.resources("aws_sqs_queue")
    assert {q["for_each"] for q in queues.values()} == {"${local.queue}", "${local.dlq}"}
    assert all(q["name"] == "${each.value}" for q in queues.values())

    table = one(list(data.resources("aws_dynamodb_table").values()))
    assert table["name"] == "${local.table_name}"
    assert (table["hash_key"], table["range_key"]) == ("pk", "sk")
    assert {i["name"] for i in table["global_secondary_index"]} == {"${local.status_index}", "${local.due_index}"}
    assert one(table["ttl"])["attribute_name"] == "${local.ttl_attribute}"

    bus = one(list(data.resources("aws_cloudwatch_event_bus").values()))
    assert bus["name"] == "${local.bus_name}"
    rule = data.resources("aws_cloudwatch_event_rule")["booking"]
    assert rule["name"] == "${local.rule_name}"
    assert "local.booking_source" in rule["event_pattern"] and "local.booking_detail_type" in rule["event_pattern"]
    target = data.resources("aws_cloudwatch_event_target")["booking"]
    assert target["target_id"] == "${local.booking_target_id}"
    assert target["arn"] == '${aws_sqs_queue.main["requests"].arn}'

    secrets = one(list(data.resources("aws_secretsmanager_secret").values()))
    assert secrets["for_each"] == "${local.secret}" and secrets["name"] == "${each.value}"

    # No other file anywhere under infra/ builds one of these names itself.
    truth = backend_names()
    own = (
        truth["queues"]
        + [truth["consts"][c] for c in ("TABLE", "BUS", "BOOKING_RULE")]
        + truth["arrays"]["SECRETS"]
        + [data_keys_secret()]
    )
    for path in sorted(INFRA.rglob("*.tf")):
        if path == MODULES / "data" / "names.tf" or ".terraform" in path.parts:
            continue
        text = path.read_text()
        for name in own:
            for built in (f'${{var.prefix}}-{name}"', f'${{var.prefix}}/{name}"'):
                assert built not in text, f"{path.relative_to(REPO)} builds the name {built}: use names.tf"


# --- 5b. the data keys: made empty, read by the roles that seal or open a contact only ---------

# The task roles that read the data keys (GetSecretValue only), and the one that writes them.
DATA_KEY_READERS = {"api", "orchestrator", "worker-sevenrooms"}
DATA_KEY_WRITER = "keys"
NO_DATA_KEYS = {"worker-crm", "rotate-tokens"}
DATA_KEY_WRITES = {
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:UpdateSecretVersionStage",
}
DOCUMENT_REF = r"\$\{data\.aws_iam_policy_document\.(\w+)(?:\[\"([\w-]+)\"\])?\.json\}"


def document_statements(directory: Directory, name: str, key: str | None = None) -> list[dict]:
    """Every statement of a policy document as one instance (`key`: its for_each key) has it: its
    own, its dynamic ones whose `each.key == "..."` condition holds, and its source documents'."""
    docs = directory.data("aws_iam_policy_document")
    doc = docs[name]
    if "for_each" in doc:
        assert key is not None and f'"{key}"' in doc["for_each"], f"{name}[{key}]: not one of {doc['for_each']}"
    found = list(doc.get("statement", []))
    for d in doc.get("dynamic", []):
        block = d.get("statement")
        if block is None:
            continue
        cond = re.fullmatch(r'\$\{each\.key (==|!=) "([\w-]+)" \? \[1\] : \[\]\}', str(block["for_each"]))
        assert cond and key is not None, f"{name}: a dynamic statement this test cannot read: {block['for_each']}"
        if (key == cond.group(2)) == (cond.group(1) == "=="):
            found += block["content"]
    for source in doc.get("source_policy_documents", []) + doc.get("override_policy_documents", []):
        ref = re.fullmatch(DOCUMENT_REF, source)
        assert ref and ref.group(2) is None, f"{name}: a source document this test cannot read: {source}"
        found += document_statements(directory, ref.group(1))
    return found


def role_statements(compute: Directory, role: str) -> list[dict]:
    ref = re.fullmatch(DOCUMENT_REF, compute.locals()["task_roles"][role])
    assert ref, f"task role {role}: {compute.locals()['task_roles'][role]}"
    return document_statements(compute, ref.group(1), ref.group(2))


def names_secrets(statement: dict) -> list[str]:
    """The secrets a statement's resources name (var.secret_arns["..."]), each by name only: a
    statement on all of them (values(var.secret_arns)) would give the data keys unnoticed."""
    text = str(statement.get("resources", []))
    refs = re.findall(r'secret_arns(\[\\?"([\w-]+)\\?"\])?', text)
    assert all(index for index, _ in refs), f"statement {statement.get('sid')} names the secrets without a name: {text}"
    return [name for _, name in refs]


def test_the_data_keys_are_made_empty_and_read_only_by_the_roles_that_seal_or_open_contacts():
    name = data_keys_secret()

    # The secret: in the data module (local.secret, the one secret resource), with the key, and
    # recoverable for the longest window.
    data = module("data")
    names = data.locals()
    assert name in secrets_made(names), f"names.tf makes no {name} secret"
    secret = one(list(data.resources("aws_secretsmanager_secret").values()))
    assert secret["for_each"] == "${local.secret}"
    assert names_the_key(data, secret["kms_key_id"])
    assert secret["recovery_window_in_days"] == 30, "losing the data keys loses every sealed contact"
    assert data.outputs()["secret_arns"]["value"] == "${{for s, secret in aws_secretsmanager_secret.como : s => secret.arn}}"

    # Made empty: no secret version anywhere (a value in Terraform is a value in its state).
    for directory in [Directory(m) for m in sorted(MODULES.iterdir()) if m.is_dir()] + envs():
        for type_, resource, _ in directory.all_resources():
            assert type_ != "aws_secretsmanager_secret_version", (
                f"{directory.path}: {type_}.{resource}: no secret's value belongs in Terraform"
            )

    # The task roles: the readers read, the writer writes, the others cannot touch it.
    compute = module("compute")
    roles = compute.locals()["task_roles"]
    assert DATA_KEY_READERS | NO_DATA_KEYS | {DATA_KEY_WRITER} <= set(roles), sorted(roles)
    for role in roles:
        statements_ = role_statements(compute, role)
        on_keys = [s for s in statements_ if name in names_secrets(s)]
        actions = {a for s in on_keys for a in s["actions"]}
        if role in DATA_KEY_READERS:
            assert actions == {"secretsmanager:GetSecretValue"}, f"{role} on the data keys: {sorted(actions)}"
        elif role == DATA_KEY_WRITER:
            assert actions == DATA_KEY_WRITES, f"{role} on the data keys: {sorted(actions)}"
            # ... and nothing else in Secrets Manager.
            assert all(
                names_secrets(s) == [name]
                for s in statements_
                if any(a.startswith("secretsmanager:") for a in s["actions"])
            )
        else:
            assert not on_keys, f"{role} may use the data keys: {[s.get('sid') for s in on_keys]}"
        if role in DATA_KEY_READERS or role == DATA_KEY_WRITER:
            # The secret is encrypted with the key: decrypt (and, to write, encrypt) through
            # Secrets Manager, as for the other secrets; the key policy leaves that to IAM.
            through = [
                s
                for s in statements_
                if "kms:Decrypt" in s["actions"]
                and any("secretsmanager." in str(c.get("values")) for c in s.get("condition", []))
            ]
            assert through, f"{role} cannot decrypt the data keys through Secrets Manager"
            if role == DATA_KEY_WRITER:
                assert any("kms:GenerateDataKey" in s["actions"] for s in through)
    kms = data.data("aws_iam_policy_document")["kms"]
    assert any(
        s["actions"] == ["kms:*"] and ":root" in str(s.get("principals")) for s in kms["statement"]
    ), "the key policy does not leave the key's use to the account's IAM policies"

    # No other policy (the execution role, the deploy role, the scheduler...) names it, and no
    # container gets it in its environment.
    task_documents = {re.fullmatch(DOCUMENT_REF, ref).group(1) for ref in roles.values()}
    for m in sorted(p for p in MODULES.iterdir() if p.is_dir()):
        directory = Directory(m)
        for doc_name, document in directory.data("aws_iam_policy_document").items():
            if m.name == "compute" and doc_name in task_documents:
                continue
            for s in statements(document):
                assert name not in names_secrets(s), f"{m.name}: {doc_name}, statement {s.get('sid')} names the data keys"
    assert name not in str(compute.locals()["credentials"]) and name not in str(compute.locals()), (
        "a container gets the data keys in its environment"
    )


def grants_on_dead_letters(statements_: list[dict], dlq: str) -> set[str]:
    """The SQS actions `statements_` allow on the dead-letter queue of queue `dlq`: named
    (local.dlq_arns["requests"]) or among all of them (values(local.dlq_arns))."""
    found: set[str] = set()
    for s in statements_:
        text = str(s.get("resources", []))
        names = re.findall(r'dlq_arns\[\\?"([\w-]+)\\?"\]', text)
        if dlq in names or "values(local.dlq_arns)" in text:
            found |= {a for a in s["actions"] if a.startswith("sqs:")}
    return found


def test_the_roles_that_erase_guests_may_rewrite_the_dead_letters_that_hold_them():
    # A member's erasure (the API) and the retention (the orchestrator) rewrite the dead letters
    # of the request queue and the SevenRooms command queue: receive them, send the changed body
    # to the same dead-letter queue, delete the old one, and show the others again at once
    # (backends/aws/src/queue.rs, move_dead_letters).
    compute = module("compute")
    rewrite = {"sqs:ReceiveMessage", "sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
    for role in ("api", "orchestrator"):
        for dlq in ("requests", "commands-sevenrooms"):
            granted = grants_on_dead_letters(role_statements(compute, role), dlq)
            assert rewrite <= granted, f"{role} cannot rewrite the dead letters of {dlq}: missing {sorted(rewrite - granted)}"


# The deploy workflow and its roll-service action, read as text (no YAML parser here): the jobs
# are the workflow's two-space keys under `jobs:`, their `needs:` a name or a flow list.
WORKFLOW = REPO / ".github/workflows/deploy.yml"
ROLL_ACTION = REPO / ".github/actions/roll-service/action.yml"


def workflow_jobs() -> dict[str, str]:
    """{job: its text} of .github/workflows/deploy.yml."""
    text = WORKFLOW.read_text()
    parts = re.split(r"\n  ([A-Za-z0-9_-]+):\n", text[text.index("\njobs:\n") :])
    return dict(zip(parts[1::2], parts[2::2]))


def needs(job: str) -> set[str]:
    found = re.findall(r"^    needs: (\[[^\]\n]*\]|\S+)$", job, re.M)
    assert len(found) <= 1
    return {n.strip() for n in found[0].strip("[]").split(",")} if found else set()


def after(jobs: dict[str, str], name: str) -> set[str]:
    """The jobs that must succeed before `name` starts: its `needs`, and theirs."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for n in needs(jobs[todo.pop()]):
            assert n in jobs, f"{name} needs {n}, which is no job"
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def rolls(jobs: dict[str, str]) -> dict[str, str]:
    """{role: the job that rolls it}: every use of the roll-service action, with its `role`."""
    found: dict[str, str] = {}
    for name, job in jobs.items():
        uses = re.findall(r"^      - uses: \./\.github/actions/roll-service\n(?:        .*\n)*", job + "\n", re.M)
        for use in uses:
            role = re.findall(r"^          role: (\S+)$", use, re.M)
            assert len(role) == 1, f"{name}: a roll-service step without one `role`"
            assert role[0] not in found, f"{role[0]} rolls twice ({found.get(role[0])}, {name})"
            found[role[0]] = name
    return found


def test_the_deploy_workflow_makes_the_data_keys_before_the_services_roll():
    jobs = workflow_jobs()
    keys_job = jobs["keys"]
    assert needs(keys_job) == {"image"}
    for role, job in rolls(jobs).items():
        assert "keys" in after(jobs, job), f"{role} rolls before keys init"
    assert 'command: ["keys", "init"]' in keys_job and "taskRoleArn: $role" in keys_job
    assert "aws ecs wait tasks-stopped" in keys_job and ".exitCode" in keys_job
    # The task role it names is the Terraform's: <prefix>-keys (aws_iam_role.task, for_each).
    assert '/$PREFIX-keys" >> "$GITHUB_OUTPUT"' in keys_job
    task_role = module("compute").resources("aws_iam_role")["task"]
    assert task_role["for_each"] == "${local.task_roles}" and task_role["name"] == "${var.prefix}-${each.key}"
    assert DATA_KEY_WRITER in module("compute").locals()["task_roles"]
    # The deploy role may run it: the orchestrator's family, in the cluster, and pass the role.
    deploy = module("compute").data("aws_iam_policy_document")["deploy"]
    run = [s for s in deploy["statement"] if "ecs:RunTask" in s["actions"]]
    assert run and all('aws_ecs_task_definition.role[\"orchestrator\"]' in str(s["resources"]) for s in run)
    assert all("ecs:cluster" in str(s.get("condition")) for s in run)
    assert any("ecs:DescribeTasks" in s["actions"] for s in deploy["statement"])
    assert any(
        "iam:PassRole" in s["actions"] and "aws_iam_role.task" in str(s["resources"]) for s in deploy["statement"]
    )


def test_the_deploy_workflow_rolls_the_sevenrooms_worker_then_the_orchestrator_then_the_api():
    # A release may change a message so that the previous release cannot read it (the guest's
    # contact sealed in the requests, which the API writes and the orchestrator reads, and in
    # the SevenRooms worker's commands, which the orchestrator writes): every reader must run
    # the new release before a writer does (docs/DEPLOY.md, "After that").
    jobs = workflow_jobs()
    rolled = rolls(jobs)
    assert set(rolled) == set(module("compute").locals()["services"]) | {"rotate-tokens"}
    sevenrooms, orchestrator, api = rolled["worker-sevenrooms"], rolled["orchestrator"], rolled["api"]
    assert len({sevenrooms, orchestrator, api}) == 3, "two of them roll in one job"
    assert sevenrooms in after(jobs, orchestrator), "the orchestrator may roll before the SevenRooms worker"
    assert orchestrator in after(jobs, api), "the API may roll before the orchestrator"
    # And every worker before the API (a release that adds a message field).
    assert rolled["worker-crm"] in after(jobs, api)
    for role, name in rolled.items():
        job = jobs[name]
        # One role a job, no matrix (whose jobs run in parallel, in no promised order), and no
        # job condition that would let a job run after one it needs failed.
        assert "strategy:" not in job and "matrix" not in job, f"{name} is a matrix"
        assert not re.search(r"^    if:", job, re.M), f"{name} has a condition: it may run after a failure"
        assert "continue-on-error" not in job
        # The action comes from the commit being deployed.
        checkout = job.index("uses: actions/checkout@")
        assert checkout < job.index("uses: ./.github/actions/roll-service"), f"{name} does not check out the action"
        assert f"role: {role}" in job and "image: ${{ needs.image.outputs.image }}" in job
        assert "image" in needs(job)
    # The action waits until the service is stable, and stable on the new revision (after a
    # rollback by the circuit breaker, ECS calls the service stable on the previous one).
    action = ROLL_ACTION.read_text()
    order = [
        "aws ecs describe-task-definition",
        "aws ecs register-task-definition",
        "if: inputs.role != 'rotate-tokens'",
        "aws ecs update-service",
        "aws ecs wait services-stable",
        "aws ecs describe-services",
        'if [ "$running" != "$ARN" ]; then',
        "exit 1",
    ]
    at = [action.index(s) for s in order]
    assert at == sorted(at), "the roll-service action's steps are out of order"


def run_scripts(text: str) -> list[str]:
    """The `run: |` scripts of a workflow or an action, dedented."""
    scripts = []
    for m in re.finditer(r"^( *)run: \|\n((?:\1  .*\n|\n)+)", text, re.M):
        indent = len(m.group(1)) + 2
        scripts.append("".join(line[indent:] + "\n" for line in m.group(2).splitlines()))
    return scripts


def test_the_roll_service_actions_scripts_pass_shellcheck():
    # actionlint checks the workflows' scripts with shellcheck, not an action's: this does.
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if not shellcheck:
        pytest.skip("no shellcheck (infra/check.sh installs it)")
    scripts = run_scripts(ROLL_ACTION.read_text())
    assert len(scripts) == 2
    for script in scripts:
        # As actionlint runs it: bash, and the variables the step's `env:` sets are not unset.
        result = subprocess.run(
            [shellcheck, "--norc", "--shell=bash", "--exclude=SC2154", "-"],
            input=script, capture_output=True, text=True, check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


# --- 6. the API checks tokens against the edge's user pool, and nothing else ----------------


def test_the_api_accepts_exactly_the_user_pools_tokens():
    compute = module("compute")
    env_vars = {e["name"]: e["value"] for e in compute.locals()["api_environment"]}
    assert env_vars["COMO_SAGA_JWKS"] == "${var.api_auth.jwks_url}"
    assert env_vars["COMO_SAGA_JWT_ISSUER"] == "${var.api_auth.issuer}"
    assert env_vars["COMO_SAGA_JWT_AUDIENCE"] == "${var.api_auth.audience}"
    assert env_vars["COMO_SAGA_DASHBOARD_SIGNIN_URL"] == "${var.api_auth.signin_url}"
    for env, call in calls_of("compute"):
        auth = call["api_auth"]
        assert auth == {
            "jwks_url": "${module.edge.jwks_url}",
            "issuer": "${module.edge.issuer}",
            "audience": "${module.edge.audience}",
            "signin_url": "${module.edge.signin_url}",
        }, f"{env.path}: the API's token settings do not all come from the edge's user pool"
    edge = module("edge")
    outputs = edge.outputs()
    assert outputs["issuer"]["value"] == "${local.cognito_issuer}"
    assert outputs["jwks_url"]["value"] == "${local.cognito_issuer}/.well-known/jwks.json"
    assert outputs["audience"]["value"] == "${aws_cognito_user_pool_client.dashboard.id}"
    issuer = edge.locals()["cognito_issuer"]
    assert issuer == "https://cognito-idp.${local.region}.amazonaws.com/${aws_cognito_user_pool.operators.id}"
    groups = edge.resources("aws_cognito_user_group")["roles"]
    assert groups["for_each"] == '${toset(["viewer", "operator", "submitter"])}'


# --- 7. what every container shares -----------------------------------------------------------


def test_every_container_logs_json_and_checks_its_health():
    compute = module("compute")
    env_vars = {e["name"]: e["value"] for e in compute.locals()["environment"]}
    assert env_vars["COMO_SAGA_LOG_FORMAT"] == "json"
    assert env_vars["COMO_SAGA_BACKEND"] == "aws"
    health = {e["name"]: e["value"] for e in compute.locals()["health_environment"]}
    assert health["COMO_SAGA_HEALTH_LISTEN"] == "127.0.0.1:9090"
    for role, service in compute.locals()["services"].items():
        port = "8080" if role == "api" else "9090"
        assert service["health"] == f"http://127.0.0.1:{port}/healthz", role
    # The API reads the dashboard's overview (a count of every saga in the table) only while a
    # dashboard is open.
    api = {e["name"]: e["value"] for e in compute.locals()["api_environment"]}
    assert api["COMO_SAGA_DASHBOARD_IDLE_REFRESH"] == "off"
    # The load balancer checks liveness: /readyz counts every saga in the table on each check.
    check = one(module("edge").resources("aws_lb_target_group")["api"]["health_check"])
    assert check["path"] == "/healthz"
    task = compute.resources("aws_ecs_task_definition")["role"]["container_definitions"]
    assert '["CMD", "/usr/local/bin/como-saga", "healthcheck", each.value.health]' in task
    assert "local.environment" in task and "readonlyRootFilesystem" in str(compute.locals()["container_defaults"])

    dockerfile = (REPO / "Dockerfile").read_text()
    assert "/usr/local/bin/como-saga" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), "the runtime image runs as root"


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
