"""The whitelist expression parser: correct values and gradients, and rejection of everything else."""

import math

import pytest
import torch

import ravine.surfaces as rs
from ravine._expr import MAX_DEPTH, MAX_LENGTH, ExpressionError, parse_expression

PTS = torch.tensor([[0.3, -0.7], [1.2, 0.4], [-0.9, 1.5]], dtype=torch.float64)


def _xy():
    return PTS[:, 0], PTS[:, 1]


@pytest.mark.parametrize(
    "text, oracle",
    [
        ("sin(3*x)*y + x**2", lambda x, y: torch.sin(3 * x) * y + x**2),
        ("2**3**2", lambda x, y: torch.full_like(x, 512.0)),  # right-associative: 2**(3**2)
        ("-x**2", lambda x, y: -(x**2)),  # unary minus binds looser than **
        ("x^2 + y^2", lambda x, y: x**2 + y**2),
        ("2**-1 * x", lambda x, y: 0.5 * x),
        ("x - y - 1", lambda x, y: (x - y) - 1),  # left-associative
        ("x / y / 2", lambda x, y: (x / y) / 2),
        ("exp(-(x**2 + y**2)) * cos(pi*x)",
         lambda x, y: torch.exp(-(x**2 + y**2)) * torch.cos(math.pi * x)),
        ("log(1 + x**2) + sqrt(abs(y)) + tanh(x*y)",
         lambda x, y: torch.log(1 + x**2) + torch.sqrt(y.abs()) + torch.tanh(x * y)),
        ("sinh(x) + cosh(y) - tan(x/4)", lambda x, y: torch.sinh(x) + torch.cosh(y) - torch.tan(x / 4)),
        ("min(x, y) + max(x**2, e)",
         lambda x, y: torch.minimum(x, y) + torch.maximum(x**2, torch.tensor(math.e, dtype=torch.float64))),
        ("1.5e-1*x + .5 + 3.", lambda x, y: 0.15 * x + 3.5),
        ("7", lambda x, y: torch.full_like(x, 7.0)),
        ("  x\t* y ", lambda x, y: x * y),
    ],
)
def test_values_match_torch(text, oracle):
    f = parse_expression(text)
    x, y = _xy()
    got = f(PTS)
    assert got.shape == (3,)
    torch.testing.assert_close(got, oracle(x, y).to(torch.float64), rtol=1e-12, atol=1e-12)


def test_parsed_surface_gradient_and_hessian_match_closed_form():
    s = rs.parse("sin(3*x)*y + x**2")
    assert s.expression == "sin(3*x)*y + x**2" and s.minima == []
    x, y = _xy()
    g = s.grad(PTS)
    torch.testing.assert_close(g[:, 0], 3 * torch.cos(3 * x) * y + 2 * x)
    torch.testing.assert_close(g[:, 1], torch.sin(3 * x))
    H = s.hessian(PTS[1])
    xx, yy = PTS[1]
    want = torch.tensor([[-9 * torch.sin(3 * xx) * yy + 2, 3 * torch.cos(3 * xx)],
                         [3 * torch.cos(3 * xx), 0.0]], dtype=torch.float64)
    torch.testing.assert_close(H, want)


def test_constant_expression_has_zero_gradient():
    s = rs.parse("3 + pi")
    torch.testing.assert_close(s.value(PTS), torch.full((3,), 3 + math.pi, dtype=torch.float64))
    assert torch.equal(s.grad(PTS), torch.zeros_like(PTS))
    assert torch.equal(s.hessian(PTS[0]), torch.zeros(2, 2, dtype=torch.float64))


def test_float32_points_give_float32_values():
    f = parse_expression("x*y + 1")
    out = f(PTS.float())
    assert out.dtype == torch.float32


HOSTILE = [
    ("__import__('os')", 0, "unknown name"),
    ("x.__class__", 1, "unexpected character '.'"),
    ("lambda: 1", 0, "unknown name 'lambda'"),
    ("x + 1 : 2", 6, "unexpected character ':'"),
    ("9**9**9", 3, "exponent 3.8742e+08 is too large"),
    ("x**1000000", 3, "exponent 1e+06 is too large"),
    ("x**(2*9)", 3, "exponent 18 is too large"),
    ("", 0, "empty expression"),
    ("   ", 0, "empty expression"),
    ("x²", 1, "unexpected character '²'"),
    ("ｘ + 1", 0, "unexpected character"),
    ("x + ٣", 4, "unexpected character"),
    ("x\u200b+y", 1, "U+200B"),
    ("open('f')", 0, "unknown name 'open'"),
    ("globals()", 0, "unknown name 'globals'"),
    ("x[0]", 1, "unexpected character '['"),
    ("x; y", 1, "unexpected character ';'"),
    ("2x", 1, "write * for multiplication"),
    ("x y", 2, "write * for multiplication"),
    ("(x + 1", 6, "expected ')'"),
    ("x + 1)", 5, "unexpected ')'"),
    ("sin x", 4, "expected '(' after the function sin"),
    ("sin(x, y)", 8, "sin takes 1 argument(s), got 2"),
    ("max(x)", 5, "max takes 2 argument(s), got 1"),
    ("x +", 3, "found the end of the expression"),
    ("* x", 0, "expected a number"),
    ("1e400", 0, "too large"),
    ("1e7 * x", 0, "too large"),
    ("X + 1", 0, "unknown name 'X'"),
    ("x == y", 2, "unexpected character '='"),
    ("'x'", 0, "unexpected character"),
]


@pytest.mark.parametrize("text, position, problem", HOSTILE)
def test_hostile_and_malformed_inputs_are_rejected_with_position(text, position, problem):
    with pytest.raises(ExpressionError) as info:
        parse_expression(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.position == position
    msg = str(err)
    assert problem in msg
    assert f"at position {position}" in msg
    assert "allowed:" in msg


def test_too_long_input_is_rejected_before_parsing():
    text = "x+" * 50_000 + "x"  # 100k characters
    with pytest.raises(ExpressionError, match=f"at most {MAX_LENGTH} characters"):
        parse_expression(text)
    # a long message would be unhelpful: the excerpt is omitted for over-long input
    try:
        parse_expression("(" * 100_000)
    except ExpressionError as exc:
        assert len(str(exc)) < 1000


def test_nesting_depth_is_bounded():
    ok = "(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH
    assert parse_expression(ok)(PTS).shape == (3,)
    deep = "(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ExpressionError, match="nesting deeper than") as info:
        parse_expression(deep)
    assert info.value.position == MAX_DEPTH
    with pytest.raises(ExpressionError, match="nesting deeper than"):
        parse_expression("-" * 100 + "x")
    with pytest.raises(ExpressionError, match="nesting deeper than"):
        parse_expression("sin(" * 40 + "x" + ")" * 40)
    with pytest.raises(ExpressionError, match="nesting deeper than"):
        parse_expression("**".join(["x"] * 40))


def test_long_flat_expression_within_the_limit_is_fine():
    text = "+".join(["x"] * 249)  # 497 characters, a flat sum: no deep recursion anywhere
    assert len(text) <= MAX_LENGTH
    torch.testing.assert_close(parse_expression(text)(PTS), 249 * PTS[:, 0])


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError, match="expression must be a str"):
        parse_expression(b"x")  # type: ignore[arg-type]


def test_parse_surface_rejects_and_reports_position():
    with pytest.raises(ValueError, match=r"unknown name 'os' at position 0"):
        rs.parse("os")
