"""What a wheel ships and needs: runtime dependencies are what seqinv/ imports; export runs from a wheel;
the wheel bundles the default version of each model and no older one; the version is pyproject's."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ
DIST = {"huggingface_hub": "huggingface_hub", "SimpleITK": "simpleitk", "ants": "antspyx"}


def _third_party_imports(package: str, skip: str = "") -> set[str]:
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        if skip and skip in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    local = {"seqinv", "training", "__future__"}
    return {n for n in names - local if n not in sys.stdlib_module_names}


def _dist_names(specs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[ ]", s, maxsplit=1)[0].lower().replace("-", "_") for s in specs}


def test_runtime_dependencies_are_what_the_runtime_imports():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    imported = {DIST.get(n, n).lower() for n in _third_party_imports("seqinv")}
    assert _dist_names(project["dependencies"]) == imported
    extras = project["optional-dependencies"]
    training_only = {DIST.get(n, n).lower() for n in _third_party_imports("training", "realbench")} - imported
    assert training_only <= _dist_names(extras["train"]) and "monai" in training_only
    # the real-scan benchmark's reference tools (deepbet, ANTs, BM4D, dipy) come with the bench extra only
    bench_only = {DIST.get(n, n).lower() for n in _third_party_imports("training/realbench")} - imported
    assert bench_only <= _dist_names(extras["bench"]) and "deepbet" in bench_only
    assert not bench_only & _dist_names(project["dependencies"])
    assert _dist_names(extras["train"]) <= _dist_names(extras["test"])  # the README's test command trains


def _pyproject_version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_the_package_version_is_the_installed_distributions():
    from importlib.metadata import version

    import seqinv

    assert seqinv.__version__ == version("seqinv") == _pyproject_version()
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert f"### {_pyproject_version()}\n" in changelog  # release notes for this version


@pytest.mark.slow
def test_export_from_a_built_wheel_reads_the_card_template_from_the_package(tmp_path):
    source = tmp_path / "src"
    for name in ("seqinv", "training"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("seqinv-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "training/card_template.md" in names and "training/recipes/ixi.toml" in names
    assert not any(n.startswith(("model_cards/", "tests/", "hub/")) for n in names)
    # the default version of each model, and no older one (`name@version`: from the Hub)
    from seqinv.models import catalogue

    weights = {n.split("/")[2] for n in names if n.startswith("seqinv/weights/") and n.count("/") > 2}
    assert weights == set(catalogue.names()) and not any("@" in n for n in names)
    for name in catalogue.names():
        assert f"seqinv/weights/{name}/model.safetensors" in names
    assert "seqinv/data/example_t1w.nii.gz" in names  # what `seqinv segment --example` and evaluate read
    script = (
        "import seqinv, training, training.export as e\n"
        f"assert seqinv.__version__ == {_pyproject_version()!r}, seqinv.__version__\n"
        "from seqinv.models import SeqInvUNet\n"
        f"assert training.__file__.startswith({str(wheel)!r}), training.__file__\n"
        "SeqInvUNet(preset='tiny', out_channels=2, labels=['background', 'lesion'], task_name='arc',"
        " name='wheel-test').save_pretrained('run')\n"
        "out = e.export('run', 'hub')\n"
        "card = (out / 'README.md').read_text()\n"
        "assert card.startswith('---') and '# wheel-test' in card and '$title' not in card, card[:300]\n"
        "print('ok')\n"
    )
    elsewhere = tmp_path / "elsewhere"  # no source tree on the path: only the wheel
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(wheel), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
