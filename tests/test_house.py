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


def imports_of(path: Path, name: str) -> set[str]:
    """Every lmforge module `path` imports, at the top or inside a function."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("lmforge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.startswith("lmforge"):
                out.add(mod)
                out |= {f"{mod}.{a.name}" for a in node.names}
    return out


# (importer prefix, forbidden prefixes): ARCHITECTURE.md's "which way imports go"
FORBIDDEN = [
    ("lmforge.model", ["lmforge.training", "lmforge.data", "lmforge.tokens", "lmforge.folders", "lmforge.cli"]),
    ("lmforge.data", ["lmforge.training", "lmforge.model", "lmforge.tasks", "lmforge.inspection", "lmforge.scaling",
                      "lmforge.cli", "lmforge.job"]),
    ("lmforge.training", ["lmforge.tasks", "lmforge.inspection", "lmforge.scaling", "lmforge.cli", "lmforge.job",
                          "lmforge.evaluation", "lmforge.report"]),
    ("lmforge.objectives", ["lmforge.training", "lmforge.cli"]),
    ("lmforge.cost", ["lmforge.training", "lmforge.cli"]),
    ("lmforge.config", ["lmforge.model", "lmforge.training", "lmforge.cli"]),
]


def layering_violations() -> list[str]:
    bad = []
    for name, path in modules():
        imported = imports_of(path, name)
        if name not in ("lmforge.cli", "lmforge.__main__") and "lmforge.cli" in imported:
            bad.append(f"{name} imports lmforge.cli")
        for prefix, forbidden in FORBIDDEN:
            if name == prefix or name.startswith(prefix + "."):
                for mod in imported:
                    if any(mod == f or mod.startswith(f + ".") for f in forbidden):
                        bad.append(f"{name} imports {mod}")
    return bad


def test_imports_only_go_down():
    assert not layering_violations()


def test_the_layering_check_sees_function_level_imports(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from lmforge.tasks.cloze import fill\n    import lmforge.cli\n")
    assert {"lmforge.tasks.cloze", "lmforge.cli"} <= imports_of(path, "lmforge.training.x")


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
    code = ("from lmforge import cost; from lmforge.config import load_config; "
            "cost.estimate(cost.shape_from_model(load_config('1b')), '1T', cost.find_hardware('h100'), 8)")
    assert modules_loaded_by(code, ("torch",)) == []


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
