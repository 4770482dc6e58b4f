import pytest
import torch
from diffusekit_masked.networks import Transformer
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize("positions", ["learned", "sudoku"])
def test_written_out_blocks_match_torchs_encoder(positions):
    torch.manual_seed(0)
    net = Transformer(num_classes=10, length=81, d_model=32, layers=2, heads=4, positions=positions).build().eval()
    x = torch.randint(0, 10, (3, 81))
    if positions == "sudoku":
        h = net.tokens(x) + net.rows(net.cell_rc[0]) + net.cols(net.cell_rc[1]) + net.boxes(net.cell_rc[2])
    else:
        h = net.tokens(x) + net.positions
    reference = net.head(net.norm(net.encoder(h)))
    torch.testing.assert_close(net(x, torch.zeros(3)), reference, atol=1e-5, rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(i=st.integers(0, 40), j=st.integers(0, 40), shift=st.integers(0, 23))
def test_rotary_scores_depend_only_on_the_offset(i, j, shift):
    net = Transformer(num_classes=5, length=64, d_model=16, heads=2, positions="rotary").build()
    g = torch.Generator().manual_seed(i * 100 + j)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(a, b):
        z = torch.zeros(1, 1, 64, 8)
        za, zb = z.clone(), z.clone()
        za[..., a, :], zb[..., b, :] = q, k
        return float((net.rotate(za)[..., a, :] * net.rotate(zb)[..., b, :]).sum())

    assert score(i + shift, j + shift) == pytest.approx(score(i, j), abs=1e-4)
    assert score(i, i) == pytest.approx(float((q * k).sum()), abs=1e-4)  # offset 0: no rotation


def test_rotary_model_sees_token_order():
    torch.manual_seed(0)
    net = Transformer(num_classes=5, length=8, d_model=16, heads=2, positions="rotary").build().eval()
    x = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]])
    swapped = x[:, [1, 0, 2, 3, 4, 5, 6, 7]]
    # without positions a transformer is permutation-equivariant; rotary breaks that
    out, out_swapped = net(x, torch.zeros(1)), net(swapped, torch.zeros(1))
    assert not torch.allclose(out[0, 7], out_swapped[0, 7], atol=1e-4)


@pytest.mark.parametrize(("d_model", "heads", "positions"), [(30, 4, "learned"), (24, 8, "rotary")])
def test_widths_that_do_not_split_into_heads_are_refused(d_model, heads, positions):
    with pytest.raises(ValueError, match="heads"):
        Transformer(d_model=d_model, heads=heads, positions=positions)
