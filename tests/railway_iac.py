"""The Railway project that .railway/railway.ts declares, evaluated by node with the pinned `railway` package."""

import functools
import json
import shlex
import shutil
import subprocess

from tests.child_django import ROOT

IAC_DIR = ROOT / ".railway"


@functools.cache
def railway_graph() -> dict:
    """Return `{"name", "resources": [...]}` as the DSL builds it (fails, never skips, without node)."""
    node = shutil.which("node")
    assert node, "node is needed to evaluate .railway/railway.ts (scripts/test installs its packages with npm ci)"
    assert (IAC_DIR / "node_modules/railway").is_dir(), "run `npm ci --prefix .railway` (scripts/test does)"
    result = subprocess.run(
        [node, "graph.mjs", "production"],
        cwd=IAC_DIR,
        env={"PATH": "/usr/bin:/bin", "CURSOS_GITHUB_REPO": "example/cursos"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def railway_services() -> dict[str, dict]:
    return {r["name"]: r for r in railway_graph()["resources"] if r["type"] == "service"}


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line and not line.startswith("#"))


def argv(command: str) -> list[str]:
    return shlex.split(command)
