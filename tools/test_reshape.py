"""The rewrite rules of tools/reshape.py on small texts, and a whole run on a throwaway git repository.

    python -m pytest tools/test_reshape.py -q      (no TensorFlow; about a second)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reshape  # noqa: E402

OLD = reshape.Layout(Path("."), set(reshape.MOVES))  # every old module still present
NEW = reshape.Layout(Path("."), set())  # the reshape is committed


def rewrite(text: str, path: str = "tests/test_x.py", layout: reshape.Layout = OLD) -> str:
    rewriter = reshape.Rewriter(layout)
    result = rewriter.rewrite(text, path)
    assert not rewriter.errors, rewriter.errors
    assert reshape.Rewriter(layout).rewrite(result, path) == result, "not idempotent"
    return result


@pytest.mark.parametrize(("before", "after"), [
    ("import tflq.harness\n", "import tflq.measure.harness\n"),
    ("from tflq.convert import ConvertOptions, convert_model\n",
     "from tflq.convert.session import ConvertOptions, convert_model\n"),
    ("from tflq import _tf\n", "from tflq._tf import imports as _tf\n"),
    ("from tflq import qat as q\n", "from tflq.qat import quantize_aware as q\n"),
    ("from tflq import config\n", "from tflq.batch import config\n"),
    ("    from tflq import __version__, errors\n", "    from tflq import __version__, errors\n"),
    ("from tflq import cli_debug, cli_measure  # noqa: F401\n",
     "from tflq.cli import debug as cli_debug, measure as cli_measure  # noqa: F401\n"),
    ("from tflq import __version__, harness, _calibrated\n",
     "from tflq import __version__\nfrom tflq.measure import harness\n"
     "from tflq._tf import calibrated as _calibrated\n"),
    ("from tflq import (\n    data,  # the data layer\n    modes,\n)\n",
     "from tflq import modes\nfrom tflq.model import data\n"),
    ('monkeypatch.setattr("tflq.convert._tf.quiet", f)\n',
     'monkeypatch.setattr("tflq.convert.session._tf.quiet", f)\n'),
    ('[sys.executable, "-m", "tflq.cli", "run"]\n', '[sys.executable, "-m", "tflq.cli.app", "run"]\n'),
    ('tflq = "tflq.cli:main"\n', 'tflq = "tflq.cli.app:main"\n'),
    ("see `tflq/layer_map.py` and ``cli.py``, `modes.py`\n",
     "see `tflq/convert/layer_map.py` and ``cli/app.py``, `modes.py`\n"),
    ("copy tflq.yaml and tflq.errors.UsageError\n", "copy tflq.yaml and tflq.errors.UsageError\n"),
])
def test_every_form_is_rewritten_once(before: str, after: str) -> None:
    assert rewrite(before) == after


def test_relative_imports_of_the_flat_package_become_absolute() -> None:
    assert rewrite("from . import data\nfrom .models import X\n", path="tflq/harness.py") == (
        "from tflq.model import data\nfrom tflq.model.load import X\n")


def test_a_new_path_is_left_alone_in_either_layout() -> None:
    text = "from tflq.cli import debug as cli_debug\nimport tflq.debug.report\nfrom tflq.convert import convert_model\n"
    assert rewrite(text, layout=NEW) == text
    assert rewrite("from tflq.debug.report import render\n") == "from tflq.debug.report import render\n"


def test_keep_region_is_not_rewritten() -> None:
    text = "a = 'tflq.harness'\n# reshape: keep-begin\nlayers = ['tflq.cli']\n# reshape: keep-end\n"
    assert rewrite(text, "pyproject.toml") == (
        "a = 'tflq.measure.harness'\n# reshape: keep-begin\nlayers = ['tflq.cli']\n# reshape: keep-end\n")


@pytest.mark.parametrize(("text", "message"), [
    ("x = 'tflq.frobnicate.y'\n", "tests/test_x.py:1: tflq.frobnicate.y: no mapping for tflq.frobnicate"),
    ("from tflq import frobnicate\n", "from tflq import frobnicate: no mapping for tflq.frobnicate"),
    ("see tflq/frobnicate.py\n", "tests/test_x.py:1: tflq/frobnicate.py: no mapping"),
])
def test_an_unmapped_name_is_an_error(text: str, message: str) -> None:
    rewriter = reshape.Rewriter(OLD)
    rewriter.rewrite(text, "tests/test_x.py")
    assert any(message in error for error in rewriter.errors), rewriter.errors


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout


def run_script(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(Path(reshape.__file__)), *args], cwd=root, capture_output=True,
                          text=True)


def test_a_run_on_a_tiny_repository_is_complete_and_idempotent(tmp_path: Path) -> None:
    (tmp_path / "tflq").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project.scripts]\ntflq = "tflq.cli:main"\n')
    for name in [*reshape.MOVES, "errors", "modes", "__init__"]:
        (tmp_path / "tflq" / f"{name}.py").write_text("from tflq import errors\n")
    (tmp_path / "tflq" / "cli.py").write_text("from tflq import cli_debug\n\n\ndef main() -> None: ...\n")
    for package, (_, names) in reshape.REEXPORTS.items():
        (tmp_path / "tflq" / f"{package}.py").write_text("".join(f"{name} = None\n" for name in names))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "flat")
    assert run_script(tmp_path, "--check").returncode == 1
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "tflq").glob("cli*.py"))
    assert (tmp_path / "tflq" / "cli" / "app.py").read_text().startswith("from tflq.cli import debug as cli_debug\n")
    assert 'tflq = "tflq.cli.app:main"' in (tmp_path / "pyproject.toml").read_text()
    assert (tmp_path / "tflq" / "__main__.py").is_file()
    status = git(tmp_path, "status", "--porcelain")
    again = run_script(tmp_path, "--allow-dirty")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert git(tmp_path, "status", "--porcelain") == status
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "reshaped")
    assert run_script(tmp_path, "--check").returncode == 0


def test_an_unmapped_module_stops_the_run_before_anything_moves(tmp_path: Path) -> None:
    (tmp_path / "tflq").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "tflq" / "cli.py").write_text("")
    (tmp_path / "tflq" / "brand_new.py").write_text("")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "flat")
    done = run_script(tmp_path)
    assert done.returncode == 2
    assert "no mapping in tools/reshape.py MOVES: brand_new.py" in done.stderr
    assert (tmp_path / "tflq" / "cli.py").is_file()


def test_a_reexport_the_module_no_longer_defines_stops_the_run(tmp_path: Path) -> None:
    (tmp_path / "tflq").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "tflq" / "convert.py").write_text("def convert_model() -> None: ...\n")
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "flat")
    done = run_script(tmp_path)
    assert done.returncode == 2
    assert "tflq/convert.py no longer defines ['Artifact', 'ConvertOptions', 'ConvertResult']" in done.stderr
