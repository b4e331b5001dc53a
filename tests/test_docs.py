"""The API reference: every module says what it holds, every public name has a docstring, and the
reference builds with ``mkdocs build --strict`` (a docstring griffe cannot parse is a warning, and
under ``--strict`` a warning fails the build).

Names are read statically with griffe and the reference's own extension (``docs/_griffe_rst.py``),
so "has a docstring" means "renders with a description". The public modules are those the
reference renders (``::: module`` in ``docs/reference/*.md``); their public names are a module's
``__all__`` or, where it has none, the functions, classes and attributes it defines without a
leading underscore. Every module, private ones included, needs a module docstring.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import griffe
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CONFIG = ROOT / "mkdocs.yml"
EXTENSION = ROOT / "docs" / "_griffe_rst.py"


def reference_modules(docs: Path = ROOT / "docs") -> set[str]:
    """The modules the reference renders: every ``::: name`` line of its pages."""
    return {m for page in docs.rglob("*.md") for m in re.findall(r"^::: *([\w.]+)", page.read_text(), re.M)}


def _walk(module: griffe.Module):
    yield module
    for sub in module.modules.values():
        if not sub.is_alias:
            yield from _walk(sub)


def _public_names(module: griffe.Module) -> list[str]:
    if module.exports is not None:
        return [str(n) for n in module.exports]
    return [
        name
        for name, obj in module.members.items()
        if not name.startswith("_") and not obj.is_alias and not obj.is_module
    ]


def _has_docstring(obj) -> bool:
    if obj.is_alias:
        try:
            obj = obj.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return True  # an import from outside the package (torch's own names): not ours to document
    return obj.docstring is not None and bool(obj.docstring.value.strip())


def missing_docstrings(package: str, search_path: Path, public: set[str]) -> list[str]:
    """Each module without a docstring, and each public name of a ``public`` module without one."""
    extensions = griffe.load_extensions(f"{EXTENSION}:RstToMarkdown")
    pkg = griffe.load(
        package, search_paths=[str(search_path)], resolve_aliases=True, resolve_external=False, extensions=extensions
    )
    missing = []
    for module in _walk(pkg):
        if not _has_docstring(module):
            missing.append(f"{module.path} (module docstring; {Path(module.filepath).relative_to(search_path)})")
        if module.path not in public:
            continue
        for name in _public_names(module):
            if name not in module.members:
                missing.append(f"{module.path}.{name} (in __all__ but not defined)")
            elif not _has_docstring(module.members[name]):
                missing.append(f"{module.path}.{name}")
            else:
                missing += _undocumented_methods(module.members[name])
    return missing


def _undocumented_methods(obj) -> list[str]:
    """A public class's own public methods and properties without a docstring (the reference would
    leave them out silently)."""
    if obj.is_alias:
        try:
            obj = obj.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return []
    if not obj.is_class:
        return []
    return [
        f"{obj.path}.{name}"
        for name, member in obj.members.items()
        if not name.startswith("_") and not member.is_alias and member.is_function and not _has_docstring(member)
    ]


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    # Not -q: mkdocs counts warnings for --strict only at the log level that shows them.
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_every_module_and_public_name_has_a_docstring():
    missing = missing_docstrings("ravine", SRC, reference_modules())
    assert not missing, "no docstring:\n  " + "\n  ".join(missing)


def test_reference_has_a_page_per_public_module():
    cfg = yaml.safe_load(CONFIG.read_text())
    pages = {p for section in cfg["nav"] if isinstance(section, dict) for v in section.values() for p in _leaves(v)}
    for name in [
        "optim", "schedules", "surfaces", "simulate", "landscape", "curvature",
        "plots", "experiments", "report", "web", "cli",
    ]:  # fmt: skip
        page = f"reference/{name}.md"
        assert page in pages, f"mkdocs.yml nav has no page for ravine.{name}"
        assert f"::: ravine.{name}" in (ROOT / "docs" / page).read_text()


def _leaves(v):
    if isinstance(v, str):
        yield v
    elif isinstance(v, list):
        for item in v:
            yield from _leaves(item)
    elif isinstance(v, dict):
        for item in v.values():
            yield from _leaves(item)


def test_reference_builds_strict(tmp_path):
    out = mkdocs_build(CONFIG, tmp_path / "site")
    assert out.returncode == 0, "mkdocs build --strict failed:\n" + out.stdout + out.stderr
    assert (tmp_path / "site" / "reference" / "optim.html").is_file()


# ------------------------------------------------------------ the checks catch what they should


def _made_up_package(root: Path, body: str) -> Path:
    pkg = root / "src" / "madeup"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A made-up package."""\n\n' + body)
    return root / "src"


def test_a_public_name_without_a_docstring_is_caught(tmp_path):
    src = _made_up_package(
        tmp_path,
        '__all__ = ["good", "bad", "CONST", "other", "COMMENTED", "Thing"]\n\n'
        'def good():\n    """Documented."""\n\n'
        'class Thing:\n    """Documented."""\n\n'
        '    def told(self):\n        """Documented."""\n\n'
        "    def untold(self):\n        pass\n\n"
        "    def _private(self):\n        pass\n\n"
        "def bad():\n    pass\n\n"
        "CONST = 3\n"
        "other = good  # another name: documented by good's docstring\n"
        "#: Documented by a Sphinx-style comment.\n"
        "COMMENTED = 4\n",
    )
    (src / "madeup" / "quiet.py").write_text("def helper():\n    return 1\n")
    (src / "madeup" / "unlisted.py").write_text('"""Not in the reference."""\n\ndef helper():\n    return 1\n')
    assert missing_docstrings("madeup", src, {"madeup", "madeup.quiet"}) == [
        "madeup.bad",
        "madeup.CONST",
        "madeup.Thing.untold",
        "madeup.quiet (module docstring; madeup/quiet.py)",
        "madeup.quiet.helper",
    ]


def test_a_docstring_that_does_not_render_fails_the_build(tmp_path):
    src = _made_up_package(
        tmp_path,
        "def f(x: int) -> int:\n"
        '    """Twice ``x``.\n\n    Args:\n        y: not a parameter of f.\n    """\n'
        "    return 2 * x\n",
    )
    cfg = yaml.safe_load(CONFIG.read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("::: madeup\n")
    python = next(p for p in cfg["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    handler = python["mkdocstrings"]["handlers"]["python"]
    handler["paths"] = [str(src)]
    handler["options"]["extensions"] = [str(ROOT / e) for e in handler["options"].get("extensions", [])]
    cfg.update(docs_dir=str(tmp_path / "docs"), nav=[{"Home": "index.md"}])
    config = tmp_path / "mkdocs.yml"
    config.write_text(yaml.safe_dump(cfg))
    out = mkdocs_build(config, tmp_path / "site")
    assert out.returncode != 0
    assert "Parameter 'y' does not appear in the function signature" in out.stdout + out.stderr


@pytest.mark.parametrize(
    ("rst", "markdown"),
    [
        ("See :func:`ravine.optim.adam`, :class:`~ravine.optim.Optimizer`.", "See `ravine.optim.adam`, `Optimizer`."),
        ("Example::\n\n    x = 1\n      y\n\nAfter.", "Example:\n\n```\nx = 1\n  y\n```\n\nAfter."),
        ("Text\n\n::\n\n    code\n", "Text\n\n\n```\ncode\n```\n"),
    ],
)
def test_rst_markup_becomes_markdown(rst, markdown):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        from _griffe_rst import rst_to_markdown
    finally:
        sys.path.remove(str(ROOT / "docs"))
    assert rst_to_markdown(rst) == markdown
