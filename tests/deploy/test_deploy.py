"""deploy/: what can be checked without Docker or a cluster.

The compose file and the Kubernetes manifests parse, wire up what exists (commands,
console scripts, settings, probe paths, ports, names) and every RIG_* variable they set
is one rig or rig-agent reads; the systemd units pass `systemd-analyze verify`; the
Dockerfile copies what the package needs and runs console scripts that exist.
"""

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from agent import fastpath
from agent.health import HealthServer
from agent.settings import OPTIONS as AGENT_OPTIONS
from agent.settings import AgentSettings
from rig.app import create_app
from rig.cli import build_parser
from rig.services import DEFAULT_SERVICE_URLS
from rig.settings import OPTIONS as RIG_OPTIONS
from rig.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CONSOLE_SCRIPTS = PYPROJECT["project"]["scripts"]

OPTIONS = {env: option for option in [*RIG_OPTIONS, *AGENT_OPTIONS] for env in [option[1]]}
SERVICE_URLS = {f"RIG_SERVICE_URL_{s.upper()}" for s in DEFAULT_SERVICE_URLS}
# Besides the settings: the switch read when the agent package is imported.
KNOWN = set(OPTIONS) | SERVICE_URLS | {fastpath.PURE_PYTHON}


def rig_routes() -> set[str]:
    app = create_app(Settings(database_url="postgresql://unused", jwt_secret="x" * 32))
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET"}


def agent_routes() -> set[str]:
    app = HealthServer.app(HealthServer.__new__(HealthServer))
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET"}


def check_setting(name: str, value: object) -> None:
    """A RIG_* variable rig or rig-agent reads, with a value its option type accepts."""
    assert name in KNOWN, f"{name} is not a setting of rig or rig-agent"
    if name in OPTIONS and isinstance(value, str) and value and "${" not in value:
        kind = OPTIONS[name][3]
        kind(value)  # raises on a value the program would refuse


def rig_command_ok(args: list[str]) -> None:
    """`rig ARGS` parses (the subcommand exists)."""
    build_parser().parse_args(args)


def test_known_settings_are_not_empty():
    assert {"RIG_DATABASE_URL", "RIG_AGENT_KEY", "RIG_AGENT_HTTP_LISTEN"} <= KNOWN
    with pytest.raises(AssertionError):
        check_setting("RIG_NO_SUCH_SETTING", "1")
    with pytest.raises(ValueError):
        check_setting("RIG_PORT", "eighty")


# ---------------------------------------------------------------- docker compose


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_services_wire_up():
    doc = compose()
    services = doc["services"]
    assert set(services) == {"postgres", "rig", "agent"}
    assert set(doc["volumes"]) == {"pgdata", "rigdata"}

    rig = services["rig"]
    dockerfile = (DEPLOY / rig["build"]["context"] / rig["build"]["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "Dockerfile"
    rig_command_ok(rig["command"])  # `rig serve` (the image's entrypoint is rig)
    assert rig["environment"]["RIG_PORT"] == "8080"
    assert rig["ports"] == ["8080:8080"]
    assert rig["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "@postgres:5432/rig" in rig["environment"]["RIG_DATABASE_URL"]

    agent = services["agent"]
    assert agent["image"] == rig["image"]
    assert agent["entrypoint"] == ["rig-agent"]
    assert agent["entrypoint"][0] in CONSOLE_SCRIPTS
    assert agent["environment"]["RIG_URL"] == "http://rig:8080"
    assert agent["environment"]["RIG_AGENT_RTMP_LISTEN"].endswith(":1935")
    assert agent["environment"]["RIG_AGENT_HTTP_LISTEN"] == "0.0.0.0:9935"
    assert "1935:1935" in agent["ports"]
    assert agent["depends_on"]["rig"]["condition"] == "service_healthy"

    for name in ("postgres", "rig", "agent"):
        assert services[name]["healthcheck"]["test"], name
    rig_probe = " ".join(rig["healthcheck"]["test"])
    agent_probe = " ".join(agent["healthcheck"]["test"])
    path = re.search(r"127\.0\.0\.1:8080(/\w+)", rig_probe).group(1)
    assert path in rig_routes()
    path = re.search(r"127\.0\.0\.1:9935(/\w+)", agent_probe).group(1)
    assert path in agent_routes()


def test_compose_sets_only_known_settings():
    text = (DEPLOY / "docker-compose.yml").read_text()
    seen = 0
    for service in compose()["services"].values():
        for name, value in (service.get("environment") or {}).items():
            if name.startswith("RIG_"):
                check_setting(name, value)
                seen += 1
    for name in re.findall(r"\$\{(RIG_\w+?)(?::?[-?][^}]*)?\}", text):
        check_setting(name, "")
    assert seen >= 10
    for line in (DEPLOY / "compose.env.example").read_text().splitlines():
        if line.startswith("RIG_"):
            check_setting(*line.split("=", 1))


# ---------------------------------------------------------------- Kubernetes


def manifests() -> list[dict]:
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == "rig"
    assert [i["name"] for i in kustomization["images"]] == ["rig"]
    assert set(by_kind("Namespace")) == {"rig"}
    for doc in manifests():
        assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"]


def containers() -> dict[str, tuple[dict, dict]]:
    """container name -> (container, its Deployment)."""
    found = {}
    for deployment in by_kind("Deployment").values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            found[container["name"]] = (container, deployment)
    return found


def test_deployments_run_existing_commands_with_probes():
    found = containers()
    assert set(found) == {"rig", "agent"}
    rig, rig_deployment = found["rig"]
    assert rig["image"] == "rig"
    rig_command_ok(rig["args"])
    assert "command" not in rig  # the image's entrypoint: rig
    ports = {p["name"]: p["containerPort"] for p in rig["ports"]}
    assert ports == {"http": 8080}
    assert rig["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert rig["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"/readyz", "/healthz"} <= rig_routes()
    assert rig_deployment["spec"]["replicas"] >= 2

    agent, agent_deployment = found["agent"]
    assert agent["command"] == ["rig-agent"]
    assert agent["command"][0] in CONSOLE_SCRIPTS
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports == {"rtmp": 1935, "http": 9935}
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {"/readyz", "/healthz", "/metrics"} <= agent_routes()
    # One key is one agent: never two pods of one agent Deployment.
    assert agent_deployment["spec"]["replicas"] == 1
    assert agent_deployment["spec"]["strategy"]["type"] == "Recreate"

    config = by_kind("ConfigMap")["rig-config"]["data"]
    assert config["RIG_PORT"] == "8080"
    assert config["RIG_AGENT_HTTP_LISTEN"].endswith(":9935")
    assert config["RIG_AGENT_RTMP_LISTEN"].endswith(":1935")
    assert config["RIG_URL"] == "http://rig:8080"  # the rig Service
    for container, deployment in found.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()


def test_env_refers_to_defined_configmaps_secrets_and_settings():
    configmaps, secrets = by_kind("ConfigMap"), by_kind("Secret")
    for container, _deployment in containers().values():
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps
            else:
                assert source["secretRef"]["name"] in secrets
        for env in container.get("env", []):
            check_setting(env["name"], env.get("value", ""))
    for configmap in configmaps.values():
        for name, value in configmap["data"].items():
            check_setting(name, value)
    for secret in secrets.values():
        for name in secret["stringData"]:
            check_setting(name, "")
    agent, _ = containers()["agent"]
    agent_secret = next(s["secretRef"]["name"] for s in agent["envFrom"] if "secretRef" in s)
    assert set(secrets[agent_secret]["stringData"]) == {"RIG_AGENT_KEY"}


def test_services_select_pods_and_expose_rtmp_through_a_load_balancer():
    services = by_kind("Service")
    assert set(services) == {"rig", "rig-ingest"}
    found = containers()
    for service in services.values():
        selector = service["spec"]["selector"]
        matched = [
            (c, d)
            for c, d in found.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert matched, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            for container, _ in matched:
                assert port["targetPort"] in {p["name"] for p in container["ports"]}
    ingest = services["rig-ingest"]["spec"]
    assert ingest["type"] == "LoadBalancer"
    assert ingest["ports"] == [
        {"name": "rtmp", "protocol": "TCP", "port": 1935, "targetPort": "rtmp"}
    ]
    assert services["rig"]["spec"]["ports"][0]["port"] == 8080


# ---------------------------------------------------------------- systemd


UNITS = ("rig.service", "rig-agent.service")


def unit_keys(text: str) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_runs_a_console_script_hardened(unit):
    keys = unit_keys((DEPLOY / "systemd" / unit).read_text())
    argv = shlex.split(keys["ExecStart"][0])
    assert argv[0].startswith("/opt/rig/bin/")
    script = Path(argv[0]).name
    assert script in CONSOLE_SCRIPTS
    if script == "rig":
        rig_command_ok(argv[1:])
        assert keys["StateDirectory"] == ["rig"]
        assert keys["Environment"] == ["RIG_DATA_DIR=/var/lib/rig"]
    else:
        assert argv[1:] == []
        assert keys["DynamicUser"] == ["yes"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictNamespaces": "yes",
        "SystemCallFilter": "@system-service",
        "UMask": "0077",
    }.items():
        assert keys.get(key) == [value], key
    assert keys["EnvironmentFile"][0].startswith("/etc/rig/")
    assert keys["Restart"][0] in ("on-failure", "always")
    for assignment in keys.get("Environment", []):
        check_setting(*assignment.split("=", 1))


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify(unit, tmp_path):
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: scripts/test installs Debian's systemd"
    bin_dir = Path(sys.executable).parent  # this virtualenv's rig and rig-agent
    text = (DEPLOY / "systemd" / unit).read_text().replace("/opt/rig/bin/", f"{bin_dir}/")
    copy = tmp_path / unit
    copy.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, check=False
    )
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, output
    assert output == "", output  # unknown keys and bad values are warnings: none allowed
    # The check can fail: a misspelt key is reported.
    broken = tmp_path / f"broken-{unit}"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSytem=strict"))
    result = subprocess.run(
        [analyze, "verify", str(broken)], capture_output=True, text=True, check=False
    )
    assert "ProtectSytem" in result.stdout + result.stderr


# ---------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    steps = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            steps.append((instruction.upper(), args.strip()))
    return steps


def test_dockerfile_is_multi_stage_non_root_and_runs_console_scripts():
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert any(op == "COPY" and args.startswith("--from=build ") for op, args in steps)
    user = [args for op, args in steps if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    entrypoint = next(args for op, args in steps if op == "ENTRYPOINT")
    cmd = next(args for op, args in steps if op == "CMD")
    import json

    assert json.loads(entrypoint) == ["rig"]
    assert json.loads(entrypoint)[0] in CONSOLE_SCRIPTS
    rig_command_ok(json.loads(cmd))
    runs = " ".join(args for op, args in steps if op == "RUN")
    for script in CONSOLE_SCRIPTS:  # the build stage checks both scripts start
        assert f"/opt/rig/bin/{script}" in runs
    assert "ffmpeg" not in runs  # PyAV's wheels carry FFmpeg
    exposed = {int(p) for op, args in steps if op == "EXPOSE" for p in args.split()}
    assert exposed == {8080, 1935, 9935}


def test_dockerfile_copies_what_the_package_needs():
    steps = dockerfile()
    copied = set()
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            *sources, _dest = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                copied.add(source)
    directories = PYPROJECT["tool"]["setuptools"].get("package-dir", {})
    for package in PYPROJECT["tool"]["setuptools"]["packages"]:
        top = directories.get(package, package.split(".")[0])
        assert top in copied, package
    assert {"pyproject.toml", "README.md"} <= copied  # README: the package's readme


def test_dockerfile_env_sets_known_settings():
    for op, args in dockerfile():
        if op == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", args):
                if name.startswith("RIG_"):
                    check_setting(name, value)


# ---------------------------------------------------------------- documentation


def test_examples_and_readmes_name_only_known_settings():
    for line in (DEPLOY / "rig.env.example").read_text().splitlines():
        match = re.match(r"^#?(RIG_\w+)=(\S*)", line)
        if match:
            check_setting(match.group(1), match.group(2))
    documents = [REPO / "README.md", DEPLOY / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for text in (path.read_text() for path in documents):
        for name in set(re.findall(r"\bRIG_[A-Z0-9_]*[A-Z0-9]\b", text)):
            if name != "RIG_SERVICE_URL_":
                assert name in KNOWN, name


def env_example() -> dict[str, tuple[str, bool]]:
    """rig.env.example's settings: name -> (value, set: the line is not commented)."""
    found = {}
    for line in (DEPLOY / "rig.env.example").read_text().splitlines():
        match = re.match(r"^(#?)(RIG_\w+)=(\S*)", line)
        if match:
            assert match.group(2) not in found, f"{match.group(2)} twice in rig.env.example"
            found[match.group(2)] = (match.group(3), not match.group(1))
    return found


# rig.env.example's own choices for a server, where it differs from the defaults.
EXAMPLE_CHOICES = {"RIG_DATA_DIR", "RIG_AGENT_RTMP_LISTEN"}


def test_env_example_has_every_setting_with_its_default():
    """deploy/README.md: "every setting with its default"; a setting the example sets
    (not commented) has the default the program has, unless it is a deploy choice."""
    example = env_example()
    missing = sorted(KNOWN - set(example))
    assert not missing, f"not in deploy/rig.env.example: {missing}"
    defaults = {
        **{o[1]: getattr(Settings(), o[2]) for o in RIG_OPTIONS},
        **{o[1]: getattr(AgentSettings(), o[2]) for o in AGENT_OPTIONS},
    }
    for name, (value, is_set) in example.items():
        if is_set and value and name in OPTIONS and name not in EXAMPLE_CHOICES:
            assert OPTIONS[name][3](value) == defaults[name], f"{name}={value} is not its default"


def test_readme_configuration_tables_document_every_setting():
    readme = (REPO / "README.md").read_text()
    for flag, env, _name, _kind, _help in [*RIG_OPTIONS, *AGENT_OPTIONS]:
        row = re.search(rf"^\| `{env}` \| ([^|]*) \|", readme, re.M)
        assert row, f"{env} has no row in README.md's configuration tables"
        if flag:
            assert f"`{flag}`" in row.group(1), env


def test_deploy_readme_covers_every_file():
    text = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert path.name in text or path.parent.name in text, path
    for topic in ("One host", "Many ingest hosts", "Several rig replicas", "Kubernetes"):
        assert f"## {topic}" in text
