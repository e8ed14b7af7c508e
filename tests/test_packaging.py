"""The package list in pyproject.toml is complete, and `leoma --help` stays light."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOPS = {"leoma": "leoma", "projections": "projections", "cmd": "leoma_cmd"}
HEAVY = ("bittensor", "google.genai", "aioboto3", "aiobotocore", "botocore", "boto3", "huggingface_hub", "av", "httpx")


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join((name, *py.parent.relative_to(ROOT / folder).parts))
        for folder, name in TOPS.items()
        for py in (ROOT / folder).rglob("*.py")
        if "__pycache__" not in py.parts
    }
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_cmd_is_not_a_package_that_shadows_the_stdlib() -> None:
    assert not (ROOT / "cmd" / "__init__.py").exists()
    import cmd

    assert hasattr(cmd, "Cmd")


def test_cli_imports_no_heavy_library() -> None:
    code = (
        "import sys, leoma_cmd.main\n"
        f"heavy = {HEAVY!r}\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`leoma --help` imports heavy modules: {out.stdout.strip()}"


def test_consensus_file_is_shipped_with_the_package() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "consensus.toml" in data["leoma"]


def test_judge_prompts_are_shipped_with_the_package() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["leoma"]
    prompts = sorted(p.relative_to(ROOT / "leoma").as_posix() for p in (ROOT / "leoma" / "prompts").rglob("*.txt"))
    assert prompts, "the judge's prompts live in leoma/prompts/"
    import fnmatch

    assert all(any(fnmatch.fnmatch(p, pat) for pat in patterns) for p in prompts), prompts
