"""The shape of the house: one owner for each folder's file names, imports that only go down, a complete
command table. These read the source tree, so a change that breaks the shape fails here."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import COMMANDS, build_parser
from lmforge.folders import prepared, run, sweep, tokenized

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"
# Every file name of every folder lmforge writes, by the module that owns it: no other module spells one
# (in code, messages and help included; a docstring may).
FOLDER_FILES = {
    "lmforge.folders.run": [run.CONFIG_FILE, run.METRICS_FILE, run.SUMMARY_FILE, run.MODEL_FILE, run.STATE_TENSORS,
                            run.STATE_JSON, run.DIVERGED_FILE, run.ERROR_FILE, run.TRAIN_LOG, run.REPORT_HTML,
                            run.REPORT_MD, tokenized.TOKENIZER_FILE],
    "lmforge.folders.prepared": [prepared.REPORT],
    "lmforge.folders.tokenized": [tokenized.META, tokenized.TOKENIZER_FILE],
    "lmforge.folders.sweep": [sweep.SWEEP_FILE, sweep.POINTS_FILE, sweep.FIT_FILE, sweep.VERIFY_FILE],
    "lmforge.data.classifiers": ["meta.json"],  # its own folder: the language-identification model's arrays
    "lmforge.export": [tokenized.TOKENIZER_FILE],  # the exported Hugging Face folder's (its other names are HF's)
}
# Folder names are words too ("clean", "tokens"): they count where code joins one into a path.
FOLDER_PARTS = {
    "lmforge.folders.run": [run.CHECKPOINTS, run.LATEST, run.PREPARED, run.TOKENS, run.INSPECT, run.TENSORBOARD,
                            run.REPORT_FILES],
    "lmforge.folders.prepared": [prepared.CLEAN, prepared.REJECTED, prepared.WORK],
    "lmforge.folders.tokenized": list(tokenized.SPLITS),
    "lmforge.folders.sweep": [sweep.TOKENS, sweep.RUNS, sweep.VERIFY, sweep.PLOTS, sweep.COORDCHECK],
}


def modules():
    for path in sorted(SRC.rglob("*.py")):
        yield ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"), path


def code_strings(tree: ast.AST):
    """String constants that are not docstrings: the literals code uses."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def owned(table: dict[str, list[str]], module: str) -> set[str]:
    """The names of `table` that `module` may not spell: those of the folders it does not own."""
    return {name for owner, names in table.items() if owner != module for name in names} - set(table.get(module, ()))


def folder_names_spelled(source: str, module: str = "") -> list[tuple[int, str]]:
    """(line, literal) of every code string outside `module`'s own folders that names a folder's file,
    or joins one of its folder names into a path (`x / "clean"`, `os.path.join(x, "clean")`)."""
    tree = ast.parse(source)
    files = owned(FOLDER_FILES, module)
    found = [(node.lineno, node.value) for node in code_strings(tree)
             if any(re.search(rf"(?<![\w.]){re.escape(f)}(?!\w)", node.value) for f in files)]
    parts = owned(FOLDER_PARTS, module)
    for node in ast.walk(tree):
        joined = ([node.right] if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) else
                  node.args[1:] if isinstance(node, ast.Call) and ast.unparse(node.func) == "os.path.join" else [])
        found += [(part.lineno, part.value) for part in joined if isinstance(part, ast.Constant)
                  and isinstance(part.value, str) and part.value.split("/")[0] in parts]
    return sorted(set(found))


def test_no_module_but_its_owner_spells_a_folders_file_name():
    found = [f"{path.relative_to(SRC)}:{line} {value!r}" for name, path in modules()
             for line, value in folder_names_spelled(path.read_text(), name)]
    assert not found, "folder file names spelled outside lmforge/folders/:\n" + "\n".join(found)


def test_the_folder_name_check_catches_a_literal_and_a_path_join():
    source = ('"""summary.json in a docstring is fine"""\npath = run / "summary.json"\nkey = "train.log_interval"\n'
              'shards = prep / "clean"\nword = "clean"\nfit = os.path.join(sweep, "fit.json")\n')
    assert folder_names_spelled(source) == [(2, "summary.json"), (4, "clean"), (6, "fit.json")]
    assert folder_names_spelled(source, "lmforge.folders.prepared") == [(2, "summary.json"), (6, "fit.json")]


ARCHITECTURE = SRC.parents[1] / "docs" / "ARCHITECTURE.md"
PACKAGE = {name: path for name, path in modules()}

# Imports the layering and circle checks pass over for now, each named with the change under way that
# removes it (issue 25); once one is gone, its test below fails until the line here goes too.
BEING_REMOVED: dict[tuple[str, str], str] = {}


def layers(text: str | None = None) -> list[list[list[str]]]:
    """ARCHITECTURE.md's ```layers block, bottom first: each layer its parts, each part its names."""
    text = ARCHITECTURE.read_text() if text is None else text
    block = text[text.index("```layers\n") + len("```layers\n"):]
    block = block[:block.index("```")]
    return [[part.split() for part in line.split(None, 1)[1].split("|")] for line in block.splitlines() if line.strip()]


def place(rel: str, stated: list[list[list[str]]]) -> tuple[int, int] | None:
    """(layer, part) of the module at `rel` (a path under src/lmforge/): the longest name that fits it."""
    fits = [(len(name), i, j) for i, layer in enumerate(stated) for j, part in enumerate(layer) for name in part
            if rel == name or (name.endswith("/") and rel.startswith(name))]
    return max(fits)[1:] if fits else None


def imports_of(path: Path, name: str, top_only: bool = False, package: dict[str, Path] = PACKAGE) -> set[str]:
    """The lmforge modules `path` imports (`from lmforge import files` names lmforge.files), inside
    functions too unless `top_only`; `if TYPE_CHECKING:` imports count as function-level."""
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def module(dotted: str) -> str:
        while dotted and dotted not in package:
            dotted = dotted.rpartition(".")[0]
        return dotted

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import) and not (top_only and deferred):
                found.update(module(a.name) for a in child.names if a.name.startswith("lmforge"))
            elif isinstance(child, ast.ImportFrom) and not (top_only and deferred):
                base = here.rsplit(".", child.level - 1)[0] if child.level else ""
                mod = ".".join(p for p in (base, child.module) if p)
                if mod.startswith("lmforge"):
                    found.update(f"{mod}.{a.name}" if f"{mod}.{a.name}" in package else module(mod) for a in child.names)
            visit(child, deferred or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                  or (isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)))

    visit(ast.parse(path.read_text()), False)
    return found - {name, ""}


def import_graph(top_only: bool = False, package: dict[str, Path] = PACKAGE) -> dict[str, set[str]]:
    return {name: imports_of(path, name, top_only, package) - {b for a, b in BEING_REMOVED if a == name}
            for name, path in package.items()}


def layering_violations(stated: list[list[list[str]]] | None = None, package: dict[str, Path] = PACKAGE,
                        root: Path = SRC) -> list[str]:
    stated = layers() if stated is None else stated
    where = {name: place(path.relative_to(root).as_posix(), stated) for name, path in package.items()}
    bad = [f"{name} has no layer" for name, at in where.items() if at is None]
    for name, imported in import_graph(package=package).items():
        for mod in sorted(imported) if where[name] else ():
            (i, j), (k, m) = where[name], where[mod] or (-1, -1)
            if k > i or (k == i and m != j):
                bad.append(f"{name} imports {mod}")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`: each strongly connected set of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            ring = []
            while not ring or ring[-1] != v:
                ring.append(stack.pop())
            if len(ring) > 1:
                found.append(sorted(ring))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_place_in_the_layers():
    assert not [bad for bad in layering_violations() if bad.endswith("has no layer")]


def test_imports_only_go_down():
    assert not layering_violations()


def shortest_circle(graph: dict[str, set[str]], start: str) -> list[str]:
    """The shortest way from `start` through its imports back to it (breadth first), [] if none."""
    came_from, frontier = {start: None}, [start]
    while frontier:
        step = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in came_from:
                    came_from[w] = v
                    step.append(w)
        frontier = step
    return []


def shown_circles(graph: dict[str, set[str]]) -> list[str]:
    """Each circle as a way round it: the shortest through each module of each circle, once each
    (started at its first module in sorted order)."""
    ways = set()
    for ring in circles(graph):
        for v in ring:
            way = shortest_circle(graph, v)[:-1]
            first = way.index(min(way))
            ways.add(" -> ".join(way[first:] + way[:first] + [min(way)]))
    return sorted(ways)


@pytest.mark.parametrize("top_only", [True, False], ids=["module-level", "function-level"])
def test_no_import_circle(top_only):
    found = shown_circles(import_graph(top_only))
    assert not found, "import circles (BEING_REMOVED lists those under way):\n" + "\n".join(found)


def test_each_import_being_removed_is_still_there():
    """An entry of BEING_REMOVED whose import has gone would hide its return: delete the entry."""
    gone = [f"{a} -> {b} ({why})" for (a, b), why in BEING_REMOVED.items()
            if a not in PACKAGE or b not in imports_of(PACKAGE[a], a)]
    assert not gone, "no longer imported; delete from BEING_REMOVED:\n" + "\n".join(gone)


def write_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    out = {}
    for rel, text in files.items():
        path = tmp_path / "lmforge" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        out[("lmforge." + ".".join(Path(rel).with_suffix("").parts)).removesuffix(".__init__")] = path
    return out


def test_the_checks_see_a_climb_a_sibling_a_stray_and_a_circle(tmp_path):
    package = write_package(tmp_path, {
        "config.py": "from lmforge.model import GPT\n",        # a climb, at the top
        "model.py": "def f():\n    from lmforge.data import clean\n",  # a sibling, inside a function
        "data/clean.py": "from lmforge import config\n",
        "stray.py": "", "data/__init__.py": "", "__init__.py": ""})
    stated = layers("```layers\nbase config.py data/__init__.py __init__.py\nup data/ | model.py\n```\n")
    assert place("data/__init__.py", stated) == (0, 0) and place("data/clean.py", stated) == (1, 0)
    assert sorted(layering_violations(stated, package, tmp_path / "lmforge")) == [
        "lmforge.config imports lmforge.model", "lmforge.model imports lmforge.data.clean", "lmforge.stray has no layer"]
    assert circles(import_graph(package=package)) == [["lmforge.config", "lmforge.data.clean", "lmforge.model"]]
    assert shown_circles(import_graph(package=package)) == [
        "lmforge.config -> lmforge.model -> lmforge.data.clean -> lmforge.config"]
    assert circles(import_graph(top_only=True, package=package)) == []


def modules_loaded_by(code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules under `prefixes` that running `code` in a fresh interpreter loads."""
    probe = f"import sys; {code}; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return ast.literal_eval(out.stdout.strip())


def test_loading_the_trainer_loads_no_task_scoring_or_inspection():
    assert modules_loaded_by("import lmforge.training.trainer", ("lmforge.tasks", "lmforge.inspection",
                             "lmforge.scaling", "lmforge.cli", "lmforge.evaluation")) == []


def test_counting_a_preset_and_its_cost_loads_no_torch():
    """Counts live beside the model without torch: cost.py and the folder readers start without it."""
    code = ("from lmforge import cost, hardware; from lmforge.config import load_config; "
            "from lmforge.scaling.law import LAWS; "
            "cost.estimate(cost.shape_from_model(load_config('1b')), '1T', hardware.find_hardware('h100'), 8); "
            "cost.plan_run('1e22flops', hardware.find_hardware('h100'), None, LAWS['chinchilla'])")
    assert modules_loaded_by(code, ("torch",)) == []


def test_the_data_stages_and_the_folder_readers_load_no_torch():
    """Cleaning workers and readers of a folder start without torch (the formats layer of ARCHITECTURE.md)."""
    stated = layers()
    formats = sorted(name for name, path in PACKAGE.items() if place(path.relative_to(SRC).as_posix(), stated) == (1, 0))
    assert "lmforge.data.prepare" in formats  # the part the test means
    assert modules_loaded_by("; ".join(f"import {name}" for name in formats), ("torch",)) == []


def test_the_config_checks_filter_names_without_loading_the_cleaning_code():
    """The filter names have one owner, data/__init__.py, which imports nothing: checking them loads no cleaner."""
    code = "from lmforge.config import load_config; load_config('tiny', overrides=['prepare.filters=[c4, code]'])"
    assert modules_loaded_by(code, ("lmforge.data.", "numpy", "torch")) == []


def test_only_with_data_redirects_what_a_run_reads():
    """config.with_data is the one way a stage changes a config's data section: no `replace(x.data, ...)`
    or `replace(cfg, data=...)` elsewhere."""
    found = []
    for name, path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (name != "lmforge.config" and isinstance(node, ast.Call) and ast.unparse(node.func).endswith("replace")
                    and (any(k.arg == "data" for k in node.keywords)
                         or any(isinstance(a, ast.Attribute) and a.attr == "data" for a in node.args))):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert not found, f"the data section replaced outside config.with_data: {found}"


def test_docstrings_name_every_preset_and_every_data_module():
    from lmforge import config, data

    assert not [p for p in config.preset_names() if f"`{p}`" not in config.__doc__]
    assert not [p.name for p in (SRC / "data").glob("*.py") if p.name != "__init__.py" and p.name not in data.__doc__]


# Defined for use outside the package only, each with who uses it.
USED_OUTSIDE = {
    "measured_training_memory": "benchmarks/memory_check.py and the memory tests measure what torch holds with it",
}


def unused_definitions(package: dict[str, Path] = PACKAGE) -> list[str]:
    """Top-level functions and classes no module of the package names (a decorator's registration
    counts; a string naming it counts, as the API's lazy table does)."""
    defined, named = [], set()
    for name, path in package.items():
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.decorator_list:
                defined.append((node.name, f"{name}.{node.name}"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                named.add(node.id)
            elif isinstance(node, ast.Attribute):
                named.add(node.attr)
            elif isinstance(node, ast.alias):
                named.add(node.name.rpartition(".")[2])
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                named.update(re.findall(r"\w+", node.value))
    return sorted(where for short, where in defined if short not in named and not short.startswith("__"))


def test_no_dead_code():
    unused = [where for where in unused_definitions() if where.rpartition(".")[2] not in USED_OUTSIDE]
    assert not unused, f"defined, never used by the package (remove, or name its user in USED_OUTSIDE): {unused}"
    stale = [name for name in USED_OUTSIDE if not any(w.endswith("." + name) for w in unused_definitions())]
    assert not stale, f"used by the package now, or gone: delete from USED_OUTSIDE: {stale}"


def test_the_dead_code_check_sees_an_unused_function(tmp_path):
    (tmp_path / "a.py").write_text("def used():\n    pass\n\ndef unused():\n    used()\n\n@register\nclass Filter:\n    pass\n")
    (tmp_path / "b.py").write_text('LAZY = {"x": ("a", "lazy")}\n\ndef lazy():\n    pass\n')
    assert unused_definitions({"lmforge.a": tmp_path / "a.py", "lmforge.b": tmp_path / "b.py"}) == ["lmforge.a.unused"]


def test_every_command_is_in_the_table_and_the_readme():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert list(sub.choices) == [c.name for c in COMMANDS]
    for c in COMMANDS:
        assert sub.choices[c.name].get_default("handler") is c.handler, c.name
    readme = (SRC.parents[1] / "README.md").read_text()
    missing = [c.name for c in COMMANDS if f"lmforge {c.name}" not in readme]
    assert not missing, f"commands not in README: {missing}"


@pytest.mark.parametrize("name", ["evaluate", "evaluate_tasks", "fill", "generate", "inspect", "prepare", "run",
                                  "RunDir", "tokenize", "train"])
def test_api_names_are_callable(name):
    import lmforge

    assert callable(getattr(lmforge, name))


def test_readme_layout_names_every_module():
    readme = (SRC.parents[1] / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.index("```", layout.index("```") + 3)]
    missing = [str(path.relative_to(SRC)) for path in SRC.rglob("*.py")
               if path.name != "__main__.py" and path.parent.name != "configs"
               and (path.name if path.name != "__init__.py" else path.parent.name + "/") not in layout]
    assert not missing, f"README's layout omits {missing}"
