"""The layer rule of DESIGN.md as a test: no import may point down the layer table.

Every ``.py`` under ``src/mediatok`` is parsed with ``ast`` (not imported, so a module that needs
a GPU or an optional package is still checked) and every ``import`` in it, at any depth (inside
functions and ``if TYPE_CHECKING:`` blocks too), is resolved to a module name and mapped to a
layer. A module may import only from its own layer or a lower-numbered one; ``generation`` never
imports ``codecs`` (it sees only a ``TokenSpec``). A module that maps to no layer fails too, so a
new package has to be placed in the table before it can land.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT_PACKAGE = "mediatok"

# Packages by layer; a module belongs to the longest entry that is its name or a prefix of it
# followed by a dot (so `mediatok.codecs.image.vq` is layer 4 through `mediatok.codecs`).
LAYERS: dict[str, int] = {
    "mediatok.config": 1,
    "mediatok.nn": 1,
    "mediatok.runtime": 1,
    "mediatok.progress": 1,
    "mediatok.quantize": 2,
    "mediatok.tokens": 3,
    "mediatok.data": 3,
    "mediatok.checkpoint": 3,
    "mediatok.codecs": 4,
    "mediatok.generation": 4,
    "mediatok.eval": 4,
    "mediatok.modalities": 5,
    "mediatok.pipelines": 5,
    "mediatok.training": 5,
    "mediatok.report": 5,
    "mediatok.cli": 6,
    "mediatok.api": 6,
    "mediatok.demo": 6,
}
# Matched by exact name only: were `mediatok` a prefix, every new package would silently land
# at layer 6 and the "unmapped module" check below could never fire.
EXACT_LAYERS: dict[str, int] = {"mediatok": 6}
# (importer package, imported package) pairs banned even though the layers would allow them.
# Inference never imports training: the pipelines, the modality table and the Python API run
# where no training code is wanted.
FORBIDDEN: set[tuple[str, str]] = {
    ("mediatok.generation", "mediatok.codecs"),
    ("mediatok.pipelines", "mediatok.training"),
    ("mediatok.modalities", "mediatok.training"),
    ("mediatok.api", "mediatok.training"),
    ("mediatok.report", "mediatok.training"),
}


@dataclass(frozen=True)
class Import:
    """One resolved import statement: ``module`` imports ``target`` at ``path:line``."""

    path: Path
    line: int
    module: str
    target: str


def layer_of(module: str) -> int | None:
    """Map a dotted module name to its layer.

    Args:
        module: e.g. ``"mediatok.codecs.image.vq"``.

    Returns:
        The layer of the longest matching entry of ``LAYERS`` (or an exact ``EXACT_LAYERS``
        entry), or ``None`` when the module is in no layer.
    """
    if module in EXACT_LAYERS:
        return EXACT_LAYERS[module]
    package = layer_package(module)
    return None if package is None else LAYERS[package]


def layer_package(module: str) -> str | None:
    """The longest ``LAYERS`` entry that ``module`` is or lies inside, or ``None``."""
    matches = [package for package in LAYERS if in_package(module, package)]
    return max(matches, key=len, default=None)


def in_package(module: str, package: str) -> bool:
    """Whether ``module`` is ``package`` or inside it."""
    return module == package or module.startswith(package + ".")


def module_name(path: Path, src: Path) -> str:
    """Dotted module name of a file: ``src/mediatok/nn/rope.py`` -> ``mediatok.nn.rope``.

    Args:
        path: a ``.py`` file under ``src``.
        src: the directory that holds the top-level package.

    Returns:
        The module name; a package's ``__init__.py`` is the package itself.
    """
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in_source(source: str, module: str, path: Path, is_package: bool) -> list[Import]:
    """Every import of a ``mediatok`` module in ``source``, relative imports resolved.

    Args:
        source: Python source text.
        module: the dotted name of the module the source belongs to.
        path: the file, for reports and syntax errors.
        is_package: whether the source is a package's ``__init__.py`` (relative imports then
            start from the package itself rather than from its parent).

    Returns:
        One ``Import`` per imported name; imports of other packages (torch, numpy) are dropped.
    """
    tree = ast.parse(source, filename=str(path))
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[Import] = []
    # ast.walk reaches every node, so imports inside functions, classes and `if` blocks count:
    # a lazy import still makes the dependency.
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # `from ..x import y` in mediatok.a.b.c: drop level-1 trailing package parts.
                keep = len(package) - (node.level - 1)
                if keep <= 0:
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond top level")
                base = ".".join(package[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                # Inside a layered package the imported name cannot change the layer, so report
                # the module. Above one (`from mediatok import config`), the name may be a
                # submodule with its own layer (mediatok.config is 1, not the top level's 6);
                # `from mediatok import __version__` stays the top level.
                candidate = f"{base}.{alias.name}"
                if layer_package(base) is None and layer_package(candidate) is not None:
                    targets.append(candidate)
                else:
                    targets.append(base)
        for target in targets:
            if in_package(target, ROOT_PACKAGE):
                found.append(Import(path, node.lineno, module, target))
    # ast.walk goes breadth-first; report in source order.
    return sorted(found, key=lambda item: item.line)


def collect_imports(src: Path) -> tuple[list[str], list[Import]]:
    """Parse every ``.py`` file of the ``mediatok`` package under ``src``.

    Args:
        src: the directory holding ``mediatok/``.

    Returns:
        The module names found and all their ``mediatok`` imports.
    """
    modules: list[str] = []
    imports: list[Import] = []
    for path in sorted((src / ROOT_PACKAGE).rglob("*.py")):
        module = module_name(path, src)
        modules.append(module)
        source = path.read_text(encoding="utf-8")
        imports += imports_in_source(source, module, path, path.name == "__init__.py")
    return modules, imports


def find_violations(src: Path) -> list[str]:
    """Every breach of the layer rule under ``src``, one readable line each.

    Args:
        src: the directory holding ``mediatok/``.

    Returns:
        Lines like ``src/mediatok/quantize/vq.py:12: mediatok.quantize.vq (layer 2) ->
        mediatok.training (layer 5)``; empty when the tree follows the rule.
    """
    modules, imports = collect_imports(src)
    problems = [
        f"{module}: maps to no layer; add its package to LAYERS in tests/test_layers.py"
        for module in modules
        if layer_of(module) is None
    ]
    for item in imports:
        where = f"{_shown(item.path, src)}:{item.line}"
        importer, imported = layer_of(item.module), layer_of(item.target)
        if importer is None:
            continue  # already reported above
        if imported is None:
            problems.append(f"{where}: {item.module} imports {item.target}, which maps to no layer")
        elif imported > importer:
            problems.append(
                f"{where}: {item.module} (layer {importer}) -> {item.target} (layer {imported})"
            )
        for banned_from, banned_to in FORBIDDEN:
            if in_package(item.module, banned_from) and in_package(item.target, banned_to):
                problems.append(
                    f"{where}: {item.module} (layer {importer}) -> {item.target} "
                    f"(layer {imported}): {banned_from} must never import {banned_to}"
                )
    return problems


def _shown(path: Path, src: Path) -> str:
    # Relative to the repository when possible: clickable in an editor, short in a report.
    try:
        return str(path.relative_to(src.parent))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# the rule on the real tree


def test_source_tree_is_found() -> None:
    # Guards against a vacuous pass: an empty walk would report no violations.
    modules, _ = collect_imports(SRC)
    assert ROOT_PACKAGE in modules
    assert "mediatok.config" in modules


def test_imports_follow_the_layer_table() -> None:
    problems = find_violations(SRC)
    assert not problems, "imports that break the layer rule of DESIGN.md:\n" + "\n".join(problems)


# --------------------------------------------------------------------------------------------
# the checker flags what it should


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: source}`` under ``root`` and return ``root``."""
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return root


def test_checker_flags_bad_imports(tmp_path: Path) -> None:
    # tmp/src/mediatok/... like the real tree, so reported paths read src/mediatok/....
    src = write_tree(
        tmp_path / "src",
        {
            "mediatok/__init__.py": "from mediatok import api\nfrom . import config\n",
            # Importing the top-level package from below pulls in layer 6 (and import cycles).
            "mediatok/config.py": "import yaml\nfrom mediatok import __version__\n",
            "mediatok/api.py": "from mediatok.training.loop import train\n",
            # Upward arrow, absolute form, at layer 2 -> 5.
            "mediatok/quantize/__init__.py": "from mediatok.training import loop\n",
            # Allowed: same layer, lower layer, and `from .. import` of a lower-layer module.
            "mediatok/codecs/__init__.py": "from ..eval import image\nfrom .. import quantize\n",
            "mediatok/codecs/image/vq.py": "from ...nn import attention\nimport mediatok.tokens\n",
            "mediatok/training/loop.py": "import mediatok.codecs.image.vq\n",
            # Relative upward arrow inside a function, and the generation -> codecs ban.
            "mediatok/generation/ar.py": (
                "import torch\n\n\ndef sample():\n    from ..codecs import base\n    return base\n"
            ),
            "mediatok/nn/attention.py": "x = 1\n\n\nclass A:\n    import mediatok.cli as cli\n",
            # A package missing from the table, and an import of one.
            "mediatok/newpkg/thing.py": "",
            "mediatok/tokens/__init__.py": "from mediatok.newpkg import thing\n",
        },
    )
    problems = find_violations(src)
    expected = [
        "mediatok.newpkg.thing: maps to no layer",
        "src/mediatok/config.py:2: mediatok.config (layer 1) -> mediatok (layer 6)",
        "src/mediatok/quantize/__init__.py:1: mediatok.quantize (layer 2) -> mediatok.training "
        "(layer 5)",
        "src/mediatok/generation/ar.py:5: mediatok.generation.ar (layer 4) -> mediatok.codecs "
        "(layer 4): mediatok.generation must never import mediatok.codecs",
        "src/mediatok/nn/attention.py:5: mediatok.nn.attention (layer 1) -> mediatok.cli (layer 6)",
        "src/mediatok/tokens/__init__.py:1: mediatok.tokens imports mediatok.newpkg, which "
        "maps to no layer",
        # Allowed by the layers (6 -> 5), banned because inference never imports training.
        "src/mediatok/api.py:1: mediatok.api (layer 6) -> mediatok.training.loop (layer 5): "
        "mediatok.api must never import mediatok.training",
    ]
    for line in expected:
        assert any(problem.startswith(line) for problem in problems), (line, problems)
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize(
    ("module", "is_package", "statement", "target"),
    [
        ("mediatok.codecs.image.vq", False, "from . import layers", "mediatok.codecs.image"),
        ("mediatok.codecs.image.vq", False, "from .. import base", "mediatok.codecs"),
        ("mediatok.codecs.image.vq", False, "from ...quantize import VQ", "mediatok.quantize"),
        ("mediatok.codecs.image", True, "from .vq import VQ", "mediatok.codecs.image.vq"),
        ("mediatok.codecs.image", True, "from .. import base", "mediatok.codecs"),
        ("mediatok.api", False, "from . import config", "mediatok.config"),
        ("mediatok.api", False, "from . import __version__", "mediatok"),
        ("mediatok.api", False, "from mediatok import *", "mediatok"),
        (
            "mediatok.api",
            False,
            "import mediatok.tokens.shards as shards",
            "mediatok.tokens.shards",
        ),
    ],
)
def test_relative_imports_resolve(
    module: str, is_package: bool, statement: str, target: str
) -> None:
    found = imports_in_source(statement, module, Path("x.py"), is_package)
    assert [item.target for item in found] == [target]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("mediatok", 6),
        ("mediatok.config", 1),
        ("mediatok.codecs.image.vq", 4),
        ("mediatok.cli", 6),
        ("mediatok.configs", None),  # a prefix of the name is not a prefix of the package
        ("mediatok.unknown", None),
    ],
)
def test_layer_of(module: str, layer: int | None) -> None:
    assert layer_of(module) == layer


# --------------------------------------------------------------------------------------------
# the command line's shell stays at the top, the modality table is the only place that knows a
# modality by name


def _sources() -> dict[str, str]:
    return {
        module_name(path, SRC): path.read_text(encoding="utf-8")
        for path in sorted((SRC / ROOT_PACKAGE).rglob("*.py"))
    }


# `python -m mediatok.demo` is a program of its own, with its own options.
SHELLS = {"mediatok.cli", "mediatok.demo"}


def test_no_argparse_or_system_exit_below_the_command_line() -> None:
    found = []
    for module, source in _sources().items():
        if module in SHELLS:
            continue
        for node in ast.walk(ast.parse(source)):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Name) and node.id == "SystemExit":
                names = ["SystemExit"]
            found += [
                f"{module}:{node.lineno}: {name}"
                for name in names
                if name in ("argparse", "SystemExit")
            ]
    assert not found, "argparse or SystemExit below the command line:\n" + "\n".join(found)


def test_only_the_modality_table_branches_on_a_modality() -> None:
    """`codec.modality == "image"` (or `!=`, `in (...)`) outside `mediatok.modalities` is a
    branch a new modality would have to find; comparing with a variable (a task's own
    modality) is not."""
    found = []
    for module, source in _sources().items():
        if in_package(module, "mediatok.modalities"):
            continue
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            names_modality = any(
                isinstance(side, ast.Attribute) and side.attr == "modality" for side in sides
            )
            literal = any(
                isinstance(side, ast.Constant | ast.Tuple | ast.List | ast.Set) for side in sides
            )
            if names_modality and literal:
                found.append(f"{module}:{node.lineno}")
    assert not found, "branches on a modality outside the modality table:\n" + "\n".join(found)


def test_no_two_classes_share_a_name() -> None:
    """A class name finds one class: two `Attention`s or two `Encoder`s make readers (and
    tracebacks) guess which one is meant."""
    where: dict[str, list[str]] = {}
    for module, source in _sources().items():
        for node in ast.parse(source).body:
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(module)
    shared = {name: modules for name, modules in where.items() if len(modules) > 1}
    assert not shared, f"class names defined more than once: {shared}"
