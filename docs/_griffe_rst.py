"""A griffe extension that reads ravine's reStructuredText-flavoured docstrings as Markdown.

The docstrings are written to read well in ``help()`` and in an editor, with a little
reStructuredText: roles such as :func:`ravine.optim.adam`, and ``text::`` before an indented
literal block. mkdocstrings renders docstrings as Markdown, so before rendering this turns

- a role ``:func:`name``` (also ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``) into
  the code span ``name`` (``~a.b`` into ``b``, as Sphinx shows it);
- ``text::`` into ``text:`` (a line holding only ``::`` goes), and the indented block after it
  into a fenced code block, so no section parser reads it as text.

It also reads the two other ways the code documents a name, both of which ``help()`` and Sphinx
understand but griffe alone does not: ``#:`` comments just above an assignment (Sphinx's
attribute docstrings), and ``public = Documented``, another name for a class or function of the
same module (rendered as that object under the public name).
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`~?([^`]+)`")


def _role(m: re.Match) -> str:
    target = m.group(1)
    return f"`{target.rsplit('.', 1)[-1]}`" if m.group(0).split("`")[1].startswith("~") else f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with roles as code spans and literal blocks as fenced code."""
    lines = _ROLE.sub(_role, text).split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.rstrip().endswith("::"):
            out.append(line)
            continue
        head = line.rstrip()[:-2].rstrip()
        if head.strip():
            out.append(head + ":")
        base = _indent(line)
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        if not any(b.strip() for b in block):
            continue
        pad = " " * base
        out += ["", pad + "```"]
        out += [pad + b if b.strip() else "" for b in textwrap.dedent("\n".join(block)).strip("\n").split("\n")]
        out += [pad + "```", ""]
    return "\n".join(out)


def _comment_docstring(lines: list[str], lineno: int) -> str | None:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), joined; ``None`` if none."""
    found = []
    i = lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#:"):
        found.append(lines[i].lstrip()[2:].strip())
        i -= 1
    return "\n".join(reversed(found)) or None


class RstToMarkdown(griffe.Extension):
    """Rewrite each docstring with :func:`rst_to_markdown`; read ``#:`` comments and other names."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None and obj.is_attribute and obj.lineno:
            text = _comment_docstring(obj.module.lines, obj.lineno)
            if text:
                obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for module in _modules(pkg):
            for attr in module.attributes.values():
                target = module.members.get(str(attr.value)) if attr.docstring is None else None
                if target is not None and not target.is_alias and (target.is_class or target.is_function):
                    module.set_member(attr.name, griffe.Alias(attr.name, target, parent=module))


def _modules(module: griffe.Module):
    yield module
    for sub in module.modules.values():
        if not sub.is_alias:
            yield from _modules(sub)
