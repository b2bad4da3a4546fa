"""The package's shape: no private names across modules, one contract for every analysis, fast --help."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path


PKG = Path(__file__).resolve().parent.parent / "featuregeo"


def _modules():
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), p


def test_no_private_names_imported_across_modules():
    offences = []
    for mod, path in _modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("featuregeo"):
                if node.module == mod:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offences.append(f"{mod}: from {node.module} import {alias.name}")
                if any(part.startswith("_") and not part.startswith("__") for part in node.module.split(".")):
                    offences.append(f"{mod}: from {node.module} (a private module)")
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                pass
    assert not offences, "\n".join(offences)


import pytest  # noqa: E402


def test_no_module_is_a_big_room():
    """One module per responsibility: no file over 700 lines."""
    big = {mod: n for mod, p in _modules() if (n := len(p.read_text().splitlines())) > 700}
    assert not big, big


ANALYSES = {"galaxy": "Galaxy", "lobes": "Lobes", "atoms": "Atoms", "layers": "Layers", "lens": "Lens",
            "updates": "Updates", "interaction": "Interaction"}


@pytest.mark.parametrize("name", sorted(ANALYSES))
def test_every_analysis_follows_the_contract(name):
    """analyze(inputs..., params, *, checkpoint=None, progress=None) -> <Name>Result, with <Name>Params."""
    import inspect

    from featuregeo.core.results import Params, Result

    mod = importlib.import_module(f"featuregeo.tl.{name}")
    cap = ANALYSES[name]
    params_cls = getattr(mod, f"{cap}Params")
    result_cls = getattr(mod, f"{cap}Result")
    assert issubclass(params_cls, Params) and issubclass(result_cls, Result)
    assert result_cls.kind == name
    sig = inspect.signature(mod.analyze)
    kinds = {p.name: p.kind for p in sig.parameters.values()}
    assert "params" in kinds and kinds["params"] in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                     inspect.Parameter.POSITIONAL_ONLY)
    for kw in ("checkpoint", "progress"):
        assert kinds.get(kw) == inspect.Parameter.KEYWORD_ONLY, (name, kw)
        assert sig.parameters[kw].default is None
    params_cls().validate()  # the defaults are valid
    pipe = importlib.import_module(f"featuregeo.pipeline.{name}")
    assert callable(pipe.run)


def test_no_legacy_result_base_left():
    from featuregeo.core import results

    assert not hasattr(results, "LegacyResult") and not hasattr(results, "register")
