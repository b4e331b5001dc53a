"""Property tests of the whitelist expression parser (hypothesis, derandomized: the same examples every run).

1. Random token streams (operators, numbers, names, parentheses, stray characters, in any order): the parser
   either rejects the text with an ``ExpressionError`` whose position lies inside the text and is quoted in
   the message, or returns a function whose values and gradients compute; never another exception.
2. Random expressions from the grammar: the parsed function equals the oracle, CPython's own parser of the
   same text with the operators and functions bound to torch (precedence, associativity, unary signs and
   right-associative powers are CPython's, which the grammar documents as its own).
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ravine._expr import BINARY_FUNCTIONS, MAX_LENGTH, UNARY_FUNCTIONS, ExpressionError, parse_expression

# derandomize: the examples are a function of the test alone, so CI sees the same ones every run.
PROPERTY = settings(
    derandomize=True, database=None, deadline=None, max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)

PTS = torch.tensor([[0.3, -0.7], [1.2, 0.4], [-0.9, 1.5], [0.0, 0.0]], dtype=torch.float64)

NUMBERS = ["0", "1", "2", "0.5", ".25", "3.", "1e3", "1e-3", "2E+2", "007", "1e999", "9999999", "1.5e1"]
NAMES = ["x", "y", "pi", "e", *UNARY_FUNCTIONS, *BINARY_FUNCTIONS, "foo", "__import__", "lambda", "X", "x1", "_"]
OPERATORS = ["+", "-", "*", "/", "**", "^", "(", ")", ",", "(", ")"]
STRAY = [".", ":", "[", "]", "'", '"', "\\", "\n", "=", "@", "!", "#", "$", "\u00e9", "\x00", "\U0001d465", "\u200b"]

token_streams = st.lists(
    st.one_of(st.sampled_from(NUMBERS), st.sampled_from(NAMES), st.sampled_from(OPERATORS), st.sampled_from(STRAY)),
    max_size=80,
).flatmap(
    lambda tokens: st.lists(st.sampled_from(["", "", " ", "\t"]), min_size=len(tokens), max_size=len(tokens)).map(
        lambda gaps: "".join(g + t for g, t in zip(gaps, tokens))
    )
)


def _parse_or_reject(text: str):
    """The parsed function, or ``None`` after checking that the rejection names a position in the text."""
    try:
        return parse_expression(text)
    except ExpressionError as exc:
        assert 0 <= exc.position <= max(len(text), MAX_LENGTH)
        assert f"at position {exc.position}" in str(exc)
        return None


def _evaluates(fn) -> None:
    xy = PTS.clone().requires_grad_(True)
    out = fn(xy)
    assert out.shape == (len(PTS),) and out.dtype == torch.float64
    if out.requires_grad:  # the gradient computes too (surfaces differentiate the parsed function)
        (grad,) = torch.autograd.grad(out.sum(), xy, allow_unused=True, materialize_grads=True)
        assert grad.shape == PTS.shape


@pytest.mark.timeout(120)
@PROPERTY
@given(token_streams)
def test_random_token_streams_are_rejected_with_a_position_or_evaluate(text):
    fn = _parse_or_reject(text)
    if fn is not None:
        _evaluates(fn)


@pytest.mark.timeout(120)
@PROPERTY
@given(st.text(max_size=MAX_LENGTH + 20))
def test_arbitrary_unicode_is_rejected_with_a_position_or_evaluates(text):
    fn = _parse_or_reject(text)
    if fn is not None:
        _evaluates(fn)


# ------------------------------------------------------------------------------------- grammar vs CPython
LEAVES = ["0", "1", "2", "3", "0.5", ".25", "2.", "1e-1", "1.5e1", "pi", "e", "x", "y", "x", "y"]


@st.composite
def expressions(draw, depth: int = 3) -> tuple[str, str]:
    """A pair (text for ravine, the same expression for CPython): ``^`` becomes ``**`` and each number
    literal a float64 tensor, so that CPython computes with torch's arithmetic as the parser does."""
    terms = draw(st.integers(1, 3 if depth else 2))
    ours, oracle = [], []
    for i in range(terms):
        if i:
            op = draw(st.sampled_from(["+", "-", "*", "/", "+", "*"]))
            ours.append(f" {op} ")
            oracle.append(f" {op} ")
        a, b = draw(_unary(depth))
        ours.append(a)
        oracle.append(b)
    return "".join(ours), "".join(oracle)


@st.composite
def _unary(draw, depth: int) -> tuple[str, str]:
    signs = "".join(draw(st.lists(st.sampled_from("+-"), max_size=2)))
    base, base_oracle = draw(_atom(depth))
    if draw(st.booleans()) and draw(st.booleans()):
        op = draw(st.sampled_from(["**", "^"]))
        exponent, exponent_oracle = draw(_unary(depth - 1)) if depth else draw(_atom(0))
        return f"{signs}{base}{op}{exponent}", f"{signs}{base_oracle}**{exponent_oracle}"
    return signs + base, signs + base_oracle


@st.composite
def _atom(draw, depth: int) -> tuple[str, str]:
    kind = draw(st.sampled_from(["leaf", "leaf", "paren", "call1", "call2"])) if depth else "leaf"
    if kind == "leaf":
        leaf = draw(st.sampled_from(LEAVES))
        if leaf[0].isdigit() or leaf[0] == ".":
            return leaf, f"_c({leaf})"
        return leaf, leaf
    inner, inner_oracle = draw(expressions(depth - 1))
    if kind == "paren":
        return f"({inner})", f"({inner_oracle})"
    if kind == "call1":
        name = draw(st.sampled_from(sorted(UNARY_FUNCTIONS)))
        return f"{name}({inner})", f"{name}({inner_oracle})"
    other, other_oracle = draw(expressions(depth - 1))
    name = draw(st.sampled_from(sorted(BINARY_FUNCTIONS)))
    return f"{name}({inner}, {other})", f"{name}({inner_oracle}, {other_oracle})"


def _oracle(text: str) -> torch.Tensor:
    """CPython's evaluation of ``text``, an expression this test generated (never user input), over torch."""
    namespace = {
        "__builtins__": {},
        "_c": lambda v: torch.tensor(v, dtype=torch.float64),
        "x": PTS[:, 0],
        "y": PTS[:, 1],
        "pi": torch.tensor(torch.pi, dtype=torch.float64),
        "e": torch.tensor(torch.e, dtype=torch.float64),
        **UNARY_FUNCTIONS,
        **BINARY_FUNCTIONS,
    }
    out = eval(compile(text, "<generated>", "eval"), namespace)  # noqa: S307 - the test's own generated text
    return torch.as_tensor(out, dtype=torch.float64) + torch.zeros(len(PTS), dtype=torch.float64)


@pytest.mark.timeout(120)
@settings(PROPERTY, max_examples=150)  # each example builds and evaluates two trees: fewer, still deterministic
@given(expressions())
def test_grammar_expressions_equal_cpython_evaluation(pair):
    ours, oracle_text = pair
    try:
        fn = parse_expression(ours)
    except ExpressionError as exc:
        # the only rejections of grammatical text: a constant exponent beyond the bound (e.g. 3**3**3), or
        # text longer than the bound
        too_long = len(ours) > MAX_LENGTH and "characters long" in exc.problem
        assert too_long or ("exponent" in exc.problem and "too large" in exc.problem), (ours, exc.problem)
        return
    with torch.no_grad():
        got = fn(PTS)
    want = _oracle(oracle_text)
    both = torch.isfinite(got) & torch.isfinite(want)
    # compared where both are finite: past an infinite intermediate (log(0) = -inf) torch's pow(t, -0.5) is
    # rsqrt (nan at -inf) where C's pow of a tensor exponent gives 0; neither is a value a surface can use.
    torch.testing.assert_close(got[both], want[both], rtol=1e-7, atol=1e-9, msg=lambda m: f"{ours!r}: {m}")


def test_constant_division_by_zero_is_ieee_not_an_exception():
    """Found by the token-stream property: ``1/0`` raised ZeroDivisionError (Python floats), not inf."""
    assert torch.equal(parse_expression("1/0")(PTS), torch.full((4,), torch.inf, dtype=torch.float64))
    assert torch.isnan(parse_expression("0/0 + x")(PTS)).all()
    with pytest.raises(ExpressionError, match="exponent inf is too large at position 3"):
        parse_expression("x**(1/0)")
