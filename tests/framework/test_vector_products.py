"""framework/vector_products.py gives, bit for bit, the gradients torch gives a vector passed to
``backward`` or ``autograd.grad``, without importing sympy; a run that needs such products
(legendre's conditioning doctor) imports none."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from framework.vector_products import backward_with, grad_with
from tests.conftest import run_cli_watched


def graphs(dtype):
    """(output, inputs) pairs: a batched product of an expanded design (the vectorized launcher's
    check), and a gradient taken with create_graph (the doctor's Hessian-vector products)."""
    generator = torch.Generator().manual_seed(3)
    design = torch.randn(500, 3, generator=generator, dtype=dtype)
    columns = torch.randn(7, 3, 1, generator=generator, dtype=dtype, requires_grad=True)
    yield torch.bmm(design.expand(7, *design.shape), columns), [columns]
    x = torch.linspace(-3, 3, 200, dtype=dtype)
    coefficients = torch.randn(4, generator=generator, dtype=dtype, requires_grad=True)
    loss = ((coefficients[0] + coefficients[1] * x + coefficients[2] * x**2 + coefficients[3] * x**3 - x.sin())**2).sum()
    gradient, = torch.autograd.grad(loss, [coefficients], create_graph=True)
    yield gradient, [coefficients]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gradients_are_torchs_bit_for_bit(dtype):
    for output, inputs in graphs(dtype):
        vector = torch.randn(output.shape, generator=torch.Generator().manual_seed(5), dtype=dtype)
        ours = grad_with(output, inputs, vector, retain_graph=True)
        theirs = torch.autograd.grad(output, inputs, grad_outputs=vector, retain_graph=True)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
        backward_with(output, vector, retain_graph=True)
        by_backward = [x.grad.clone() for x in inputs]
        for x in inputs:
            x.grad = None
        output.backward(vector, retain_graph=True)
        for a, x in zip(by_backward, inputs):
            assert torch.equal(a, x.grad)
            assert torch.equal(a, ours[0])


def test_where_the_sum_would_differ_torch_computes_it():
    """A vector that needs a gradient (the product would add into it) and a complex output (its
    sum is no real scalar) go to torch's own call, with its results."""
    x = torch.ones(3, requires_grad=True)
    vector = torch.full((3,), 2.0, requires_grad=True)
    backward_with(x * 3, vector)
    assert vector.grad is None and torch.equal(x.grad, torch.full((3,), 6.0))
    z = torch.tensor([1 + 2j, 3 - 1j], requires_grad=True)
    direction = torch.tensor([0.5 - 1j, 2 + 0.25j])
    ours, = grad_with(z * z, [z], direction)
    theirs, = torch.autograd.grad(z * z, [z], grad_outputs=direction)
    assert torch.equal(ours, theirs)


def test_a_vector_of_another_shape_is_refused():
    columns = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="Mismatch in shape"):
        grad_with(columns * 2, [columns], torch.ones(1))  # broadcasting would have taken it


SYMPY_REPORT = textwrap.dedent("""
    import atexit, sys
    atexit.register(lambda: print("sympy imported:", "sympy" in sys.modules))
""")


def run_without_sympy(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", SYMPY_REPORT + textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_products_import_no_sympy():
    out = run_without_sympy("""
        import torch
        from framework.vector_products import backward_with, grad_with
        x = torch.ones(3, requires_grad=True)
        backward_with(x * 2, torch.ones(3))
        grad_with(x * 3, [x], torch.ones(3))
    """)
    assert "sympy imported: False" in out


def test_torchs_own_way_imports_it():
    """What the module avoids: if torch stops importing sympy here, it can go."""
    out = run_without_sympy("""
        import torch
        x = torch.ones(3, requires_grad=True)
        (x * 2).backward(torch.ones(3))
    """)
    assert "sympy imported: True" in out


def test_a_legendre_run_with_its_doctor_imports_no_sympy(tmp_path):
    done = run_cli_watched(SYMPY_REPORT, "+task=legendre", "trainer.max_steps=5", "hydra.run.dir=run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "doctor:" in done.stdout + done.stderr
    assert "sympy imported: False" in done.stdout
