"""kdlib as a package: what `import kdlib` costs, what the wheel holds, and an install used from another folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_kdlib_is_light_and_every_public_name_still_imports():
    code = "import kdlib, sys; print(sorted(m for m in ('torch', 'pydantic', 'pandas') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stderr
    import kdlib

    assert {"register_model", "register_dataset", "register_method", "RunConfig", "launch"} <= set(dir(kdlib))
    plugins_written = importlib.util.find_spec("kdlib.plugins") is not None
    for name in kdlib.__all__:
        if name.startswith("register_") and not plugins_written:
            continue  # kdlib.plugins is not written yet; the names wait for it
        assert getattr(kdlib, name) is not None, name
    from kdlib import METHODS, RunStore, config_from, load_config, load_run, validate_config  # noqa: F401

    assert kdlib.viz.__name__ == "kdlib.viz"  # a submodule after a bare `import kdlib`
    with pytest.raises(AttributeError):
        kdlib.no_such_name  # noqa: B018


def test_pyproject_lists_every_package_and_reads_the_version_from_kdlib():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in ROOT.glob("kdlib/**/__init__.py")}
    assert found <= listed, f"add to pyproject.toml's packages: {sorted(found - listed)}"
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kdlib.__version__"}
    assert project["project"]["scripts"] == {"kdlib": "kdlib.__main__:main"}


def source_copy(destination: Path) -> Path:
    """The files a clone would hold (tracked and new ones, not the ignored), copied: a build writes beside them."""
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, destination / name)
    return destination


@pytest.mark.slow
def test_an_install_works_from_another_folder(tmp_path):
    """`pip install` of a copy of the repository into a new venv, then kdlib used from an empty folder.

    The venv sees this project's venv through a .pth file, so the dependencies come from there (offline, in
    seconds); kdlib itself is built and installed into the new venv.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"KDLIB_HOME": str(tmp_path / "home")}
    install = subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "--disable-pip-version-check",
            str(source_copy(tmp_path / "clone")),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*command: str) -> str:
        result = subprocess.run(command, capture_output=True, text=True, cwd=elsewhere, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    import kdlib

    code = "import kdlib, kdlib.__main__ as cli; print(kdlib.__version__, kdlib.__file__, cli.app_entry(), sep='\\n')"
    version, module, entry = run(str(python), "-c", code).split()
    assert version == kdlib.__version__ and Path(module).is_relative_to(site)
    assert Path(entry) == site / "kdlib_app" / "app" / "Home.py" and Path(entry).is_file()
    assert (site / "kdlib_app" / "app" / "pages_" / "train.py").is_file()
    assert (site / "kdlib_app" / "configs" / "toy2d_kd.yaml").is_file()  # the home page's default run
    assert (site / "kdlib_app" / "configs" / "claims" / "rco.yaml").is_file()  # what the lessons' buttons open
    assert (site / "kdlib_app" / "bench" / "claims.md").is_file()  # the claims board the Learn pages show
    assert "rm" in run(str(venv / "bin" / "kdlib"), "--help")
    assert "no runs yet" in run(str(venv / "bin" / "kdlib"), "ls")
    assert run(str(venv / "bin" / "kdlib"), "--version").strip() == f"kdlib {kdlib.__version__}"
    app = "from streamlit.testing.v1 import AppTest; print(len(AppTest.from_file({!r}, default_timeout=120).run().exception))"
    assert run(str(python), "-c", app.format(entry)).strip() == "0"  # the home page renders, no error
