"""Audit bundle configs before running them: configs execute code.

MONAI resolves every ``_target_`` to an importable callable and passes every ``$`` expression to
``eval``. A config from elsewhere can therefore run anything (``$os.system(...)``). This module lists
every ``_target_`` and expression that reaches outside ``monai``, ``torch`` and ``cryoet_monai`` (and
a few harmless builtins), so ``cryoet-monai run --safe`` can refuse before anything runs.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from collections.abc import Iterator
from pathlib import Path

import yaml

TRUSTED_MODULES = ("monai", "torch", "cryoet_monai")
SAFE_STDLIB = {
    "os": {f"os.path.{f}" for f in "join exists isfile isdir dirname basename abspath splitext expanduser".split()}
    | {"os.getcwd", "os.sep", "os.environ", "os.environ.get"},
    "copy": {"copy.copy", "copy.deepcopy"},
    "json": {"json.loads", "json.dumps"},
}
SAFE_BUILTINS = frozenset(
    "len list tuple dict set range int float str bool min max sum abs round zip enumerate sorted reversed isinstance any all print None True False".split()
)


def load_config_file(path) -> dict:
    """Read a YAML or JSON bundle config."""
    path = Path(path)
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not a readable config ({err})") from err
    return data if isinstance(data, dict) else {}


def _walk(node, where: str) -> Iterator[tuple[str, str, str]]:
    """Yield ``(where, kind, text)`` for every ``_target_`` and ``$`` expression."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield where, "_target_", value
            else:
                yield from _walk(value, f"{where}#{key}" if where else str(key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{where}#{i}")
    elif isinstance(node, str) and node.startswith("$"):
        yield where, "expression", node[1:]


def _trusted_module(name: str) -> bool:
    return name.split(".")[0] in TRUSTED_MODULES


def _target_problem(target: str) -> str | None:
    if "." not in target:
        from monai.bundle.config_item import ComponentLocator

        return None if ComponentLocator().get_component_module_name(target) else f"'{target}' is not a MONAI component"
    return None if _trusted_module(target) else f"imports '{target.rsplit('.', 1)[0]}'"


def _dotted(node: ast.AST, parents: dict) -> str:
    """The longest attribute chain ``a.b.c`` that starts at the name ``node``."""
    name = node.id
    while isinstance(parents.get(node), ast.Attribute):
        node = parents[node]
        name += "." + node.attr
    return name


def _parse(code: str):
    return ast.parse(re.sub(r"@[\w#]+", "__ref_", code).strip(), mode="exec")


def trusted_aliases(expressions) -> set[str]:
    """Names bound by ``import trusted.module as name`` anywhere in a config."""
    names = set()
    for code in expressions:
        try:
            tree = _parse(code)
        except SyntaxError:
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Import):
                names |= {a.asname for a in n.names if a.asname and _trusted_module(a.name)}
    return names


def _expression_problem(code: str, aliases=frozenset()) -> str | None:
    try:
        tree = _parse(code)
    except SyntaxError as err:
        return f"does not parse ({err.msg})"
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    defined = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    defined |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            bad = [a.name for a in n.names if not (_trusted_module(a.name) or a.name in SAFE_STDLIB)]
            if bad:
                return f"imports {bad}"
        elif isinstance(n, ast.ImportFrom) and not _trusted_module(n.module or ""):
            return f"imports from '{n.module}'"
        elif isinstance(n, ast.Attribute) and n.attr.startswith("__"):
            return f"uses dunder attribute '{n.attr}'"
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            name = n.id
            if name.startswith("__ref_") or name in defined or name in aliases or name in TRUSTED_MODULES or name in SAFE_BUILTINS:
                continue
            if name in SAFE_STDLIB and _dotted(n, parents) in SAFE_STDLIB[name]:
                continue
            what = _dotted(n, parents) if name in SAFE_STDLIB else name
            return f"uses '{what}'" + (" (a builtin)" if hasattr(builtins, name) else "")
    return None


def audit_config(data: dict, source: str = "config") -> list[str]:
    """Every ``_target_`` / expression of a config that reaches outside the trusted modules.

    Args:
        data: the parsed config.
        source: file name used in the report.

    Returns:
        One line per finding: ``file: id: kind `text` — why``; empty when the config is clean.
    """
    entries = list(_walk(data, ""))
    aliases = trusted_aliases(text for _, kind, text in entries if kind == "expression")
    findings = []
    for where, kind, text in entries:
        problem = _target_problem(text) if kind == "_target_" else _expression_problem(text, aliases)
        if problem:
            findings.append(f"{source}: {where or '<root>'}: {kind} `{text.strip()}` — {problem}")
    return findings


def audit_files(paths, root=None) -> list[str]:
    """:func:`audit_config` over several config files, named relative to ``root`` when given."""
    return [
        line
        for p in map(Path, paths)
        for line in audit_config(load_config_file(p), p.relative_to(root).as_posix() if root else str(p))
    ]
