import pytest
import torch
from torch import nn

from tests.trainers.conftest import OPTIONS, SMALL
from trainers import quantize
from trainers.memory import activation_bytes, memory_profile, peak_mem_bytes
from trainers.models import IN_RANKS, MODELS, Add, build_model
from trainers.nb201 import Zero
from trainers.prune import prune

SHAPES = {1: (12,), 2: (2, 40), 3: (3, 8, 8)}  # a sample of each rank a builder may take
CASES = [(name, SHAPES[rank]) for name in sorted(MODELS) for rank in IN_RANKS[name]]


def _residual_chain(in_shape):
    arch = {"s0_depth": 2, "s0_width": 4, "s0_kernel": 3, "s0_expand": 2}
    return build_model("chain", arch, in_shape=in_shape, num_classes=10)


@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 64)])
def test_a_chain_with_residual_additions_by_hand(in_shape):
    # 64 positions (8x8 or 64); stem 1 -> 4 channels; two blocks 4 -> 8 -> 8 -> 4, each adding
    # its input (4 x 64 = 256 elements) back. Batch norms and ReLU6 write over their input.
    x, c4, c8 = 64, 256, 512
    block = [
        c4 + c8,  # expand 1x1 conv: block input + expanded output
        c4 + c8,  # its batch norm, in place; the block input is held for the addition
        c4 + c8,  # ReLU6, in place
        c4 + c8 + c8,  # depthwise conv: held input + its input + its output (the peak)
        c4 + c8,  # batch norm, in place
        c4 + c8,  # ReLU6
        c4 + c8 + c4,  # project 1x1 conv, 8 -> 4
        c4 + c4,  # batch norm
        c4 + c4,  # the addition writes over the projection
    ]
    head = [c4 + 4, 4, 4 + 10]  # average pool, flatten (a view), classifier
    expected = [x + c4, c4, c4, *block, *block, *head]  # stem conv, batch norm, ReLU6
    model = _residual_chain(in_shape)
    assert [live for _, live in memory_profile(model, in_shape)] == expected
    assert max(expected) == 1280
    assert peak_mem_bytes(model, in_shape) == 4 * 1280  # float32
    assert peak_mem_bytes(model, in_shape, bytes_per_element=1) == 1280


class _FunctionalResidual(nn.Module):
    """conv 1 -> 4, conv 4 -> 8, conv 8 -> 4, and the first conv's output added back with `+`
    in `forward` (no `Add` module: hooks would not see it)."""

    def __init__(self, residual: bool):
        super().__init__()
        self.a, self.b = nn.Conv1d(1, 4, 3, padding=1), nn.Conv1d(4, 8, 1)
        self.c, self.residual = nn.Conv1d(8, 4, 1), residual

    def forward(self, x):
        y = torch.relu(self.a(x))
        z = self.c(self.b(y))
        return y + z if self.residual else z


def test_a_functional_residual_input_is_held():
    # length 16: input 16, y 4 x 16 = 64, b 128, z 64
    held = [16 + 64, 64, 64 + 128, 64 + 128 + 64, 64 + 64]  # a, relu, b, c (holds y), y + z
    assert [live for _, live in memory_profile(_FunctionalResidual(True), (1, 16))] == held
    plain = [16 + 64, 64, 64 + 128, 128 + 64]  # y is free once b has read it
    assert [live for _, live in memory_profile(_FunctionalResidual(False), (1, 16))] == plain


_ELEMENTWISE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, Add, Zero)


def _hook_profile(model, in_shape) -> list[int]:
    """The live elements during each leaf module's call, counted from the tensors a forward
    hook on every leaf module sees (an independent count: the rule of `trainers.memory`
    applied to the eager run, tensors known by identity)."""
    calls = []
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(lambda m, i, o: calls.append((m, i, o))) for m in leaves]
    x = torch.zeros(1, *in_shape)
    model.eval()
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    last = {id(x): -1}  # the last call reading each tensor (`calls` keeps them all alive)
    for step, (_, inputs, _) in enumerate(calls):
        for tensor in inputs:
            last[id(tensor)] = step
    last[id(calls[-1][2])] = len(calls) - 1  # the logits live to the end
    buffer, start, end, size = {id(x): 0}, [-1], [last[id(x)]], [x.numel()]
    for step, (module, inputs, output) in enumerate(calls):
        assert all(id(t) in buffer for t in inputs), "an operation the hooks did not see"
        if id(output) in buffer:  # nn.Identity returns its input
            continue
        own = None
        if isinstance(module, nn.Flatten):
            own = buffer[id(inputs[0])]
        elif isinstance(module, _ELEMENTWISE):
            free = [buffer[id(t)] for t in inputs if end[buffer[id(t)]] <= step]
            own = next((b for b in free if size[b] == output.numel()), None)
        if own is None:
            own = len(size)
            start.append(step)
            end.append(step)
            size.append(output.numel())
        buffer[id(output)] = own
        end[own] = max(end[own], last.get(id(output), step))
    return [
        sum(s for s, a, b in zip(size, start, end, strict=True) if a <= step <= b)
        for step in range(len(calls))
    ]


@pytest.mark.parametrize(("name", "in_shape"), CASES)
def test_equals_a_count_from_forward_hooks(name, in_shape):
    torch.manual_seed(0)
    options = OPTIONS[name]
    model = build_model(name, SMALL[name], in_shape=in_shape, num_classes=10, options=options)
    for _ in range(2):  # as built, then pruned
        profile = [live for _, live in memory_profile(model, in_shape)]
        assert profile == _hook_profile(model, in_shape)
        assert peak_mem_bytes(model, in_shape) == 4 * max(profile)
        prune(model, ratio=0.5)


def test_the_nb201_cell_holds_its_nodes():
    arch = dict.fromkeys(SMALL["nb201"], "nor_conv_1x1")
    model = build_model("nb201", arch, in_shape=(1, 8, 8), num_classes=10, options={"channels": 4})
    profile = dict(memory_profile(model, (1, 8, 8)))
    n = 4 * 64  # one node of the first cell (4 channels, 8x8)
    # edge 2 <- 1's conv: node 0 (edge 3 <- 0 reads it later), node 1 (3 <- 1 does), the
    # running sum of node 2, the ReLU of node 1 (a copy: node 1 is still needed), the output
    assert profile["layers.0.edges.edge_2_1.1"] == 5 * n
    # edge 3 <- 2's conv: nodes 0 and 1 are free, node 2 took its ReLU in place; the running
    # sum of node 3, that ReLU and the output
    assert profile["layers.0.edges.edge_3_2.1"] == 3 * n
    assert max(profile.values()) == 5 * n


@pytest.mark.parametrize(("act_bits", "width"), [(32, 4), (16, 2), (8, 1), (4, 1)])
def test_the_deployed_dtype(act_bits, width):
    model = _residual_chain((1, 64))
    model.eval()
    hooks = quantize.prepare(model, quantize.QuantSpec(8), act_bits=act_bits)
    quantize.calibrate(model, hooks, torch.randn(8, 1, 64))
    quantize.finalize(model, hooks)
    assert activation_bytes(model) == width
    assert peak_mem_bytes(model, (1, 64)) == width * 1280  # batch norms folded: same peak


def test_a_model_fx_cannot_trace_is_named():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 2, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="torch.fx can trace"):
        peak_mem_bytes(Branchy(), (1, 8))
