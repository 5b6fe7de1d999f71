"""Canonical Huffman coding of integer symbol streams (the last stage of Deep Compression).

Hand-written on purpose: the PyPI coders (``dahuffman``, ``huffman``) work symbol by symbol in pure
Python and store their code table pickled or as a whole dict, while Deep Compression needs millions of
small integers coded with a compact stored table. A *canonical* code is fully defined by one code
length per symbol, so the table costs one byte per alphabet entry and nothing executes on load.
Encoding and decoding are vectorised with numpy; decoding follows the bit positions by pointer
jumping (O(n log n) array work instead of a Python loop per symbol).

Stream format written by :func:`pack` (little endian)::

    u32 alphabet size | u64 symbol count | u64 payload bit count | u8[alphabet] code lengths | payload
"""

from __future__ import annotations

import heapq
import struct

import numpy as np

MAX_CODE_LENGTH = 16  # lengths are limited so that the decoding table has at most 2**16 entries
_HEADER = struct.Struct("<IQQ")


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code length of each symbol (0 for unused symbols), limited to ``max_length`` bits.

    Lengths over the limit (only for extremely skewed counts) are avoided by halving the counts and
    rebuilding, which keeps the code near optimal while bounding the decoder's table size.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers")
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.uint8)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used] = 1
        return lengths
    if len(used) > 2**max_length:
        raise ValueError(f"{len(used)} symbols do not fit codes of at most {max_length} bits")
    weights = counts[used].copy()
    while True:
        depth = _huffman_depths(weights)
        if depth.max() <= max_length:
            lengths[used] = depth
            return lengths
        weights = np.maximum((weights + 1) // 2, 1)


def _huffman_depths(weights: np.ndarray) -> np.ndarray:
    """Depth of each leaf in the Huffman tree of ``weights`` (at least two leaves)."""
    n = len(weights)
    parent = np.zeros(2 * n - 1, dtype=np.int64)
    heap = [(int(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    next_id = n
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (w1 + w2, next_id))
        next_id += 1
    depth = np.zeros(2 * n - 1, dtype=np.int64)
    for node in range(2 * n - 3, -1, -1):  # parents have larger ids: walk from the root down
        depth[node] = depth[parent[node]] + 1
    return depth[:n]


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol from its length (shorter first, then by symbol value)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    used = np.flatnonzero(lengths)
    if len(used) == 0:
        return codes
    if (lengths[used] > MAX_CODE_LENGTH).any():
        raise ValueError(f"code length over {MAX_CODE_LENGTH} bits")
    if sum(2.0 ** -int(n) for n in lengths[used]) > 1.0 + 1e-12:
        raise ValueError("code lengths violate the Kraft inequality: not a prefix code")
    order = used[np.lexsort((used, lengths[used]))]
    code, prev = 0, int(lengths[order[0]])
    for i, sym in enumerate(order):
        n = int(lengths[sym])
        if i:
            code = (code + 1) << (n - prev)
        codes[sym] = code
        prev = n
    return codes


def encode(symbols: np.ndarray, alphabet_size: int) -> tuple[np.ndarray, bytes, int]:
    """``(code lengths, packed bits, bit count)`` for ``symbols`` in ``[0, alphabet_size)``."""
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if len(symbols) and (symbols.min() < 0 or symbols.max() >= alphabet_size):
        raise ValueError(f"symbols must lie in [0, {alphabet_size})")
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet_size))
    codes = canonical_codes(lengths)
    sym_len = lengths.astype(np.int64)[symbols]
    n_bits = int(sym_len.sum())
    bits = np.zeros(n_bits, dtype=np.uint8)
    chunk = 1 << 18  # bound the temporary (chunk x 16) bit matrix
    start = 0
    for lo in range(0, len(symbols), chunk):
        n, c = sym_len[lo : lo + chunk], codes[symbols[lo : lo + chunk]]
        shift = n[:, None] - 1 - np.arange(MAX_CODE_LENGTH)[None, :]
        valid = shift >= 0
        matrix = (c[:, None] >> np.where(valid, shift, 0)) & 1
        piece = matrix[valid].astype(np.uint8)  # row-major: each code MSB first, codes in order
        bits[start : start + len(piece)] = piece
        start += len(piece)
    return lengths, np.packbits(bits).tobytes(), n_bits


def decode(lengths: np.ndarray, data: bytes, n_symbols: int, n_bits: int) -> np.ndarray:
    """Inverse of :func:`encode`; raises ValueError when ``data`` does not hold ``n_symbols`` codes."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if n_symbols == 0:
        if n_bits:
            raise ValueError("bits present for an empty stream")
        return np.zeros(0, dtype=np.int64)
    if len(data) * 8 < n_bits or n_bits < 1:
        raise ValueError("Huffman payload shorter than its bit count")
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    # lookup table: every width-bit window -> (symbol, code length); length 0 marks an invalid prefix
    table_sym = np.zeros(1 << width, dtype=np.int64)
    table_len = np.zeros(1 << width, dtype=np.int64)
    for sym in np.flatnonzero(lengths):
        n = int(lengths[sym])
        lo = int(codes[sym]) << (width - n)
        table_sym[lo : lo + (1 << (width - n))] = sym
        table_len[lo : lo + (1 << (width - n))] = n
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:n_bits]
    bits = np.concatenate([bits, np.zeros(width, dtype=np.uint8)]).astype(np.int64)
    window = np.zeros(n_bits, dtype=np.int64)
    for j in range(width):
        window = (window << 1) | bits[j : j + n_bits]
    step = table_len[window]
    end = n_bits  # sentinel position: pointing to itself
    nxt = np.append(np.minimum(np.arange(n_bits) + np.where(step > 0, step, n_bits + 1), end), end)
    positions = _follow(nxt, n_symbols)
    if positions.max() >= n_bits or (step[positions] == 0).any() or nxt[positions[-1]] != n_bits:
        raise ValueError("Huffman payload is corrupted or does not end where its header says")
    return table_sym[window[positions]]


def _follow(nxt: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` positions of the chain 0, nxt[0], nxt[nxt[0]], ... (vectorised).

    Jumps of ``block`` steps (by repeated squaring of ``nxt``) find one start per block in a short
    Python loop; the blocks are then walked in parallel, one numpy gather per step.
    """
    k = max(0, int(np.ceil(np.log2(max(1.0, np.sqrt(count))))))
    block = 1 << k
    jump = nxt
    for _ in range(k):
        jump = jump[jump]
    n_blocks = -(-count // block)
    starts = np.zeros(n_blocks, dtype=np.int64)
    pos = 0
    for b in range(n_blocks):
        starts[b] = pos
        pos = int(jump[pos])
    walk = np.empty((n_blocks, block), dtype=np.int64)
    walk[:, 0] = starts
    for j in range(1, block):
        walk[:, j] = nxt[walk[:, j - 1]]
    return walk.ravel()[:count]


def pack(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """One self-describing byte string: header, code-length table and coded bits."""
    lengths, data, n_bits = encode(symbols, alphabet_size)
    n = int(np.asarray(symbols).size)
    return _HEADER.pack(alphabet_size, n, n_bits) + lengths.astype(np.uint8).tobytes() + data


def unpack(buf: bytes | memoryview, offset: int = 0) -> tuple[np.ndarray, int]:
    """``(symbols, offset after the stream)`` from a :func:`pack` string inside ``buf``."""
    view = memoryview(buf)
    if len(view) < offset + _HEADER.size:
        raise ValueError("Huffman stream header is truncated")
    alphabet, n_symbols, n_bits = _HEADER.unpack_from(view, offset)
    pos = offset + _HEADER.size
    table_end = pos + alphabet
    data_end = table_end + (n_bits + 7) // 8
    if len(view) < data_end:
        raise ValueError("Huffman stream is truncated")
    lengths = np.frombuffer(view[pos:table_end], dtype=np.uint8)
    return decode(lengths, bytes(view[table_end:data_end]), n_symbols, n_bits), data_end


def fixed_length_bytes(n_symbols: int, alphabet_size: int) -> int:
    """Bytes of the same stream stored with ``ceil(log2(alphabet))`` bits per symbol (the baseline)."""
    bits_per = max(1, int(np.ceil(np.log2(max(2, alphabet_size)))))
    return (n_symbols * bits_per + 7) // 8
