"""The import rules of docs/architecture.md, checked on the source (every import statement,
at module level or inside functions)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "flipseg"
FACES = {"flipseg.cli", "flipseg.commands", "flipseg.convert", "flipseg.label", "flipseg.serve"}
#: Shared modules of the methods layer (not a method package).
METHODS_SHARED = {"flipseg.methods", "flipseg.methods.common", "flipseg.methods.training",
                  "flipseg.methods.whole_image"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from pkg import mod`
    return [(line, m) for line, m in out if m == "flipseg" or m.startswith("flipseg.")]


def _layer(mod: str) -> str:
    if mod in FACES or mod.startswith("flipseg.serve."):
        return "face"
    if mod == "flipseg.api":
        return "api"
    if mod == "flipseg.engines" or mod.startswith("flipseg.engines."):
        return "engines"
    if mod in METHODS_SHARED:
        return "methods-shared"
    if mod.startswith("flipseg.methods."):
        return "method"
    if mod == "flipseg.runs":
        return "runs"
    if mod == "flipseg.baselines" or mod.startswith("flipseg.baselines."):
        return "baselines"
    return "core"


#: layer -> layers it must not import
FORBIDDEN = {
    "core": {"face", "api", "engines", "methods-shared", "method", "runs", "baselines"},
    "baselines": {"face", "api", "engines", "methods-shared", "method", "runs"},
    "runs": {"face", "api", "engines", "methods-shared", "method", "baselines"},
    "methods-shared": {"face", "api", "engines", "method"},
    "method": {"face", "api", "engines"},
    # where cases run (in-process, a worker pool, Ray; sharding): they are handed what
    # builds the models and what runs a chunk, so they name no method
    "engines": {"face", "api", "method"},
    "api": {"face"},
    "face": set(),
}


def _method_package(mod: str) -> str | None:
    parts = mod.split(".")
    if len(parts) >= 3 and parts[:2] == ["flipseg", "methods"] and mod not in METHODS_SHARED:
        return parts[2]
    return None


def _known_module(mod: str) -> str:
    """``flipseg.x.y.Name`` -> the longest prefix that is a module or package of ours."""
    parts = mod.split(".")
    while len(parts) > 1:
        cand = SRC.parent.joinpath(*parts)
        if cand.with_suffix(".py").exists() or (cand / "__init__.py").exists():
            return ".".join(parts)
        parts = parts[:-1]
    return "flipseg"


def violations() -> list[str]:
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        me = _module_name(path)
        my_layer, my_pkg = _layer(me), _method_package(me)
        for line, target in _imports(path):
            target = _known_module(target)
            if target == "flipseg":
                continue
            where = f"{path.relative_to(SRC.parent)}:{line} imports {target}"
            if _layer(target) in FORBIDDEN[my_layer]:
                bad.append(f"{where} ({my_layer} must not import {_layer(target)})")
            other = _method_package(target)
            if my_pkg and other and other != my_pkg:
                bad.append(f"{where} (method package {my_pkg} must not import method {other})")
    return bad


def test_layers_import_only_downward():
    assert violations() == []


def test_the_checker_catches_a_bad_import(tmp_path, monkeypatch):
    """The rule test is not vacuous: a core module importing a method is reported."""
    fake = tmp_path / "flipseg"
    (fake / "methods" / "a").mkdir(parents=True)
    (fake / "methods" / "b").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "methods" / "__init__.py").write_text("")
    (fake / "methods" / "a" / "__init__.py").write_text("")
    (fake / "methods" / "b" / "__init__.py").write_text("from flipseg.methods.a import x\n")
    (fake / "metrics.py").write_text("def f():\n    from flipseg.methods import get_segmenter\n")
    (fake / "cli.py").write_text("from flipseg.methods.a import x\n")
    (fake / "engines").mkdir()
    (fake / "engines" / "__init__.py").write_text("")
    (fake / "engines" / "pool.py").write_text("import flipseg.api\nfrom flipseg.methods.a import x\n")
    (fake / "api.py").write_text("from flipseg.engines import pool\n")
    (fake / "methods" / "a" / "x.py").write_text("from flipseg.engines import pool\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    found = violations()
    assert any("metrics.py:2" in v and "core must not import methods-shared" in v for v in found)
    assert any("method package b must not import method a" in v for v in found)
    assert not any(v.startswith("flipseg/cli.py") for v in found)
    assert any("engines/pool.py:1" in v and "engines must not import api" in v for v in found)
    assert any("engines/pool.py:2" in v and "engines must not import method" in v for v in found)
    assert any("methods/a/x.py:1" in v and "method must not import engines" in v for v in found)
    assert not any(v.startswith("flipseg/api.py") for v in found)


@pytest.mark.parametrize("module", ["flipseg.cli", "flipseg.runs", "flipseg.methods"])
def test_start_up_modules_do_not_import_torch(module):
    import subprocess
    import sys

    code = (f"import sys, {module}; from flipseg.methods import load_methods; "
            "load_methods(baselines=False); import flipseg.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'cv2', 'skimage', 'monai', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
