"""Structural promises: the core stays pure, and the code passes the linter."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"prefect", "mlflow", "s3fs", "fsspec", "webdataset", "boto3", "botocore", "dask"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_radcore_imports_no_orchestration_or_storage_library():
    offenders = {
        str(p.relative_to(ROOT)): sorted(_imports(p) & FORBIDDEN)
        for p in (ROOT / "radcore").rglob("*.py")
        if _imports(p) & FORBIDDEN
    }
    assert not offenders, f"move this I/O out of radcore/ into tasks/: {offenders}"


def test_every_public_module_declares_all():
    missing = [
        str(p.relative_to(ROOT))
        for pkg in ("radcore", "tasks", "flows")
        for p in (ROOT / pkg).glob("*.py")
        if p.name != "__init__.py" and "__all__" not in p.read_text()
    ]
    assert not missing, f"add __all__ to {missing}"


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is missing: it is a dev extra (`pip install -e '.[dev]'`)"
    out = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
