"""``shipkit new``: templates render fully, nothing is ever overwritten, generated projects pass their tests."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from apps.cli_process import SHIPKIT_CLI, child_env, run_cli
from click.testing import CliRunner

from shipkit.cli.new import new_command
from shipkit.cli.scaffold import available_templates, create_project, render, templates_dir
from shipkit.errors import FilesExistError, ScaffoldError

TEMPLATES = ["service", "agent", "worker"]
EXPECTED_FILES = {
    ".gitignore",
    "README.md",
    "pyproject.toml",
    "demo/__init__.py",
    "demo/service.py",
    "tests/conftest.py",
    "tests/test_service.py",
}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_templates_are_found() -> None:
    """The three templates are available from the installed package (or the checkout)."""
    assert available_templates() == sorted(TEMPLATES)
    assert (templates_dir() / "service" / "__package__" / "service.py-tpl").is_file()


@pytest.mark.parametrize("template", TEMPLATES)
def test_new_renders_every_file(tmp_path: Path, template: str) -> None:
    """Every template file is written without its `-tpl` suffix, with no placeholder left, as valid Python."""
    target = tmp_path / "demo"
    result = CliRunner().invoke(new_command, ["demo", "--template", template, "--directory", str(target)])
    assert result.exit_code == 0, result.output
    assert _files(target) == EXPECTED_FILES
    for path in target.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "{{" not in text, path
            assert not path.name.endswith("-tpl")
            if path.suffix == ".py":
                compile(text, str(path), "exec")
    assert 'Service("demo"' in (target / "demo" / "service.py").read_text()
    assert 'name = "demo"' in (target / "pyproject.toml").read_text()
    assert "shipkit run demo.service" in result.output


def test_package_name_comes_from_the_project_name(tmp_path: Path) -> None:
    """`my-agent` keeps its name for the service and becomes the package `my_agent`."""
    written = create_project("my-agent", template="agent", directory=tmp_path / "out")
    assert tmp_path / "out" / "my_agent" / "service.py" in written
    source = (tmp_path / "out" / "my_agent" / "service.py").read_text()
    assert 'Service("my-agent"' in source
    assert "from my_agent.service import" in (tmp_path / "out" / "tests" / "test_service.py").read_text()


def test_default_directory_is_the_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --directory the project goes to ./NAME."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(new_command, ["demo"])
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "demo") == EXPECTED_FILES


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    """One existing target file: exit 2, that file untouched, and no other file written."""
    target = tmp_path / "demo"
    target.mkdir()
    (target / "README.md").write_text("mine\n")
    result = CliRunner().invoke(new_command, ["demo", "--directory", str(target)])
    assert result.exit_code == 2
    assert "refusing to overwrite" in result.stderr
    assert "README.md" in result.stderr
    assert (target / "README.md").read_text() == "mine\n"
    assert _files(target) == {"README.md"}


def test_second_run_refuses(tmp_path: Path) -> None:
    """Generating twice into the same place fails the second time and leaves the first project as it was."""
    target = tmp_path / "demo"
    create_project("demo", directory=target)
    (target / "demo" / "service.py").write_text("# edited\n")
    with pytest.raises(FilesExistError) as caught:
        create_project("demo", template="worker", directory=target)
    assert len(caught.value.paths) == len(EXPECTED_FILES)
    assert (target / "demo" / "service.py").read_text() == "# edited\n"


def test_unrelated_files_in_the_directory_are_fine(tmp_path: Path) -> None:
    """An existing directory is used as long as no generated file collides with what is there."""
    (tmp_path / "notes.txt").write_text("keep\n")
    create_project("demo", directory=tmp_path)
    assert _files(tmp_path) == EXPECTED_FILES | {"notes.txt"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("1demo", "must start with a letter"),
        ("my app", "must start with a letter"),
        ("json", "shadows another"),
        ("shipkit", "shadows another"),
        ("class", "shadows another"),
    ],
)
def test_bad_names_are_usage_errors(tmp_path: Path, name: str, message: str) -> None:
    """Names that cannot be a service and package are refused with exit 2 before anything is written."""
    result = CliRunner().invoke(new_command, [name, "--directory", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_template_is_a_usage_error(tmp_path: Path) -> None:
    """`--template` only accepts the shipped templates."""
    result = CliRunner().invoke(new_command, ["demo", "--template", "nope", "--directory", str(tmp_path)])
    assert result.exit_code == 2
    assert not any(tmp_path.iterdir())


def test_render_substitutes_placeholders_only() -> None:
    """`{{ key }}` (spaces optional) is replaced; other braces, as in f-strings and dicts, pass through."""
    text = 'name={{ name }} pkg={{package}} f"{x}" {"a": 1} {{ name}}'
    assert render(text, {"name": "demo", "package": "demo_pkg"}) == 'name=demo pkg=demo_pkg f"{x}" {"a": 1} demo'


def test_render_unknown_placeholder_names_the_file() -> None:
    """A placeholder with no value is a template bug reported with where it is."""
    with pytest.raises(ScaffoldError, match=r"broken.py-tpl: unknown placeholder \{\{ nope \}\}"):
        render("{{ nope }}", {"name": "demo"}, where="broken.py-tpl")


@pytest.mark.parametrize("template", TEMPLATES)
def test_generated_project_passes_its_own_tests(tmp_path: Path, template: str) -> None:
    """`shipkit new demo && cd demo && pytest` passes for every template, against real embedded servers."""
    target = tmp_path / "demo"
    create_project("demo", template=template, directory=target)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=target,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout
    assert "failed" not in result.stdout


def test_new_through_the_real_command_line(tmp_path: Path) -> None:
    """`shipkit new` is registered on the `shipkit` command and the project it makes can be inspected."""
    created = run_cli("new", "demo", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert _files(tmp_path / "demo") == EXPECTED_FILES
    inspected = run_cli("inspect", "demo.service", cwd=tmp_path / "demo")
    assert inspected.returncode == 0, inspected.stderr
    assert "demo.create" in inspected.stdout
    assert "mutation=item.created" in inspected.stdout


def test_installed_wheel_ships_working_templates(tmp_path: Path) -> None:
    """From the built wheel (templates under shipkit/_templates), `shipkit new` works and its project's tests pass."""
    pytest.importorskip("hatchling", reason="building the wheel offline needs hatchling in the environment")
    repo = Path(__file__).resolve().parents[2]
    wheel_dir, site = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheel_dir, repo],
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = wheel_dir.glob("shipkit-*.whl")
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "shipkit" / "_templates" / "agent" / "__package__" / "service.py-tpl").is_file()
    env = child_env(PYTHONPATH=str(site))  # the unpacked wheel shadows the checkout
    project = tmp_path / "project"
    project.mkdir()
    located = subprocess.run(
        [sys.executable, "-c", "import shipkit.cli.scaffold as s; print(s.templates_dir())"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert located.stdout.strip() == str(site / "shipkit" / "_templates")
    created = subprocess.run(
        [*SHIPKIT_CLI, "new", "demo", "--template", "agent"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project / "demo",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
