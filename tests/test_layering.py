"""Imports point one way: library -> nothing of the CLI, the trainers, planners, converters or benchmarks;
inside the library, lower layers never import higher ones; trainers and planners -> library; CLI -> anything
but the benchmarks; the benchmark harness -> never a study. No module of the package imports itself through others
(no import cycle)."""
import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# library subpackages by layer: a module may import its own layer and the layers below
LAYERS = {"data": 0, "architectures": 0, "evaluation": 0, "method": 1, "training": 2, "inference": 2, "planning": 3, "federated": 3}
OUTSIDE_LIBRARY = ("mapseg_nnunet.cli", "mapseg_nnunet.trainers", "mapseg_nnunet.planners",
                   "mapseg_nnunet.dataset_conversion", "benchmarks")
# top-level folders installed as subpackages of mapseg_nnunet (setup.py's package_dir)
MAPPED_FOLDERS = ("trainers", "planners", "dataset_conversion")


def imported_modules(path: str):
    """Every absolute module an ``import`` / ``from ... import`` statement anywhere in the file names."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def python_files(folder: str):
    for root, _, files in os.walk(os.path.join(REPO, folder)):
        yield from (os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))


def subpackage(module: str):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "mapseg_nnunet" else None


def violations_of(path: str, allowed) -> list:
    return [f"{os.path.relpath(path, REPO)} imports {m}" for m in imported_modules(path) if not allowed(m)]


def test_the_layer_map_covers_every_library_subpackage():
    library = os.path.join(REPO, "mapseg_nnunet")
    packages = {d for d in os.listdir(library) if os.path.isfile(os.path.join(library, d, "__init__.py"))}
    assert packages == set(LAYERS) | {"cli"}


def test_library_imports_point_down():
    found = []
    for path in python_files("mapseg_nnunet"):
        own = os.path.relpath(path, os.path.join(REPO, "mapseg_nnunet")).split(os.sep)[0]
        if own in ("cli", "nnunet_ext"):
            continue
        own_layer = LAYERS.get(own, max(LAYERS.values()) + 1)  # top-level modules (__init__, __main__) sit above

        def allowed(module, own_layer=own_layer):
            if module.startswith(OUTSIDE_LIBRARY) and not (own == "__main__.py" and module.startswith(
                    "mapseg_nnunet.cli")):
                return False
            target = subpackage(module)
            return target is None or target not in LAYERS or LAYERS[target] <= own_layer
        found += violations_of(path, allowed)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("folder", ["trainers", "planners", "dataset_conversion"])
def test_plugin_folders_import_the_library_only(folder):
    forbidden = tuple(m for m in OUTSIDE_LIBRARY if not m.endswith("." + folder))
    found = []
    for path in python_files(folder):
        found += violations_of(path, lambda module: not module.startswith(forbidden))
    assert not found, "\n".join(found)


def test_the_benchmark_harness_never_imports_a_study():
    """benchmarks/*.py is the harness; the studies in benchmarks/studies/ use it, never the reverse."""
    def imports_a_study(node) -> bool:
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from .studies(.x) import y / from . import studies
            return (node.module or "").split(".")[0] == "studies" or (
                node.module is None and any(alias.name == "studies" for alias in node.names))
        return False

    found = []
    for f in sorted(os.listdir(os.path.join(REPO, "benchmarks"))):
        path = os.path.join(REPO, "benchmarks", f)
        if f.endswith(".py"):
            found += [f"benchmarks/{f} imports a study (line {node.lineno})"
                      for node in ast.walk(ast.parse(open(path).read(), path)) if imports_a_study(node)]
            found += violations_of(path, lambda module: not module.startswith("benchmarks.studies"))
    assert not found, "\n".join(found)


def test_cli_never_imports_the_benchmarks():
    found = []
    for path in python_files(os.path.join("mapseg_nnunet", "cli")):
        found += violations_of(path, lambda module: not module.startswith("benchmarks"))
    assert not found, "\n".join(found)


def package_modules(repo: str = REPO) -> dict:
    """``{module: file}`` of the package as installed: the library and the folders mapped into it (a package is
    named by its folder, ``__init__`` dropped)."""
    modules = {}
    for folder, prefix in [("mapseg_nnunet", [])] + [(f, ["mapseg_nnunet"]) for f in MAPPED_FOLDERS]:
        for root, _, files in os.walk(os.path.join(repo, folder)):
            for f in sorted(files):
                if f.endswith(".py"):
                    parts = prefix + os.path.relpath(os.path.join(root, f), repo)[:-len(".py")].split(os.sep)
                    modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = os.path.join(root, f)
    return modules


def import_graph(repo: str = REPO) -> dict:
    """``{module: [modules of the package it imports]}``, imports inside functions included; ``from package import
    name`` imports ``package.name`` when that is a module, else ``package``."""
    modules = package_modules(repo)
    graph = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base]).strip(".")
                targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                               for alias in node.names)
        graph[module] = sorted(t for t in targets if t in modules and t != module)
    return graph


def find_cycle(graph: dict):
    """One cycle ``[a, b, ..., a]`` of ``graph`` (``{node: [nodes]}``), or None."""
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in graph[node]:
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return None
    return next((cycle for cycle in map(visit, sorted(graph)) if cycle), None)


def test_find_cycle():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": []}) is None
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["b"]}) == ["b", "c", "b"]


def test_no_import_cycle():
    graph = import_graph()
    assert "mapseg_nnunet.data.input_checks" in graph and "mapseg_nnunet.trainers.base" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_private_names_of_nnunet_and_batchgenerators_are_used_in_the_compatibility_module_only():
    """``obj._name`` or ``getattr(obj, "_name")`` for a private name of nnU-Net or batchgenerators outside
    ``mapseg_nnunet/compat.py`` (overriding ``_apply_to_image`` in a transform subclass is batchgeneratorsv2's way of
    writing a transform and is allowed)."""
    from mapseg_nnunet.compat import PREDICTOR_PRIVATE_METHODS
    private = set(PREDICTOR_PRIVATE_METHODS) | {"_apply_to_image", "_finish"}
    compat = os.path.join(REPO, "mapseg_nnunet", "compat.py")
    found = []
    for folder in ("mapseg_nnunet",) + MAPPED_FOLDERS:
        for path in python_files(folder):
            if path == compat:
                continue
            for node in ast.walk(ast.parse(open(path).read(), path)):
                name = node.attr if isinstance(node, ast.Attribute) else \
                    node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
                if name in private:
                    found.append(f"{os.path.relpath(path, REPO)}:{node.lineno} uses {name}")
    assert not found, "\n".join(found)
