"""Huffman coding against a reference library, round trips, and Han's relative indices with padding entries."""
import pytest
import torch
from dahuffman import HuffmanCodec

from labkit import huffman


def _reference_lengths(counts: list[int]) -> dict[int, int]:
    """dahuffman's code length per used symbol (its end-of-file marker is one of the symbols, so none is added)."""
    freqs = {s: c for s, c in enumerate(counts) if c > 0}
    table = HuffmanCodec.from_frequencies(freqs, eof=next(iter(freqs))).get_code_table()
    return {s: bits for s, (bits, _) in table.items()}


def _round_trip(symbols: torch.Tensor, alphabet: int) -> dict:
    coded = huffman.compress_symbols(symbols, alphabet)
    assert torch.equal(huffman.decompress_symbols(coded), symbols.to(torch.int64))
    return coded


@pytest.mark.parametrize("count,alphabet", [(0, 4), (1, 4), (7, 1), (1000, 32), (1023, 2), (1024, 2), (1025, 2),
                                            (3 * 1024 + 5, 5), (200_000, 32), (50_000, 300)])
def test_round_trip_random(count, alphabet):
    symbols = torch.randint(0, alphabet, (count,), generator=torch.Generator().manual_seed(count))
    coded = _round_trip(symbols, alphabet)
    assert coded["count"] == count and len(coded["data"]) == (coded["bits"] + 7) // 8


def test_round_trip_skewed_is_near_the_entropy():
    p = torch.tensor([0.5 ** k for k in range(1, 33)])  # geometric: most symbols are 0, a few reach 31
    symbols = torch.multinomial(p / p.sum(), 300_000, replacement=True, generator=torch.Generator().manual_seed(1))
    coded = _round_trip(symbols, 32)
    freq = torch.bincount(symbols, minlength=32).double() / len(symbols)
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log2()).sum())
    assert entropy <= coded["bits"] / len(symbols) < entropy + 0.05  # dyadic probabilities: Huffman is optimal
    assert coded["bits"] < 5 * len(symbols) / 2  # against 5 fixed bits a symbol


def test_a_single_symbol_costs_one_bit():
    coded = _round_trip(torch.full((100,), 3), 8)
    assert coded["bits"] == 100 and coded["lengths"].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("seed", range(4))
def test_code_lengths_equal_dahuffman(seed):
    g = torch.Generator().manual_seed(seed)
    # large random counts: a tie between two subtrees is all but impossible, so the optimal code is unique
    counts = torch.randint(1, 10**9, (40,), generator=g).tolist()
    counts[5] = 0  # an unused symbol gets no code
    lengths = huffman.code_lengths(counts)
    reference = _reference_lengths(counts)
    assert {s: int(lengths[s]) for s in reference} == reference and int(lengths[5]) == 0
    assert huffman.encoded_bits(counts, lengths) == sum(counts[s] * b for s, b in reference.items())


@pytest.mark.parametrize("seed", range(4))
def test_total_bits_equal_dahuffman_with_ties(seed):
    # small counts tie often: lengths may differ symbol by symbol, the total encoded length may not
    counts = torch.randint(0, 6, (30,), generator=torch.Generator().manual_seed(seed)).tolist()
    lengths = huffman.code_lengths(counts)
    reference = _reference_lengths(counts)
    assert huffman.encoded_bits(counts, lengths) == sum(counts[s] * b for s, b in reference.items())
    # (counts 1, 1, 2, 2 are coded 2, 2, 2, 2 or 1, 2, 3, 3 bits: both 12 bits in all)


def test_dyadic_counts_give_the_textbook_code():
    counts = [1 << k for k in range(10)]  # 1, 2, 4, ...: every merge is forced
    assert huffman.code_lengths(counts).tolist() == [9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
    assert _reference_lengths(counts) == dict(enumerate([9, 9, 8, 7, 6, 5, 4, 3, 2, 1]))


def test_canonical_codes_are_prefix_free():
    lengths = huffman.code_lengths([50, 1, 3, 3, 7, 20, 0, 2, 9, 40])
    codes = huffman.canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths) if n > 0]
    assert all(not b.startswith(a) for a in words for b in words if a is not b)
    assert sum(2.0 ** -int(n) for n in lengths if n > 0) == 1.0  # complete: Kraft's sum is one


def test_lengths_beyond_32_bits_are_shortened():
    fib = [1, 1]
    while len(fib) < 45:
        fib.append(fib[-1] + fib[-2])  # Fibonacci counts make the deepest Huffman tree: 44 bits
    assert max(huffman._huffman_lengths(fib)) == 44
    lengths = huffman.code_lengths(fib)
    assert int(lengths.max()) <= huffman.MAX_CODE_BITS and sum(2.0 ** -int(n) for n in lengths) <= 1.0
    symbols = torch.cat([torch.full((3,), s) for s in range(45)])
    coded = huffman.encode(symbols, lengths)
    assert torch.equal(huffman.decode(coded, lengths), symbols)


def test_bad_streams_are_named():
    with pytest.raises(ValueError, match="beyond the alphabet of 4"):
        huffman.compress_symbols(torch.tensor([0, 5]), 4)
    lengths = huffman.code_lengths([3, 0, 1])
    with pytest.raises(ValueError, match="code length 0"):
        huffman.encode(torch.tensor([0, 1]), lengths)
    coded = huffman.compress_symbols(torch.randint(0, 4, (3000,)), 4)
    coded["block_bits"] = coded["block_bits"] + 1
    with pytest.raises(ValueError, match="damaged"):
        huffman.decompress_symbols(coded)
    with pytest.raises(ValueError, match="counts"):
        huffman.code_lengths([3, -1])


# ---------------------------------------------------------------- relative indices

def test_relative_indices_by_hand():
    # 3-bit indices: gaps up to 7; the 9 zeros between positions 2 and 12 need one padding entry (at 10)
    gaps, real = huffman.relative_indices(torch.tensor([2, 12]), index_bits=3)
    assert gaps.tolist() == [2, 7, 1] and real.tolist() == [True, False, True]
    assert huffman.positions_from_gaps(gaps).tolist() == [2, 10, 12]


@pytest.mark.parametrize("index_bits", [1, 3, 5, 8])
def test_relative_indices_round_trip_across_long_gaps(index_bits):
    g = torch.Generator().manual_seed(index_bits)
    steps = torch.randint(1, 200, (2000,), generator=g)  # gaps up to 199, far beyond 2**index_bits - 1
    steps[::50] = 5000
    positions = torch.cumsum(steps, 0) - 1
    gaps, real = huffman.relative_indices(positions, index_bits)
    assert int(gaps.max()) <= (1 << index_bits) - 1 and int(real.sum()) == len(positions)
    assert torch.equal(huffman.positions_from_gaps(gaps)[real], positions)
    skipped = torch.diff(positions, prepend=torch.tensor([-1])) - 1
    assert int((~real).sum()) == int((skipped >> index_bits).sum())  # one padding entry per 2**index_bits


def test_relative_indices_refuse_unsorted_positions():
    with pytest.raises(ValueError, match="ascending"):
        huffman.relative_indices(torch.tensor([5, 3]), 5)
    with pytest.raises(ValueError, match="index_bits=0"):
        huffman.relative_indices(torch.tensor([1]), 0)


@pytest.mark.parametrize("chunk", [1 << 10, 3 << 10, 1 << 12])
def test_a_stream_coded_in_chunks_is_the_stream_coded_at_once(monkeypatch, chunk):
    """Long streams are coded and decoded CHUNK symbols at a time (memory); the bytes may not depend on it."""
    g = torch.Generator().manual_seed(3)
    symbols = torch.multinomial(torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05]), 20_000, True, generator=g)
    whole = huffman.compress_symbols(symbols, 6)
    monkeypatch.setattr(huffman, "CHUNK", chunk)
    coded = huffman.compress_symbols(symbols.to(torch.uint8), 6)
    assert torch.equal(coded["data"], whole["data"]) and torch.equal(coded["block_bits"], whole["block_bits"])
    assert coded["bits"] == whole["bits"]
    assert torch.equal(huffman.decompress_symbols(coded), symbols)


# ---------------------------------------------------------------- fixed widths (quantized stage, compressed heads)

@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 12, 17])
@pytest.mark.parametrize("count", [1, 7, 8, 1001])
def test_pack_fixed_round_trip(bits, count):
    values = torch.randint(0, 1 << bits, (count,), generator=torch.Generator().manual_seed(count))
    packed = huffman.pack_fixed(values, bits)
    assert packed.dtype == torch.uint8 and len(packed) == -(-count * bits // 8)
    assert torch.equal(huffman.unpack_fixed(packed, bits, count), values)


def test_pack_fixed_layout_by_hand():
    # most significant bit first: values 1, 2 at 4 bits -> byte 0x12; 15, 0 -> 0xF0
    assert huffman.pack_fixed(torch.tensor([1, 2, 15, 0]), 4).tolist() == [0x12, 0xF0]
    assert huffman.pack_fixed(torch.tensor([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1).tolist() == [0b10110001, 0b10000000]


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8, 11])
def test_pack_fixed_matches_a_bit_by_bit_writer(bits):
    values = torch.randint(0, 1 << bits, (37,), generator=torch.Generator().manual_seed(bits))
    stream = [(v >> i) & 1 for v in values.tolist() for i in reversed(range(bits))]  # most significant first
    stream += [0] * (-len(stream) % 8)
    expected = [sum(b << (7 - i) for i, b in enumerate(stream[j:j + 8])) for j in range(0, len(stream), 8)]
    assert huffman.pack_fixed(values, bits).tolist() == expected
    with pytest.raises(ValueError, match="the data is damaged"):
        huffman.unpack_fixed(torch.tensor(expected[:-1], dtype=torch.uint8), bits, 37)


def test_pack_fixed_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="do not fit in 3 bits"):
        huffman.pack_fixed(torch.tensor([0, 8]), 3)


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_pack_fixed_in_slices_writes_what_one_pass_writes(bits, monkeypatch):
    values = torch.randint(0, 1 << bits, (1003,), generator=torch.Generator().manual_seed(bits))
    whole = huffman.pack_fixed(values, bits)
    monkeypatch.setattr(huffman, "_SLICE", 64)  # 16 slices, the last one short
    assert torch.equal(huffman.pack_fixed(values, bits), whole)
    assert torch.equal(huffman.unpack_fixed(whole, bits, 1003), values)
    assert torch.equal(huffman.unpack_fixed(torch.cat([whole, whole[:5]]), bits, 1003), values)  # extra bytes ignored
