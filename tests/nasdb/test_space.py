"""Search space: encode/decode/relax/discretize round trips, sampling, serialization, errors."""

import json

import numpy as np
import pytest

from nasdb.space import Dimension, SearchSpace, default_space, layer_choices, parse_layer_choice, unique_rows


@pytest.fixture(scope="module")
def space():
    return default_space()


def test_default_space_has_the_papers_shape(space):
    # 7 embedding modules + 7 layers x 12 base layers + 7 gates x 2 = 105 (paper Sec. 5.1)
    assert space.encoding_size == 105
    assert space.num_dimensions == 15
    assert space.dimensions[0].name == "embedding" and space.dimensions[0].size == 7
    assert [d.size for d in space.dimensions[1:8]] == [12] * 7
    assert [d.size for d in space.dimensions[8:]] == [2] * 7
    assert len(set(layer_choices())) == 12
    assert parse_layer_choice("tanh256") == ("tanh", 256)


def test_encode_decode_round_trip(space):
    archs = space.sample(50, seed=0)
    for arch in archs:
        u = space.encode(arch)
        assert u.shape == (105,) and u.sum() == space.num_dimensions
        np.testing.assert_array_equal(space.decode(u), arch)
        np.testing.assert_array_equal(space.discretize(u), arch)
    np.testing.assert_array_equal(space.encode_many(archs), np.stack([space.encode(a) for a in archs]))


def test_relax_is_a_softmax_per_block_and_discretize_its_argmax(space):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, space.encoding_size)) * 3
    w = space.relax(logits)
    for block in space.blocks:
        np.testing.assert_allclose(w[:, block].sum(axis=1), 1.0, rtol=1e-12)
        naive = np.exp(logits[:, block]) / np.exp(logits[:, block]).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(w[:, block], naive, rtol=1e-10)
    expected = np.stack([np.argmax(logits[:, b], axis=1) for b in space.blocks], axis=1)
    np.testing.assert_array_equal(space.discretize(w), expected)
    # Peaked logits relax to (almost) the one-hot encoding of their argmax.
    arch = space.sample(1, seed=3)[0]
    peaked = space.relax(space.encode(arch) * 50.0)
    np.testing.assert_allclose(peaked, space.encode(arch), atol=1e-12)


def test_sampling_is_uniform_and_deterministic(space):
    a, b = space.sample(2000, seed=7), space.sample(2000, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, space.sample(2000, seed=8))
    for j, d in enumerate(space.dimensions):
        counts = np.bincount(a[:, j], minlength=d.size)
        assert counts.min() > 0.6 * 2000 / d.size, (d.name, counts)


def test_json_round_trip_and_stable_id(space):
    again = SearchSpace.from_json(space.to_json())
    assert again == space and again.space_id == space.space_id
    assert len(space.space_id) == 16
    assert default_space().space_id == space.space_id
    other = default_space(num_layers=3)
    assert other.space_id != space.space_id and other.encoding_size == 7 + 3 * 12 + 3 * 2
    assert json.loads(space.to_json())["dimensions"][1]["name"] == "layer1"


@pytest.mark.parametrize(
    "arch, message",
    [
        ([0] * 14, "has 15 choice indices"),
        ([0] * 16, "has 15 choice indices"),
        ([7] + [0] * 14, "'embedding': choice index 7 is out of range"),
        ([0, 12] + [0] * 13, "'layer1': choice index 12 is out of range"),
        ([0] * 14 + [-1], "'enable7': choice index -1 is out of range"),
        ([0.5] + [0] * 14, "'embedding': choice index must be an integer"),
        (["a"] * 15, "must be integers"),
    ],
)
def test_bad_architectures_are_refused_naming_the_dimension(space, arch, message):
    with pytest.raises(ValueError, match=message):
        space.encode(arch)


def test_nan_in_a_continuous_encoding_names_the_dimension(space):
    u = space.encode(space.sample(1, seed=0)[0]).astype(float)
    u[space.blocks[3].start + 2] = np.nan
    with pytest.raises(ValueError, match="'layer3'.*non-finite"):
        space.discretize(u)
    with pytest.raises(ValueError, match="'layer3'.*non-finite"):
        space.relax(u)
    with pytest.raises(ValueError, match="105 entries"):
        space.discretize(np.zeros(104))
    with pytest.raises(ValueError, match="'embedding': block is not one-hot"):
        space.decode(np.zeros(105))


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="at least 2 choices"):
        Dimension("x", ("a",))
    with pytest.raises(ValueError, match="repeated dimension names"):
        SearchSpace("s", [Dimension("x", ("a", "b")), Dimension("x", ("a", "b"))])
    with pytest.raises(ValueError, match="malformed"):
        SearchSpace.from_json("{not json")
    with pytest.raises(ValueError, match="missing or malformed"):
        SearchSpace.from_dict({"name": "s"})


@pytest.mark.parametrize("shape, low, high, dtype", [((5000, 6), 0, 5, np.int64), ((300, 15), -3, 11, np.int32),
                                                     ((40, 2), 0, 2, np.uint8), ((9, 3), 0, 2 ** 40, np.int64),
                                                     ((9, 2), 2 ** 63, 2 ** 64 - 1, np.uint64)])
def test_unique_rows_gives_what_np_unique_axis0_gives(shape, low, high, dtype):
    """Same keys, first indices, inverse and counts, in the same order; the last two cases' keys overflow
    an int64 and take numpy's path."""
    a = np.random.default_rng(0).integers(low, high, shape, dtype=dtype)
    a[-1] = a[0]  # at least one repeat
    want = np.unique(a, axis=0, return_index=True, return_inverse=True, return_counts=True)
    got = unique_rows(a, return_index=True, return_inverse=True, return_counts=True)
    for w, g in zip(want, got):
        np.testing.assert_array_equal(w.reshape(g.shape), g)
    np.testing.assert_array_equal(unique_rows(a), want[0])
