"""Deep Compression's third stage: Huffman coding of small-alphabet symbol streams, and Han's relative indices.

Canonical codes (the code lengths alone, a byte per alphabet symbol, define the code), written and read
vectorized: Python loops run over the alphabet or one block's symbols, never the stream; blocks of BLOCK symbols
are decoded side by side. `pack_fixed`: the same layout at a fixed width. `relative_indices`: Han et al.'s gaps.
"""
from __future__ import annotations

import heapq

import torch

from .device import one_thread

MAX_CODE_BITS = 32  # decoding reads 32-bit windows; longer codes are shortened (see code_lengths)
BLOCK = 1 << 10     # symbols a block: its length in bits is stored (4 bytes, 0.03 bits a symbol)
CHUNK = 1 << 22     # symbols (a multiple of BLOCK) coded at a time: 32 MB int64 temporaries, whatever the stream


# ---------------------------------------------------------------- code lengths and canonical codes

def _huffman_lengths(counts: list[int]) -> list[int]:
    """Huffman's algorithm on the used symbols (count > 0); ties go to the lower symbol, then the older node."""
    used = [s for s, c in enumerate(counts) if c > 0]
    lengths = [0] * len(counts)
    if len(used) == 1:
        lengths[used[0]] = 1  # one symbol still needs one bit a symbol to be counted
        return lengths
    heap = [(counts[s], s, [s]) for s in used]
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        ca, _, a = heapq.heappop(heap)
        cb, _, b = heapq.heappop(heap)
        for s in a + b:
            lengths[s] += 1
        heapq.heappush(heap, (ca + cb, tie, a + b))
        tie += 1
    return lengths


def code_lengths(counts, limit: int = MAX_CODE_BITS) -> torch.Tensor:
    """int64 Huffman code length per symbol (0 for symbols that never occur) from `counts` (one per symbol).
    If one exceeds `limit` bits (rare: counts growing like the Fibonacci numbers over 4 million times), counts
    are halved (c -> 1 + c // 2) until none does, as bzip2 does: a code a fraction of a percent longer."""
    counts = [int(c) for c in torch.as_tensor(counts).flatten().tolist()]
    if any(c < 0 for c in counts):
        raise ValueError(f"counts={counts[:8]}... must be non-negative symbol counts")
    if not 1 <= limit <= MAX_CODE_BITS:
        raise ValueError(f"limit={limit} must be 1..{MAX_CODE_BITS} bits (decoding reads 32-bit windows)")
    if sum(1 for c in counts if c > 0) > 1 << limit:
        raise ValueError(f"{sum(1 for c in counts if c > 0)} symbols cannot all have codes of at most {limit} bits")
    lengths = _huffman_lengths(counts)
    while max(lengths, default=0) > limit:
        counts = [1 + c // 2 if c > 0 else 0 for c in counts]
        lengths = _huffman_lengths(counts)
    return torch.tensor(lengths, dtype=torch.int64)


def _canonical_order(lengths: torch.Tensor) -> torch.Tensor:
    """The used symbols sorted by (length, symbol): the order canonical codes count up in."""
    used = torch.nonzero(lengths > 0).flatten()
    return used[torch.argsort(lengths[used] * (len(lengths) + 1) + used)]


def canonical_codes(lengths: torch.Tensor) -> torch.Tensor:
    """int64 canonical code per symbol, most significant bit first (0 for unused symbols): in (length, symbol)
    order the first code is 0 and each next one is (previous + 1) shifted left by the growth in length."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    codes = torch.zeros_like(lengths)
    order = _canonical_order(lengths).tolist()
    code, previous = 0, None
    for s in order:  # over the alphabet, not the stream
        length = int(lengths[s])
        if previous is not None:
            code = (code + 1) << (length - previous)
        codes[s] = code
        previous = length
    return codes


def encoded_bits(counts, lengths) -> int:
    """Bits of the coded stream: sum over symbols of count x code length."""
    return int((torch.as_tensor(counts, dtype=torch.int64) * torch.as_tensor(lengths, dtype=torch.int64)).sum())


# ---------------------------------------------------------------- bits in and out

def _words_to_bytes(words: torch.Tensor) -> torch.Tensor:
    """32-bit words (int64 holding 0..2**32-1) -> uint8, most significant byte first (CHUNK words at a time)."""
    shifts = torch.tensor([24, 16, 8, 0])
    out = torch.empty(4 * len(words), dtype=torch.uint8)
    for i in range(0, len(words), CHUNK):
        out[4 * i:4 * (i + CHUNK)] = ((words[i:i + CHUNK, None] >> shifts) & 255).to(torch.uint8).flatten()
    return out


def _add_codes(words: torch.Tensor, codes: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor) -> None:
    """Write code i (<= 32 bits) at bit starts[i] of `words`, MSB first: codes never overlap, so adding works."""
    pair = codes << (64 - (starts & 31) - lengths)  # may reach the sign bit: only the bit pattern is used
    word = starts >> 5
    words.index_add_(0, word, (pair >> 32) & 0xFFFFFFFF)
    words.index_add_(0, word + 1, pair & 0xFFFFFFFF)


def _write(codes: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 bytes, int64 end bit of every code): the codes (<= 32 bits each) written one after another."""
    ends = torch.cumsum(lengths, 0)
    total = int(ends[-1]) if len(ends) else 0
    words = torch.zeros(total // 32 + 2, dtype=torch.int64)
    _add_codes(words, codes, lengths, ends - lengths)
    return _words_to_bytes(words)[: (total + 7) // 8].clone(), ends


def _bytes_to_words(data: torch.Tensor) -> torch.Tensor:
    """For every byte of `data`, the 40 bits from its first bit on (int64; zeros past the end)."""
    raw = torch.cat([data, torch.zeros(5, dtype=torch.uint8)]).to(torch.int64)
    span = len(data) + 1
    word = raw[:span] << 32
    for k in range(1, 5):
        word |= raw[k:k + span] << (32 - 8 * k)
    return word


def _read(words: torch.Tensor, positions: torch.Tensor, width: int) -> torch.Tensor:
    """The `width`-bit number (width <= 32) starting at each bit position (int64; positions <= the bits)."""
    return (words[positions >> 3] >> (40 - width - (positions & 7))) & ((1 << width) - 1)


_SLICE = 1 << 22  # values packed at a time (a multiple of 8): int64 temporaries of 32 MB, not of the whole layer


def pack_fixed(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integers < 2**bits -> uint8, `bits` bits each (bits <= 32), most significant bit first, laid
    out as the Huffman codes are: the quantized stage's fixed-width storage, and compressed heads' indices.
    ValueError if a value does not fit."""
    values = torch.as_tensor(values).flatten().to(torch.int64)
    if not 1 <= bits <= MAX_CODE_BITS:
        raise ValueError(f"bits={bits} must be 1..{MAX_CODE_BITS}")
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= 1 << bits):
        raise ValueError(f"values {int(values.min())}..{int(values.max())} do not fit in {bits} bits")
    if bits > 8:
        return _write(values, torch.full_like(values, bits))[0]
    n = len(values)
    out = [_pack_bytes(values[i:i + _SLICE], bits) for i in range(0, n, _SLICE)]
    return torch.cat(out)[: (n * bits + 7) // 8].clone() if out else torch.empty(0, dtype=torch.uint8)


def _pack_bytes(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Each 8 values (bits <= 8) as `bits` bytes, the last 8 padded with zeros."""
    groups = torch.cat([values, values.new_zeros(-len(values) % 8)]).view(-1, 8)
    packed = (groups << (bits * torch.arange(7, -1, -1))).sum(1)  # 8 x bits <= 64 bits
    return ((packed[:, None] >> (8 * torch.arange(bits - 1, -1, -1))) & 255).to(torch.uint8).flatten()


def unpack_fixed(data: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The `count` integers (int64) `pack_fixed(values, bits)` wrote: value j starts at bit j * bits."""
    if len(data) * 8 < count * bits:
        raise ValueError(f"{len(data)} bytes hold fewer than {count} values of {bits} bits: the data is damaged")
    if bits > 8:
        return _read(_bytes_to_words(data), torch.arange(count, dtype=torch.int64) * bits, bits)
    step, need = _SLICE * bits // 8, (count * bits + 7) // 8  # bytes of _SLICE values; bytes of `count`
    parts = [_unpack_bytes(data[i:min(i + step, need)], bits) for i in range(0, need, step)]
    return torch.cat(parts)[:count] if parts else torch.empty(0, dtype=torch.int64)


def _unpack_bytes(data: torch.Tensor, bits: int) -> torch.Tensor:
    """The values `_pack_bytes` wrote in `data` (8 for each `bits` bytes, the last bytes padded with zeros)."""
    raw = torch.cat([data, data.new_zeros(-len(data) % bits)]).to(torch.int64).view(-1, bits)
    packed = (raw << (8 * torch.arange(bits - 1, -1, -1))).sum(1)
    return ((packed[:, None] >> (bits * torch.arange(7, -1, -1))) & ((1 << bits) - 1)).flatten()


# ---------------------------------------------------------------- Huffman encoding and decoding

def encode(symbols: torch.Tensor, lengths: torch.Tensor, block: int = BLOCK) -> dict:
    """Huffman-code `symbols` (0..len(lengths)-1, each with a code) with the canonical code of `lengths`. Returns
    {"data": uint8 bytes, "block_bits": int32 bits of each block of `block` symbols (so blocks can be decoded
    side by side), "block": block, "count": n, "bits": total bits}."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    if block < 1:
        raise ValueError(f"block={block} must be a positive number of symbols")
    if len(lengths) and int(lengths.max()) > MAX_CODE_BITS:
        raise ValueError(f"code lengths up to {int(lengths.max())} bits: at most {MAX_CODE_BITS} are supported; "
                         "build them with code_lengths")
    symbols = torch.as_tensor(symbols).flatten()
    n = len(symbols)
    if n and (int(symbols.min()) < 0 or int(symbols.max()) >= len(lengths)):
        raise ValueError(f"symbols range {int(symbols.min())}..{int(symbols.max())} but the code has "
                         f"{len(lengths)} symbols: build the lengths from these symbols' counts")
    # CHUNK symbols (whole blocks) at a time: a 66M-symbol stream coded at once took 5 GB of int64 temporaries
    step = block * max(1, CHUNK // block)
    starts = range(0, n, step)
    total = 0
    for i in starts:
        length = lengths[symbols[i:i + step].to(torch.int64)]
        if int(length.min()) == 0:
            raise ValueError("a symbol with code length 0 (count 0 when the code was built) occurs in the stream: "
                             "build the lengths from these symbols' counts")
        total += int(length.sum())
    words = torch.zeros(total // 32 + 2, dtype=torch.int64)
    codes = canonical_codes(lengths)
    offset, block_ends = 0, []
    for i in starts:
        chunk = symbols[i:i + step].to(torch.int64)
        length = lengths[chunk]
        ends = torch.cumsum(length, 0) + offset
        _add_codes(words, codes[chunk], length, ends - length)
        block_ends.append(torch.cat([ends[block - 1::block], ends[-1:]])[: -(-len(ends) // block)])
        offset = int(ends[-1])
    block_ends = torch.cat(block_ends) if block_ends else torch.zeros(0, dtype=torch.int64)
    blocks = torch.diff(block_ends, prepend=torch.zeros(1, dtype=torch.int64))
    data = _words_to_bytes(words)[: (total + 7) // 8].clone()
    return {"data": data, "block_bits": blocks.to(torch.int32), "block": block, "count": n, "bits": total}


def decode(stream: dict, lengths: torch.Tensor) -> torch.Tensor:
    """The int64 symbols of a stream written by `encode` with the code of `lengths`; ValueError when its
    block lengths do not add up (a damaged stream).
    Blocks are decoded side by side, one symbol of each per step: the next `width` bits (the longest code) index a
    table of 2**width entries (above 20 bits, a binary search), which gives the symbol and its length."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    n, total, block = int(stream["count"]), int(stream["bits"]), int(stream["block"])
    blocks = stream["block_bits"].to(torch.int64)
    if n == 0:
        return torch.empty(0, dtype=torch.int64)
    if len(blocks) != -(-n // block) or int(blocks.sum()) != total:
        raise ValueError(f"the stream's block lengths do not add up to its {total} bits: the data is damaged")
    order = _canonical_order(lengths)
    width = int(lengths.max())
    left = canonical_codes(lengths)[order] << (width - lengths[order])  # ascending
    table = torch.searchsorted(left, torch.arange(1 << width), right=True) - 1 if width <= 20 else None
    size = lengths[order]
    starts = torch.cumsum(blocks, 0) - blocks
    out = torch.empty(n, dtype=torch.int64)
    group = max(1, CHUNK // block)  # blocks decoded together: their bytes alone are widened to int64 words
    for g in range(0, len(blocks), group):
        at = starts[g:g + group]
        first = int(at[0]) >> 3
        end = int(at[-1] + blocks[g:g + group][-1])  # the group's last bit
        words = _bytes_to_words(stream["data"][first:(end + 7) // 8])
        at = at - 8 * first
        count = min(n - g * block, len(at) * block)
        steps = min(block, count)
        found = torch.empty((steps, len(at)), dtype=torch.int64)
        with one_thread():
            for j in range(steps):  # the j-th symbol of every block at once
                window = _read(words, at, width)
                index = table[window] if table is not None else torch.searchsorted(left, window, right=True) - 1
                found[j] = index
                at = (at + size[index]).clamp_(max=end - 8 * first)  # a short last block stays at its end
        out[g * block:g * block + count] = order[found.T.flatten()[:count]]
    return out


# ---------------------------------------------------------------- one self-contained coded stream

def compress_symbols(symbols: torch.Tensor, alphabet: int) -> dict:
    """{"lengths": uint8 code length per symbol 0..alphabet-1, and encode's fields}: decodable on its own."""
    symbols = torch.as_tensor(symbols).flatten()
    if symbols.is_floating_point() or symbols.dtype == torch.bool:
        symbols = symbols.to(torch.int64)
    counts = torch.zeros(alphabet, dtype=torch.int64)
    for i in range(0, len(symbols), CHUNK):  # uint8 symbols stay uint8: no int64 copy of the whole stream
        found = torch.bincount(symbols[i:i + CHUNK].to(torch.int64), minlength=alphabet)
        if len(found) > len(counts):
            counts = torch.cat([counts, counts.new_zeros(len(found) - len(counts))])
        counts += found
    if len(counts) > alphabet:
        raise ValueError(f"symbols go up to {len(counts) - 1}, beyond the alphabet of {alphabet}: raise alphabet")
    lengths = code_lengths(counts)
    return {"lengths": lengths.to(torch.uint8), **encode(symbols, lengths)}


def decompress_symbols(coded: dict) -> torch.Tensor:
    """The int64 symbols of a `compress_symbols` dict."""
    return decode(coded, coded["lengths"].to(torch.int64))


# ---------------------------------------------------------------- relative indices

def relative_indices(positions: torch.Tensor, index_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gaps, real): Han et al.'s relative index (2016, figure 2) of each entry, and which are real (not padding).
    positions: ascending, distinct flat (row-major) int64 indices of the kept weights. gaps[j]: positions skipped
    since the previous entry (the first counts from -1), < 2**index_bits; a longer gap gets padding entries (real
    False, holding a zero weight) every 2**index_bits positions."""
    if not 1 <= int(index_bits) <= 16:
        raise ValueError(f"index_bits={index_bits} must be 1..16 (Han et al. used 5 for fully connected layers)")
    positions = torch.as_tensor(positions, dtype=torch.int64).flatten()
    gap = torch.diff(positions, prepend=torch.tensor([-1])) - 1
    if len(gap) and int(gap.min()) < 0:
        raise ValueError("positions must be distinct and ascending (sort them, e.g. torch.nonzero of a mask)")
    padding = gap >> index_bits  # padding entries before each real entry
    entries = padding + 1
    real_at = torch.cumsum(entries, 0) - 1
    total = int(real_at[-1]) + 1 if len(real_at) else 0
    gaps = torch.full((total,), (1 << index_bits) - 1, dtype=torch.int64)
    gaps[real_at] = gap & ((1 << index_bits) - 1)
    real = torch.zeros(total, dtype=torch.bool)
    real[real_at] = True
    return gaps, real


def positions_from_gaps(gaps: torch.Tensor) -> torch.Tensor:
    """Flat position of every entry (padding included) from its relative index: cumsum(gap + 1) - 1."""
    return torch.cumsum(torch.as_tensor(gaps, dtype=torch.int64) + 1, 0) - 1
