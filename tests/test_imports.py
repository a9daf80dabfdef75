from __future__ import annotations

import subprocess
import sys


def test_engine_imports_no_front_end():
    code = (
        "import kdlib, kdlib.trainer, kdlib.runner, kdlib.sweep, sys; "
        "print([m for m in ('streamlit', 'ipywidgets', 'plotly') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# --- the shape of the code: what the method contract and the layout promise ---------------------

import ast  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ("trainer", "probes", "teacher_cache", "store", "runner", "ops", "recording", "checkpoints")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_methods_import_no_engine_module():
    for path in sorted((ROOT / "kdlib" / "methods").glob("*.py")):
        engine = {m for m in imported_modules(path) if m.split(".")[:2] in [["kdlib", e] for e in ENGINE]}
        assert not engine, f"{path.name} imports {sorted(engine)}"


def test_the_method_base_has_no_speed_hooks_and_kd_reads_like_its_maths():
    from kdlib.methods.base import Distiller

    hooks = {"finish_per_sample", "watch_logits", "watched_logit_gradient", "watch_gradients",
             "uses_teacher_logits_only", "teacher_forward"}
    assert not hooks & set(dir(Distiller))
    kd = (ROOT / "kdlib" / "methods" / "kd.py").read_text().splitlines()
    assert sum(1 for line in kd if line.strip()) <= 80


def test_config_imports_no_registry_and_no_file_is_past_500_lines():
    assert not {m for m in imported_modules(ROOT / "kdlib" / "config.py")
                if m.startswith(("kdlib.data", "kdlib.models", "kdlib.methods", "kdlib.registry"))}
    long = {str(p.relative_to(ROOT)): n for p in [*ROOT.glob("kdlib/**/*.py"), *ROOT.glob("app/**/*.py")]
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long


def test_kdlib_modules_form_no_import_cycle():
    """Imports between kdlib's modules, lazy ones inside functions included (a package counts as its __init__)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in ROOT.glob("kdlib/**/*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlib"):
                found = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets |= set(found) or {node.module}
            elif isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("kdlib")}
        graph[name] = {t for t in targets if t in modules and t != name}

    def cycle_from(start, path, seen):
        for target in graph[path[-1]]:
            if target == start:
                return path
            if target not in seen:
                seen.add(target)
                if found := cycle_from(start, [*path, target], seen):
                    return found
        return None

    cycles = [c for name in graph if (c := cycle_from(name, [name], {name}))]
    assert not cycles, cycles[0]
