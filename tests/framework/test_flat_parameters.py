"""One flat tensor for the optimizer (framework.flat_parameters) gives every parameter exactly the
values torch's optimizer gives the parameters one by one."""

from __future__ import annotations

import pytest
import torch

from framework.flat_parameters import can_flatten, flatten, lending_forward

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01),
    "sgd momentum nesterov wd": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True,
                                                               weight_decay=0.01),
    "adam amsgrad": lambda params: torch.optim.Adam(params, lr=0.01, amsgrad=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01),
    "nadam": lambda params: torch.optim.NAdam(params, lr=0.01),
    "radam": lambda params: torch.optim.RAdam(params, lr=0.01),
    "rmsprop centered": lambda params: torch.optim.RMSprop(params, lr=0.01, centered=True, momentum=0.5),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=0.1),
    "adamax": lambda params: torch.optim.Adamax(params, lr=0.01),
}


class Small(torch.nn.Module):
    """Parameters of several shapes, all in every forward."""

    dense_gradients = True

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.randn(()))
        self.weight = torch.nn.Parameter(torch.randn(3, 2))
        self.bias = torch.nn.Parameter(torch.randn(3))

    def forward(self, x):
        return self.scale * torch.tanh(x @ self.weight.T + self.bias)


def data():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(16, 2, generator=generator), torch.randn(16, 3, generator=generator)


def train(make_optimizer, dtype, *, flat: bool, clear=None, steps: int = 30, with_closure: bool = False):
    torch.manual_seed(0)
    model = Small().to(dtype)
    x, y = (t.to(dtype) for t in data())
    parameters = list(model.parameters())
    if flat:
        assert can_flatten(model, parameters, make_optimizer(parameters))
        optimizer = flatten(make_optimizer, parameters)
    else:
        optimizer = make_optimizer(parameters)
    for step in range(steps):
        def closure():
            if clear is not None:
                clear(model, optimizer, step)
            else:
                optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        if with_closure:
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_flat_updates_equal_the_optimizer_over_each_parameter(name, dtype):
    one_by_one = train(OPTIMIZERS[name], dtype, flat=False)
    flat = train(OPTIMIZERS[name], dtype, flat=True)
    assert one_by_one.keys() == flat.keys()
    for key in one_by_one:
        assert torch.equal(one_by_one[key], flat[key]), (name, key)
    assert not torch.equal(one_by_one["weight"], train(OPTIMIZERS[name], dtype, flat=False, steps=0)["weight"])


def set_to_none_by_the_model(model, optimizer, step):
    model.zero_grad()  # sets every parameter's .grad to None: the flat gradient must still be filled


def set_to_none_by_the_optimizer(model, optimizer, step):
    optimizer.zero_grad(set_to_none=True)


def replaced_by_assignment(model, optimizer, step):
    optimizer.zero_grad()
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)


@pytest.mark.parametrize("with_closure", [False, True], ids=["step()", "step(closure)"])
@pytest.mark.parametrize("clear", [set_to_none_by_the_model, set_to_none_by_the_optimizer, replaced_by_assignment])
def test_gradients_cleared_or_replaced_by_a_plugin_still_reach_the_update(clear, with_closure):
    expected = train(OPTIMIZERS["adam amsgrad"], torch.float32, flat=False, with_closure=with_closure)
    got = train(OPTIMIZERS["adam amsgrad"], torch.float32, flat=True, clear=clear, with_closure=with_closure)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_parameters_stay_the_models_with_their_names_and_state_dict():
    torch.manual_seed(0)
    model = Small()
    before = {name: p for name, p in model.named_parameters()}
    optimizer = flatten(OPTIMIZERS["nadam"], list(model.parameters()))
    assert dict(model.named_parameters()) == before  # the same Parameter objects
    (flat,) = optimizer.param_groups[0]["params"]
    assert flat.numel() == 1 + 6 + 3
    with torch.no_grad():
        flat.add_(1.0)  # an update of the flat tensor is an update of every parameter
    state = model.state_dict()
    assert torch.equal(torch.cat([state[name].reshape(-1) for name in ("scale", "weight", "bias")]),
                       flat.detach().reshape(-1))
    model.load_state_dict({name: torch.zeros_like(value) for name, value in state.items()})
    assert torch.count_nonzero(flat) == 0  # loading (a resume) writes into the flat tensor


@pytest.mark.parametrize("name", ["nadam", "adagrad", "rmsprop centered", "sgd momentum nesterov wd"])
def test_the_optimizer_state_is_saved_flat_and_a_loaded_one_goes_on_bit_for_bit(name):
    # The flat tensor is a column (n, 1); its optimizer state is saved as (n,), as checkpoints held
    # it before, and as the vectorized launcher gives each job; loading (n,) state goes on alike.
    def run(steps, saved=None):
        torch.manual_seed(0)
        model = Small()
        x, y = data()
        optimizer = flatten(OPTIMIZERS[name], list(model.parameters()))
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
        for _ in range(steps):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
        return model, optimizer

    model, optimizer = run(5)
    (flat,) = optimizer.param_groups[0]["params"]
    assert flat.shape == (10, 1)
    saved = optimizer.state_dict()
    per_element = [key for key, value in saved["state"][0].items() if value.dim() > 0]
    assert per_element and all(saved["state"][0][key].shape == (10,) for key in per_element)
    assert all(optimizer.state[flat][key].shape == (10, 1) for key in per_element)  # the live state is untouched
    checkpoint = {"model": {k: v.clone() for k, v in model.state_dict().items()},
                  "optimizer": {"state": {0: {k: v.clone() for k, v in saved["state"][0].items()}},
                                "param_groups": saved["param_groups"]}}
    for _ in range(5):  # the same run, going on
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(data()[0]), data()[1]).backward()
        optimizer.step()
    resumed, resumed_optimizer = run(5, saved=checkpoint)
    assert all(value.shape == (10,) for value in checkpoint["optimizer"]["state"][0].values() if value.dim() > 0)
    for (key, value), resumed_value in zip(model.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(value, resumed_value), key


def test_only_what_is_exact_is_flattened():
    torch.manual_seed(0)
    model = Small()
    parameters = list(model.parameters())
    assert can_flatten(model, parameters, OPTIMIZERS["sgd"](parameters))
    # LBFGS reduces over all parameters, and is not per element in torch's sense
    assert not can_flatten(model, parameters, torch.optim.LBFGS(parameters))

    class MySGD(torch.optim.SGD):  # a subclass may update differently
        pass

    assert not can_flatten(model, parameters, MySGD(parameters, lr=0.1))
    assert not can_flatten(model, parameters[:1], OPTIMIZERS["sgd"](parameters[:1]))  # nothing to gain
    undeclared = torch.nn.Linear(2, 3)  # may leave a parameter out of a forward: torch would skip it
    assert not can_flatten(undeclared, list(undeclared.parameters()), OPTIMIZERS["sgd"](list(undeclared.parameters())))
    model.bias.data = model.bias.data.double()
    assert not can_flatten(model, parameters, OPTIMIZERS["sgd"](parameters))  # mixed dtypes


def test_plain_sgd_follows_a_changing_rate_and_keeps_the_optimizers_hooks():
    """Plain SGD updates the flat tensor itself (flat_parameters.plain_sgd_update): a scheduler's
    rate is read at each step, and a step hook, when registered, is still called."""

    def run(flat: bool, hook=None):
        torch.manual_seed(0)
        model = Small()
        x, y = data()
        make = OPTIMIZERS["sgd"]
        optimizer = flatten(make, list(model.parameters())) if flat else make(list(model.parameters()))
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
        if hook is not None:
            optimizer.register_step_post_hook(hook)
        for _ in range(10):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            optimizer.step()
            scheduler.step()
        return [p.detach().clone() for p in model.parameters()]

    for one_by_one, flat in zip(run(False), run(True)):
        assert torch.equal(one_by_one, flat)
    calls = []
    run(True, hook=lambda optimizer, args, kwargs: calls.append(1))
    assert len(calls) == 10


# A forward through the flat tensor itself (lent_column): polyfit's matmul polynomial.


def polynomial_run(clear=None, steps: int = 40, hook=None):
    """The matmul polynomial, flattened under NAdam, trained on [x², x, 1] as the loop does."""
    from framework_plugins.polynomial_model import Polynomial

    torch.manual_seed(0)
    x = (torch.randn(20) * 5).unsqueeze(1)
    y = x**2 + 2 * x + 3
    model = Polynomial(["A", "B", "C"], [2, 1, 0], "randn", "matmul")
    parameters = list(model.parameters())
    optimizer = flatten(lambda params: torch.optim.NAdam(params, lr=0.01), parameters)
    if hook is not None:
        hook(model)
    forward = lending_forward(model, optimizer)  # as the default step calls the model
    for step in range(steps):
        (clear or (lambda model, optimizer, step: optimizer.zero_grad()))(model, optimizer, step)
        torch.nn.functional.mse_loss(forward(x), y).backward()
        optimizer.step()
    return model, optimizer


def tutorial_polynomial(steps: int = 40) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(20) * 5
    features, y = torch.stack([x**2, x, torch.ones_like(x)], dim=1), (x**2 + 2 * x + 3).unsqueeze(1)
    weight = torch.randn(3, 1, requires_grad=True)
    optimizer = torch.optim.NAdam([weight], lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(features @ weight, y).backward()
        optimizer.step()
    return weight.detach()[:, 0]


def coefficients(model) -> torch.Tensor:
    return torch.stack([model.A, model.B, model.C]).detach()


@pytest.mark.parametrize("clear", [None, set_to_none_by_the_model, set_to_none_by_the_optimizer,
                                   replaced_by_assignment])
def test_a_forward_through_the_lent_flat_tensor_is_the_tutorials_step_whatever_clears_the_gradients(clear):
    # model.zero_grad() leaves the flat gradient as it was: the forward must then not add into
    # it (lent_column says no), or gather() would throw the step's gradient away.
    model, _ = polynomial_run(clear)
    assert torch.equal(coefficients(model), tutorial_polynomial())


def lent_in_a_step(parameters, optimizer, lend=None):
    """What lent_column (or ``lend``) gives a training step's forward pass."""
    from framework.flat_parameters import lent_column

    return lending_forward(lambda _features: (lend or lent_column)(parameters), optimizer)(None)


def test_nothing_is_lent_that_is_not_exactly_the_flat_tensor():
    import copy
    import gc
    import weakref

    from framework.flat_parameters import stop_lending

    def lent_leaf(parameters):
        return lent_in_a_step(parameters, optimizer)

    model, optimizer = polynomial_run(steps=1)
    A, B, C = model.A, model.B, model.C
    assert lent_leaf([A, B, C]) is not None
    assert lent_leaf([A, B]) is None and lent_leaf([B, A, C]) is None
    copied = copy.deepcopy(model)  # new parameters, not views of any flat tensor
    assert lent_leaf([copied.A, copied.B, copied.C]) is None
    assert torch.equal(coefficients(copied), coefficients(model))
    handle = B.register_hook(lambda grad: grad)  # a hook on B's own gradient must see it
    assert lent_leaf([A, B, C]) is None
    handle.remove()
    assert lent_leaf([A, B, C]) is not None
    stop_lending(optimizer)
    assert lent_leaf([A, B, C]) is None
    model, optimizer = polynomial_run(steps=1)
    A, B, C = model.A, model.B, model.C
    A.data = A.data.clone()  # no longer the flat tensor's memory
    assert lent_leaf([A, B, C]) is None
    model, optimizer = polynomial_run(steps=1)
    owner = weakref.ref(optimizer.flat_parameters)
    del optimizer  # its flat tensor is gone: nothing to lend, and nothing lent keeps it
    gc.collect()
    assert owner() is None


class VectorPolynomial(torch.nn.Module):
    """A plugin's model written for lent_leaf's vector: design @ coefficients, (rows,)."""

    dense_gradients = True

    def __init__(self) -> None:
        super().__init__()
        self.A, self.B, self.C = (torch.nn.Parameter(torch.randn(())) for _ in range(3))

    def forward(self, x):
        from framework.flat_parameters import lent_leaf

        coefficients = [self.A, self.B, self.C]
        vector = lent_leaf(coefficients)
        return torch.stack([x**2, x, torch.ones_like(x)], dim=1) @ (
            vector if vector is not None else torch.stack(coefficients))


def test_lent_leaf_still_gives_a_plugin_the_vector_it_gave_and_the_tutorials_step():
    from framework.flat_parameters import lent_leaf

    torch.manual_seed(0)
    x = torch.randn(20) * 5
    y = x**2 + 2 * x + 3
    model = VectorPolynomial()
    optimizer = flatten(lambda params: torch.optim.NAdam(params, lr=0.01), list(model.parameters()))
    parameters = [model.A, model.B, model.C]
    vector = lent_in_a_step(parameters, optimizer, lend=lent_leaf)
    assert vector.shape == (3,) and vector._base is optimizer.flat_parameters.flat
    forward = lending_forward(model, optimizer)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(forward(x), y).backward()
        optimizer.step()

    torch.manual_seed(0)
    torch.randn(20)
    weight = torch.randn(3, requires_grad=True)  # A, B, C drawn in the same order, as one vector
    plain = torch.optim.NAdam([weight], lr=0.01)
    features = torch.stack([x**2, x, torch.ones_like(x)], dim=1)
    for _ in range(40):
        plain.zero_grad()
        torch.nn.functional.mse_loss(features @ weight, y).backward()
        plain.step()
    assert torch.equal(coefficients(model), weight.detach())


def test_only_a_training_steps_forward_pass_computes_with_the_flat_tensor():
    # Anything else differentiates with respect to the coefficients themselves (the doctor's
    # torch.autograd.grad) and must find them in the graph.
    from framework.flat_parameters import lent_column

    model, optimizer = polynomial_run(steps=3)
    parameters = [model.A, model.B, model.C]
    assert lent_in_a_step(parameters, optimizer) is optimizer.flat_parameters.flat
    assert lent_column(parameters) is None
    x = torch.linspace(-4, 4, 9).unsqueeze(1)
    gradients = torch.autograd.grad(model(x).pow(2).sum(), parameters)
    predictions = torch.cat([x**2, x, torch.ones_like(x)], dim=1) @ coefficients(model).unsqueeze(1)
    expected = (2 * predictions * torch.cat([x**2, x, torch.ones_like(x)], dim=1)).sum(dim=0)
    assert torch.allclose(torch.stack(gradients), expected, rtol=1e-6)


def test_a_coefficient_frozen_during_a_run_stays_where_it_was():
    from framework_plugins.polynomial_model import Polynomial

    torch.manual_seed(0)
    x = torch.linspace(-3, 3, 20).unsqueeze(1)
    model = Polynomial(["A", "B", "C"], [2, 1, 0], "randn", "matmul")
    optimizer = flatten(lambda params: torch.optim.SGD(params, lr=0.01), list(model.parameters()))
    forward = lending_forward(model, optimizer)
    for step in range(6):
        if step == 3:
            model.A.requires_grad_(False)  # as a callback freezing it mid-run would
            frozen = model.A.detach().clone()
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(forward(x), x**2 + 2 * x + 3).backward()
        optimizer.step()
    assert torch.equal(model.A.detach(), frozen)


def test_a_hook_on_a_coefficients_gradient_sees_every_step():
    seen = []
    model, _ = polynomial_run(steps=5, hook=lambda model: model.B.register_hook(lambda grad: seen.append(grad)))
    assert len(seen) == 5
    assert torch.equal(coefficients(model), tutorial_polynomial(steps=5))


def one_output_linear(features: int, generator: torch.Generator):
    from framework_plugins.linear_model import Linear

    model = Linear(features, 1, bias=False, init="zeros")
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, features, generator=generator))
    return model


@pytest.mark.parametrize("features, rows, layout", [
    (4, 4, "contiguous"),  # the puzzle's shape
    (16, 1, "contiguous"), (12, 1, "contiguous"),  # a one-row batch: mm(x, column) of strides (1, 1) rounds otherwise
    (16, 5, "every other column"), (16, 5, "transposed"),  # features that are not contiguous
    (1, 3, "contiguous"),
])
def test_a_one_output_linear_model_without_bias_trains_through_its_weights_transpose_as_f_linear(
        features, rows, layout):
    # Its optimizer's flat tensor is laid out as weight.t(), which the step's forward multiplies
    # by: the plain loop below (F.linear on a (1, n) weight) bit for bit, in every layout.
    generator = torch.Generator().manual_seed(features * 100 + rows)
    wide = torch.randn(rows, 2 * features, generator=generator)
    x = {"contiguous": wide[:, :features].contiguous(), "every other column": wide[:, ::2],
         "transposed": wide[:, :features].contiguous().t().contiguous().t()}[layout]
    y = torch.randn(rows, 1, generator=generator)
    model = one_output_linear(features, generator)
    weight = model.weight.detach().clone().requires_grad_(True)
    parameters = list(model.parameters())
    make = OPTIMIZERS["nadam"]
    assert can_flatten(model, parameters, make(parameters))
    optimizer = flatten(make, parameters, transposed=True)
    (flat,) = optimizer.param_groups[0]["params"]
    assert flat.shape == (features, 1) and flat.stride() == weight.t().stride()
    plain = make([weight])
    forward = lending_forward(model, optimizer)
    for _ in range(25):
        optimizer.zero_grad()
        predictions = forward(x)
        ((predictions - y) ** 2).sum().backward()
        optimizer.step()
        plain.zero_grad()
        ((torch.nn.functional.linear(x, weight) - y) ** 2).sum().backward()
        plain.step()
    # the step computed with the flat tensor itself: autograd adds into it, with no transpose between
    assert [next_function.variable for next_function, _ in predictions.grad_fn.next_functions
            if next_function is not None and hasattr(next_function, "variable")] == [flat]
    assert torch.equal(model.weight.detach(), weight.detach())
    assert model.weight.shape == (1, features) and model.weight.data_ptr() == flat.data_ptr()


def test_only_a_one_output_linear_model_without_bias_is_flattened_with_a_single_parameter():
    from framework_plugins.linear_model import Linear

    generator = torch.Generator().manual_seed(0)
    assert can_flatten(*(lambda m: (m, list(m.parameters())))(one_output_linear(3, generator)),
                       OPTIMIZERS["adamw"]([torch.zeros(1, requires_grad=True)]))
    for model in (Linear(3, 2, bias=False, init="zeros"), Linear(3, 1, bias=True, init="zeros")):
        parameters = list(model.parameters())
        if len(parameters) == 1:  # two outputs: not a column
            assert not can_flatten(model, parameters, OPTIMIZERS["sgd"](parameters))
        else:  # with a bias: flattened as any small model, as a plain column it does not lend
            assert can_flatten(model, parameters, OPTIMIZERS["sgd"](parameters))
            assert not model.transposed_weight_column


def test_a_checkpoint_of_the_unflattened_weight_resumes_through_the_transposed_column_bit_for_bit():
    # Checkpoints written before the one-output linear model was flattened hold its NAdam state
    # in the weight's shape (1, n); a resumed run loads them and goes on as the unflattened run
    # does. New checkpoints hold (n,), as every flattened model's.
    generator = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 4, generator=generator), torch.randn(6, 1, generator=generator)

    def steps(model, optimizer, count):
        forward = lending_forward(model, optimizer)
        for _ in range(count):
            optimizer.zero_grad()
            ((forward(x) - y) ** 2).sum().backward()
            optimizer.step()

    model = one_output_linear(4, generator)
    initial = model.weight.detach().clone()
    unflattened = OPTIMIZERS["nadam"]([model.weight])
    steps(model, unflattened, 5)
    old = {"model": {k: v.clone() for k, v in model.state_dict().items()},
           "optimizer": {"state": {0: {k: v.clone() for k, v in unflattened.state_dict()["state"][0].items()}},
                         "param_groups": unflattened.state_dict()["param_groups"]}}
    assert old["optimizer"]["state"][0]["exp_avg"].shape == (1, 4)
    steps(model, unflattened, 5)

    resumed = one_output_linear(4, torch.Generator().manual_seed(99))
    resumed.load_state_dict(old["model"])
    optimizer = flatten(OPTIMIZERS["nadam"], list(resumed.parameters()), transposed=True)
    optimizer.load_state_dict(old["optimizer"])
    steps(resumed, optimizer, 5)
    assert torch.equal(resumed.weight.detach(), model.weight.detach())
    assert not torch.equal(model.weight.detach(), initial)
    assert optimizer.state_dict()["state"][0]["exp_avg"].shape == (4,)
