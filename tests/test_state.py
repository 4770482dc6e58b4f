import pytest
import torch
from diffusekit import ShapeError
from diffusekit.state import DEFAULT_PART, align_time, as_parts, batch_size, part_times, restore


@pytest.mark.parametrize(
    "t_shape, x_shape, expected",
    [
        ((), (4, 3, 8, 8), (1, 1, 1, 1)),
        ((4,), (4, 3, 8, 8), (4, 1, 1, 1)),
        ((4, 5), (4, 5, 3, 2, 2), (4, 5, 1, 1, 1)),
        ((1, 5), (4, 5, 7), (1, 5, 1)),
        ((4, 5, 7), (4, 5, 7), (4, 5, 7)),
    ],
)
def test_align_time_appends_trailing_dims(t_shape, x_shape, expected):
    t = torch.rand(t_shape)
    aligned = align_time(t, torch.zeros(x_shape))
    assert aligned.shape == expected
    # broadcasting against the data repeats each time over the trailing dims
    full = aligned * torch.ones(x_shape)
    index = tuple(slice(None) if i < t.ndim else 0 for i in range(len(x_shape)))
    assert torch.equal(full[index], t.expand(x_shape[: t.ndim]))


@pytest.mark.parametrize("t_shape, x_shape", [((3,), (4, 2)), ((4, 2, 1, 1), (4, 2, 1)), ((4, 3), (4, 5, 3))])
def test_align_time_rejects_misaligned_times(t_shape, x_shape):
    with pytest.raises(ShapeError, match="time"):
        align_time(torch.rand(t_shape), torch.zeros(x_shape))


def test_parts_round_trip_and_batch():
    x = torch.zeros(3, 2)
    assert as_parts(x) == {DEFAULT_PART: x}
    assert restore(as_parts(x), x) is x
    state = {"pos": torch.zeros(3, 5, 3), "atoms": torch.zeros(3, 5)}
    assert restore(as_parts(state), state) == state
    assert batch_size(state) == 3
    with pytest.raises(ShapeError, match="batch"):
        batch_size({"a": torch.zeros(2), "b": torch.zeros(3)})
    with pytest.raises(ShapeError, match="not a tensor"):
        as_parts({"a": [1, 2]})


def test_part_times_per_part_and_shared():
    times = part_times(0.5, ["a", "b"])
    assert times["a"].dtype == torch.float64 and float(times["b"]) == 0.5
    per = part_times({"a": 0.1, "b": torch.tensor([0.2, 0.3])}, ["a", "b"])
    assert per["b"].dtype == torch.float64 and torch.allclose(per["b"], torch.tensor([0.2, 0.3], dtype=torch.float64))
    with pytest.raises(ShapeError, match="'b'"):
        part_times({"a": 0.1}, ["a", "b"])
