"""pandas and matplotlib are the ``study`` extra: the package, the model and training work without them, the study
and its scripts say what to install, and train.py's curves plot is skipped with one line."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from alexnet_triton.training import plot_curves

REPO = Path(__file__).resolve().parents[1]
EXTRA = ("pandas", "matplotlib")
# Run first in a subprocess: pandas and matplotlib as if not installed (an import fails, find_spec finds nothing).
WITHOUT_EXTRA = f"import sys\nfor name in {EXTRA}:\n    sys.modules[name] = None\n"
METRICS = """kind,epoch,step,loss,top1,top5,lr,images_per_s,val_loss,val_top1,val_top5,skipped,elapsed_s
step,1,1,0.9,0.25,1,0.01,5,,,,0,1
step,1,2,0.7,0.5,1,0.01,5,,,,0,2
epoch,1,2,,,,0.001,,0.6,0.75,1,0,3
step,2,3,0.5,0.75,1,0.001,5,,,,0,4
final,2,3,,,,0.001,,0.4,0.875,1,0,5
"""


def run_without_extra(code: str, *args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRA + code, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=environment)


def test_the_package_model_and_training_need_neither_and_the_study_names_its_extra(tmp_path):
    code = """
import importlib, pkgutil
import alexnet_triton
from alexnet_triton import architecture, data, model, nn, ops, optim, parity, precision, training
for package in (alexnet_triton, ops, alexnet_triton.kernels):
    for module in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
        if module.name != "alexnet_triton.study":
            importlib.import_module(module.name)
try:
    import alexnet_triton.study
except ImportError as error:
    print("study:", error.name, error)
from pathlib import Path
out = Path(sys.argv[1])
(out / "curves.png").write_bytes(b"an earlier plot")
training.plot_curves(out / "metrics.csv", out / "curves.png", "title", chance=0.5)
print("curves.png exists:", (out / "curves.png").exists())
"""
    (tmp_path / "metrics.csv").write_text(METRICS)
    result = run_without_extra(code, str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines == [
        'study: alexnet_triton.study the performance study (alexnet_triton.study) needs pandas and matplotlib (not '
        'installed): pip install -e ".[study]", or in a plain checkout pip install pandas matplotlib',
        f'curves.png not drawn: matplotlib is not installed (pip install -e ".[study]"); the numbers are in '
        f"{tmp_path / 'metrics.csv'}",
        "curves.png exists: False"]
    assert (tmp_path / "metrics.csv").read_text() == METRICS


def test_a_study_script_without_the_extra_is_one_error_line():
    script = REPO / "experiments" / "make_report.py"
    code = (f"sys.argv = [{str(script)!r}, '--help']; sys.path[0] = {str(script.parent)!r}\n"
            f"import runpy; runpy.run_path(sys.argv[0], run_name='__main__')")
    result = run_without_extra(code)
    assert result.returncode == 2 and not result.stdout, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == (
        'error: the performance study (alexnet_triton.study) needs pandas and matplotlib (not installed): '
        'pip install -e ".[study]", or in a plain checkout pip install pandas matplotlib')
    assert "Traceback" not in result.stderr


def test_with_matplotlib_the_same_metrics_give_the_plot(tmp_path, capsys):
    (tmp_path / "metrics.csv").write_text(METRICS)
    plot_curves(tmp_path / "metrics.csv", tmp_path / "curves.png", "title", chance=0.5)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not capsys.readouterr().out
    assert sorted(path.name for path in tmp_path.iterdir()) == ["curves.png", "metrics.csv"]  # no temporary file


def test_only_the_study_and_the_curves_plot_import_pandas_or_matplotlib():
    """Every import of either, outside alexnet_triton/study/, with the function it sits in."""
    sources = {path.resolve() for root in (REPO / "alexnet_triton", REPO / "kernels") for path in root.rglob("*.py")
               if "study" not in path.relative_to(root).parts}
    found = set()
    for path in sources:
        tree = ast.parse(path.read_text())
        functions = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            if any(module.split(".")[0] in EXTRA for module in modules):
                inside = [f for f in functions if f.lineno <= node.lineno <= f.end_lineno]
                found.add((path.relative_to(REPO).as_posix(), max(inside, key=lambda f: f.lineno).name
                           if inside else None))
    assert found == {("alexnet_triton/training/plots.py", "plot_curves")}
