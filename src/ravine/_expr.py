"""A whitelist parser for surface expressions such as ``"sin(3*x)*y + x**2"``.

User text is *parsed*, never executed: no ``eval``, no ``exec``, no ``compile``, no sympy. The text goes
through a tokenizer and a recursive-descent parser into a small syntax tree whose nodes are only numbers,
the variables ``x`` and ``y``, the constants ``pi`` and ``e``, the operators below, and a fixed set of
functions. The tree is then compiled into nested closures over torch operations, so the result is an
ordinary differentiable function of two tensors.

Grammar (``^`` is accepted as a synonym of ``**``)::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := ("-" | "+") unary | power
    power := atom ("**" unary)?                 # right-associative: 2**3**2 == 2**9; -x**2 == -(x**2)
    atom  := NUMBER | "x" | "y" | "pi" | "e" | FUNC "(" expr ("," expr)? ")" | "(" expr ")"

Bounds (every one of them is checked before any tensor work happens, so hostile input is rejected in
microseconds): at most :data:`MAX_LENGTH` characters, nesting (parentheses, function calls, unary signs,
chained powers) at most :data:`MAX_DEPTH` deep, number literals at most :data:`MAX_NUMBER` in magnitude, and
a constant exponent (one that does not involve ``x`` or ``y``) at most :data:`MAX_EXPONENT` in magnitude.
Every rejection is an :class:`ExpressionError` (a ``ValueError``) whose message gives the 0-based position
of the problem, a caret under the offending text, and what is allowed there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

MAX_LENGTH = 500
MAX_DEPTH = 32
MAX_NUMBER = 1e6
MAX_EXPONENT = 16.0

#: Functions of one argument: name -> torch operation.
UNARY_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sin": torch.sin,
    "cos": torch.cos,
    "tan": torch.tan,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "tanh": torch.tanh,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
}
#: Functions of two arguments.
BINARY_FUNCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "min": torch.minimum,
    "max": torch.maximum,
}
CONSTANTS = {"pi": math.pi, "e": math.e}
VARIABLES = ("x", "y")

ALLOWED = (
    "numbers (like 3, 0.5, 1e-3), the variables x and y, the constants pi and e, the operators "
    "+ - * / ** (or ^), parentheses, and the functions "
    + ", ".join(f"{f}(a)" for f in UNARY_FUNCTIONS)
    + ", "
    + ", ".join(f"{f}(a, b)" for f in BINARY_FUNCTIONS)
)

_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_OPERATORS = "+-*/^(),"


class ExpressionError(ValueError):
    """A rejected expression. ``position`` is the 0-based offset of the problem in the text."""

    def __init__(self, text: str, position: int, problem: str, allowed: str = ALLOWED):
        self.text = text
        self.position = position
        self.problem = problem
        excerpt = ""
        if len(text) <= MAX_LENGTH:
            lo = max(0, position - 30)
            hi = min(len(text), position + 30)
            prefix = "..." if lo > 0 else ""
            suffix = "..." if hi < len(text) else ""
            shown = prefix + text[lo:hi] + suffix
            caret = " " * (len(prefix) + position - lo) + "^"
            excerpt = f"\n    {shown}\n    {caret}"
        super().__init__(f"invalid expression: {problem} at position {position}{excerpt}\nallowed: {allowed}")


# ----------------------------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class _Token:
    kind: str  # "num", "name", "op", "end", or "bad" (a problem reported when the parser reaches it)
    text: str
    pos: int
    value: float = 0.0
    allowed: str = ALLOWED


def _tokenize(text: str) -> list[_Token]:
    """Split ``text`` into tokens; the first unreadable character (or oversized number) ends the list."""
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t":
            i += 1
        elif c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
            if j < n and text[j] == ".":
                j += 1
                while j < n and text[j] in _DIGITS:
                    j += 1
            if j < n and text[j] in "eE":
                k = j + 1
                if k < n and text[k] in "+-":
                    k += 1
                if k < n and text[k] in _DIGITS:  # only an exponent if digits follow; "2e" is 2 then e
                    while k < n and text[k] in _DIGITS:
                        k += 1
                    j = k
            literal = text[i:j]
            value = float(literal)  # a plain ASCII decimal literal: float() cannot run code or loop long
            if not math.isfinite(value) or abs(value) > MAX_NUMBER:
                tokens.append(_Token("bad", f"number {literal!r} is too large", i,
                                     allowed=f"numbers of magnitude at most {MAX_NUMBER:g}"))
                break
            tokens.append(_Token("num", literal, i, value))
            i = j
        elif c in _LETTERS:
            j = i
            while j < n and (text[j] in _LETTERS or text[j] in _DIGITS):
                j += 1
            tokens.append(_Token("name", text[i:j], i))
            i = j
        elif c == "*" and i + 1 < n and text[i + 1] == "*":
            tokens.append(_Token("op", "**", i))
            i += 2
        elif c in _OPERATORS:
            tokens.append(_Token("op", "**" if c == "^" else c, i))
            i += 1
        else:
            shown = repr(c) if c.isprintable() else f"U+{ord(c):04X}"
            tokens.append(_Token("bad", f"unexpected character {shown}", i))
            break
    tokens.append(_Token("end", "", n))
    return tokens


# ----------------------------------------------------------------------------------------------- tree
# Nodes are tuples, small and immutable:
#   ("num", value) | ("var", index) | ("neg", node) | ("sum", first, ((op, node), ...))
#   | ("prod", first, ((op, node), ...)) | ("pow", base, exponent) | ("call", name, (args...))
# Sums and products are n-ary so that a long flat expression (x+x+...+x) is a shallow tree.


def _is_constant(node: tuple) -> bool:
    kind = node[0]
    if kind == "num":
        return True
    if kind == "var":
        return False
    if kind == "neg":
        return _is_constant(node[1])
    if kind in ("sum", "prod"):
        return _is_constant(node[1]) and all(_is_constant(n) for _, n in node[2])
    if kind == "pow":
        return _is_constant(node[1]) and _is_constant(node[2])
    return all(_is_constant(a) for a in node[2])


def _constant_value(node: tuple) -> float:
    """Evaluate a constant subtree in float64 (exponents inside are already bounded, so this is fast)."""
    with torch.no_grad():
        out = _compile(node)(torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64))
    return float(out)


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    # helpers
    @property
    def tok(self) -> _Token:
        tok = self.tokens[self.i]
        if tok.kind == "bad":  # errors are reported in reading order, when the parser reaches them
            raise ExpressionError(self.text, tok.pos, tok.text, tok.allowed)
        return tok

    def _enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(
                self.text, pos, f"nesting deeper than {MAX_DEPTH} levels",
                f"at most {MAX_DEPTH} nested parentheses, function calls, signs or powers",
            )

    def _expect(self, op: str, what: str) -> _Token:
        tok = self.tok
        if tok.kind != "op" or tok.text != op:
            found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
            raise ExpressionError(self.text, tok.pos, f"expected {what}, found {found}")
        self.i += 1
        return tok

    # grammar
    def parse(self) -> tuple:
        if self.tok.kind == "end":
            raise ExpressionError(self.text, 0, "empty expression")
        node = self._expr()
        tok = self.tok
        if tok.kind != "end":
            if tok.kind in ("num", "name") or tok.text == "(":
                problem = f"unexpected {tok.text!r} (write * for multiplication)"
            else:
                problem = f"unexpected {tok.text!r}"
            raise ExpressionError(self.text, tok.pos, problem)
        return node

    def _expr(self) -> tuple:
        first = self._term()
        rest = []
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.tok.text
            self.i += 1
            rest.append((op, self._term()))
        return ("sum", first, tuple(rest)) if rest else first

    def _term(self) -> tuple:
        first = self._unary()
        rest = []
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.tok.text
            self.i += 1
            rest.append((op, self._unary()))
        return ("prod", first, tuple(rest)) if rest else first

    def _unary(self) -> tuple:
        tok = self.tok
        if tok.kind == "op" and tok.text in "+-":
            self._enter(tok.pos)
            self.i += 1
            inner = self._unary()
            self.depth -= 1
            return ("neg", inner) if tok.text == "-" else inner
        return self._power()

    def _power(self) -> tuple:
        base = self._atom()
        tok = self.tok
        if tok.kind == "op" and tok.text == "**":
            self._enter(tok.pos)
            self.i += 1
            exp_pos = self.tok.pos
            exponent = self._unary()
            self.depth -= 1
            if _is_constant(exponent):
                p = _constant_value(exponent)
                if not math.isfinite(p) or abs(p) > MAX_EXPONENT:
                    raise ExpressionError(
                        self.text, exp_pos, f"exponent {p:g} is too large",
                        f"constant exponents of magnitude at most {MAX_EXPONENT:g}",
                    )
                exponent = ("num", p)
            return ("pow", base, exponent)
        return base

    def _atom(self) -> tuple:
        tok = self.tok
        if tok.kind == "num":
            self.i += 1
            return ("num", tok.value)
        if tok.kind == "name":
            name = tok.text
            if name in VARIABLES:
                self.i += 1
                return ("var", VARIABLES.index(name))
            if name in CONSTANTS:
                self.i += 1
                return ("num", CONSTANTS[name])
            if name in UNARY_FUNCTIONS or name in BINARY_FUNCTIONS:
                self.i += 1
                self._enter(tok.pos)
                self._expect("(", f"'(' after the function {name}")
                args = [self._expr()]
                while self.tok.kind == "op" and self.tok.text == ",":
                    self.i += 1
                    args.append(self._expr())
                close = self.tok
                self._expect(")", f"')' closing {name}(")
                self.depth -= 1
                arity = 1 if name in UNARY_FUNCTIONS else 2
                if len(args) != arity:
                    raise ExpressionError(
                        self.text, close.pos, f"{name} takes {arity} argument(s), got {len(args)}"
                    )
                return ("call", name, tuple(args))
            raise ExpressionError(self.text, tok.pos, f"unknown name {name!r}")
        if tok.kind == "op" and tok.text == "(":
            self._enter(tok.pos)
            self.i += 1
            inner = self._expr()
            self._expect(")", "')'")
            self.depth -= 1
            return inner
        found = "the end of the expression" if tok.kind == "end" else repr(tok.text)
        raise ExpressionError(self.text, tok.pos, f"expected a number, x, y, a function or '(', found {found}")


# ----------------------------------------------------------------------------------------------- compile
def _divide(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor | float:
    """``a / b`` with IEEE semantics also for two constants (``1/0`` is inf, ``0/0`` nan, as on tensors);
    Python's float division would raise ``ZeroDivisionError`` instead."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a / b
    return float(torch.tensor(a, dtype=torch.float64) / b)


def _compile(node: tuple) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor | float]:
    kind = node[0]
    if kind == "num":
        value = node[1]
        return lambda x, y: value
    if kind == "var":
        return (lambda x, y: x) if node[1] == 0 else (lambda x, y: y)
    if kind == "neg":
        inner = _compile(node[1])
        return lambda x, y: -inner(x, y)
    if kind in ("sum", "prod"):
        first = _compile(node[1])
        rest = [(op, _compile(n)) for op, n in node[2]]

        def chain(x, y):
            acc = first(x, y)
            for op, f in rest:
                v = f(x, y)
                if op == "+":
                    acc = acc + v
                elif op == "-":
                    acc = acc - v
                elif op == "*":
                    acc = acc * v
                else:
                    acc = _divide(acc, v)
            return acc

        return chain
    if kind == "pow":
        base = _compile(node[1])
        exponent = _compile(node[2])

        def power(x, y):
            b = base(x, y)
            p = exponent(x, y)
            if not isinstance(b, torch.Tensor) and not isinstance(p, torch.Tensor):
                b = torch.as_tensor(b, dtype=x.dtype, device=x.device)
            return torch.pow(b, p)

        return power
    name = node[1]
    args = [_compile(a) for a in node[2]]

    def as_tensor(v, x):
        return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=x.dtype, device=x.device)

    if name in UNARY_FUNCTIONS:
        fn1 = UNARY_FUNCTIONS[name]
        (a,) = args
        return lambda x, y: fn1(as_tensor(a(x, y), x))
    fn2 = BINARY_FUNCTIONS[name]
    a, b = args
    return lambda x, y: fn2(as_tensor(a(x, y), x), as_tensor(b(x, y), x))


def parse_expression(text: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Parse ``text`` into ``f(xy) -> value`` on tensors of shape ``(..., 2)`` (output shape ``(...)``).

    Raises :class:`ExpressionError` (a ``ValueError``) with the position of the problem for anything outside
    the whitelist (see the module docstring), and ``TypeError`` if ``text`` is not a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"expression must be a str, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(
            text, MAX_LENGTH, f"expression is {len(text)} characters long",
            f"at most {MAX_LENGTH} characters",
        )
    tree = _Parser(text).parse()
    fn = _compile(tree)

    def value(xy: torch.Tensor) -> torch.Tensor:
        x, y = xy[..., 0], xy[..., 1]
        out = fn(x, y)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            out = torch.as_tensor(out, dtype=x.dtype, device=x.device) + torch.zeros_like(x)
        return out

    return value
