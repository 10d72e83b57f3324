"""``shipkit docs gen`` and ``shipkit docs serve``: the AsyncAPI document as JSON, YAML, a file and a page."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import yaml
from apps.cli_process import APPS_DIR, SHIPKIT_CLI, child_env, run_cli


def test_gen_prints_json(tmp_path: Path) -> None:
    """`docs gen` prints the AsyncAPI 3.0 document on stdout."""
    result = run_cli("docs", "gen", "docs_shop:service", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["asyncapi"] == "3.0.0"
    assert "handle.create" in document["operations"]


def test_gen_yaml_to_file(tmp_path: Path) -> None:
    """`--yaml --out FILE` writes the same document as YAML to the file."""
    out = tmp_path / "asyncapi.yaml"
    result = run_cli("docs", "gen", "docs_shop", "--yaml", "--out", str(out), "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(out.read_text())
    assert document["info"]["title"] == "shop"
    assert document["channels"]["request.create"]["address"] == "shop.orders.create"


def test_gen_unknown_module_exits_3(tmp_path: Path) -> None:
    """An unimportable target exits 3 with one line naming the module."""
    result = run_cli("docs", "gen", "no_such_module:service", "--app-dir", str(APPS_DIR), cwd=tmp_path)
    assert result.returncode == 3
    assert "no_such_module" in result.stderr


def test_serve_shows_the_page_and_the_json(tmp_path: Path) -> None:
    """`docs serve --port 0` serves an HTML page naming each operation and /asyncapi.json."""
    process = subprocess.Popen(
        [*SHIPKIT_CLI, "docs", "serve", "docs_shop:service", "--port", "0", "--app-dir", str(APPS_DIR)],
        cwd=tmp_path,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()  # blocks until the server is bound (or the process died: "")
        assert line.startswith("serving http://"), line + process.stderr.read()
        url = line.split()[1]
        page = httpx.get(url, timeout=10)
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        for expected in ("handle.create", "shop.orders.create", "ship.jobs.jobs.dispatch.invoicer", "NewOrder"):
            assert expected in page.text
        assert httpx.get(url + "asyncapi.json", timeout=10).json()["asyncapi"] == "3.0.0"
        assert httpx.get(url + "nothing", timeout=10).status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()
