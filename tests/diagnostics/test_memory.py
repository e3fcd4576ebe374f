from __future__ import annotations

import torch
from torch import nn

from deeplimits.diagnostics import SavedTensorsMeter


def test_chain_of_tanh_is_measured_as_its_saved_outputs():
    # tanh saves its output for backward: k calls on n float32 values save exactly k*n*4 bytes.
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorsMeter() as meter:
        y = x
        for _ in range(7):
            y = torch.tanh(y)
    assert meter.bytes == 7 * 1000 * 4


def test_linear_layer_saves_input_and_weight_unless_parameters_are_excluded():
    layer = nn.Linear(50, 20)
    x = torch.randn(8, 50, requires_grad=True)
    with SavedTensorsMeter() as meter_all:
        layer(x)
    assert meter_all.bytes == 8 * 50 * 4 + 20 * 50 * 4
    with SavedTensorsMeter(exclude=layer.parameters()) as meter:
        layer(x)
    assert meter.bytes == 8 * 50 * 4


def test_nothing_is_counted_without_grad():
    with torch.no_grad(), SavedTensorsMeter() as meter:
        torch.tanh(torch.randn(100, requires_grad=True))
    assert meter.bytes == 0


def test_weight_tied_layers_count_the_shared_storage_once_and_activations_per_layer():
    layer = nn.Linear(16, 16, bias=False)
    x = torch.randn(4, 16, requires_grad=True)
    with SavedTensorsMeter() as meter:
        h = x
        for _ in range(5):
            h = layer(h)
    # Saved: the 5 layer inputs (4x16 each) and the weight once (16x16).
    assert meter.bytes == 5 * 4 * 16 * 4 + 16 * 16 * 4


def test_temporary_graphs_freed_inside_the_block_count_once_not_per_call():
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorsMeter() as meter:
        for _ in range(10):
            torch.tanh(x)  # result dropped: its graph (and saved output) is freed at once
        assert meter.live_bytes == 0
    assert meter.bytes == 1000 * 4


def test_a_freed_address_reused_by_a_kept_saved_tensor_is_counted_again():
    x = torch.randn(1000, requires_grad=True)
    kept = []
    with SavedTensorsMeter() as meter:
        for _ in range(5):
            torch.tanh(x)  # freed; the allocator may hand its address to the next output
            kept.append(torch.tanh(x))
    assert meter.live_bytes == 5 * 1000 * 4
    # the peak: four kept outputs and the fifth transient, or the five kept ones
    assert meter.bytes == 5 * 1000 * 4


def test_count_is_the_number_of_saved_tensor_events():
    x = torch.randn(10, requires_grad=True)
    with SavedTensorsMeter() as meter:
        y = x
        for _ in range(7):
            y = torch.tanh(y)
    assert meter.count == 7


def test_backward_through_the_measured_graph_still_works():
    x = torch.randn(100, requires_grad=True)
    with SavedTensorsMeter():
        y = torch.tanh(x)
    y.sum().backward()
    assert torch.allclose(x.grad, 1 - torch.tanh(x.detach()) ** 2)


def test_a_storage_saved_twice_counts_until_both_are_freed():
    x = torch.randn(1000, requires_grad=True)
    with SavedTensorsMeter() as meter:
        y = torch.tanh(x)  # tanh saves y
        k = y.sin()  # sin saves its input: y's storage again
        assert meter.live_bytes == 1000 * 4
        del k  # sin's graph is freed; tanh still holds y
        assert meter.live_bytes == 1000 * 4
        del y
        assert meter.live_bytes == 0
