"""The kernels have one import name, alexnet_triton.kernels, from a plain checkout (no symbolic link) and when
installed; any other name is refused, so no second module object (second autotune cache, capture hook,
interpreter set-up) can appear."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, *extra_path: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter whose import path starts with the checkout (as pytest's and the scripts'),
    with the editable install's finder removed, as in a plain checkout."""
    prelude = ("import sys; sys.meta_path = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
               f"sys.path[:0] = {[str(REPO), *extra_path]!r}; ")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)


def test_checkout_has_no_symbolic_link_and_kernels_stay_top_level():
    assert (REPO / "kernels" / "conv.py").is_file()
    links = [path for path in (REPO / "alexnet_triton").rglob("*") if path.is_symlink()]
    assert links == []


def test_plain_checkout_imports_the_kernels_under_one_name():
    result = _run("import alexnet_triton, alexnet_triton.kernels.conv as conv; "
                  "from alexnet_triton.ops import conv as op; "
                  "assert alexnet_triton.kernels.conv is conv; "
                  "assert op.conv2d_forward.__module__ == 'alexnet_triton.kernels.conv'; "
                  "print(conv.__name__, conv.__file__)")
    assert result.returncode == 0, result.stderr
    name, file = result.stdout.split()
    assert name == "alexnet_triton.kernels.conv"
    assert Path(file) == REPO / "kernels" / "conv.py"


def test_a_top_level_kernels_import_is_refused_with_the_name_to_use():
    result = _run("import kernels.conv")
    assert result.returncode != 0
    assert "import the kernels as alexnet_triton.kernels, not as 'kernels'" in result.stderr


def test_no_source_file_imports_the_top_level_name():
    offenders = []
    for path in REPO.glob("**/*.py"):
        if any(part.startswith(".") for part in path.relative_to(REPO).parts):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if words[:2] in (["import", "kernels"], ["from", "kernels"]) or line.lstrip().startswith(
                    ("import kernels.", "from kernels.")):
                offenders.append(f"{path.relative_to(REPO)}:{number}")
    assert offenders == []


def test_every_package_folder_is_in_the_package_list():
    """pyproject.toml lists the packages by name: a folder left out is missing from a built wheel (an editable
    install would not show it)."""
    import tomllib

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {"alexnet_triton": REPO / "alexnet_triton",
             **{name: REPO / folder for name, folder in setuptools["package-dir"].items()}}
    folders = set()
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            folders.add(".".join((name, *init.parent.relative_to(root).parts)))
    assert folders == set(setuptools["packages"])
