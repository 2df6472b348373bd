"""The shape of the house: one owner for each run-file name, imports that only go down, a complete
command table. These read the source tree, so a change that breaks the shape fails here."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import run_dir
from lmforge.cli import COMMANDS, build_parser

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"
RUN_FILES = [run_dir.CONFIG_FILE, run_dir.METRICS_FILE, run_dir.SUMMARY_FILE, run_dir.MODEL_FILE,
             run_dir.STATE_TENSORS, run_dir.STATE_JSON, run_dir.DIVERGED_FILE, run_dir.ERROR_FILE,
             run_dir.TRAIN_LOG]


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


def run_files_spelled(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every code string that names a run file."""
    return [(node.lineno, node.value) for node in code_strings(ast.parse(source))
            if any(re.search(rf"(?<![\w.]){re.escape(f)}(?!\w)", node.value) for f in RUN_FILES)]


def test_no_module_but_the_run_folder_spells_a_run_file():
    found = [f"{path.relative_to(SRC)}:{line} {value!r}" for name, path in modules() if name != "lmforge.run_dir"
             for line, value in run_files_spelled(path.read_text())]
    assert not found, "run-file names spelled outside run_dir.py:\n" + "\n".join(found)


def test_the_run_file_check_catches_a_literal():
    source = '"""summary.json in a docstring is fine"""\npath = run / "summary.json"\nkey = "train.log_interval"\n'
    assert run_files_spelled(source) == [(2, "summary.json")]


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
    ("lmforge.model", ["lmforge.training", "lmforge.data", "lmforge.tokens", "lmforge.run_dir", "lmforge.cli"]),
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
    code = ("from lmforge import cost, hardware; from lmforge.config import load_config; "
            "from lmforge.scaling.law import LAWS; "
            "cost.estimate(cost.shape_from_model(load_config('1b')), '1T', hardware.find_hardware('h100'), 8); "
            "cost.plan_run('1e22flops', hardware.find_hardware('h100'), None, LAWS['chinchilla'])")
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
