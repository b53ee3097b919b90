"""The package installs with pip and its `slicegan` command works from any directory with the shipped model."""
import os
import subprocess
import sys
from pathlib import Path

import tifffile

REPO = Path(__file__).resolve().parents[1]


def test_pip_install_gives_a_slicegan_command_that_finds_the_default_model_anywhere(tmp_path):
    target = tmp_path / "installed"
    # --no-deps: the dependencies are this venv's already; --target: a folder of its own, not this checkout.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO)], check=True, capture_output=True, timeout=300)
    assert (target / "slicegan_core" / "models" / "default" / "model.safetensors").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SLICEGAN_MODELS_DIR", "PYTHONPATH")}
    env["PYTHONPATH"] = str(target)            # the installed copy only: the checkout is not importable
    result = subprocess.run([str(target / "bin" / "slicegan"), "generate", "--model", "default", "--shape", "32",
                             "--out", "v.tif"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert tifffile.imread(elsewhere / "v.tif").shape == (32, 32, 32)
    probe = subprocess.run([sys.executable, "-c", "import slicegan_core; print(slicegan_core.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()).is_relative_to(target)
    usage = subprocess.run([str(target / "bin" / "slicegan"), "--help"], cwd=elsewhere, env=env,
                           capture_output=True, text=True)
    assert usage.stdout.startswith("usage: slicegan")
