"""Content path trees: the Huffman-coded tree of Candlepin's v3 certificates, and matching against it.

A v3 entitlement or content access certificate lists the content paths it grants in extension
1.3.6.1.4.1.2312.9.7, in a compact form clients (python-rhsm's ``rhsm.pathtree``) decode:

- a zlib stream of the *words* (path segments) separated by NUL bytes, one of them the empty word
  that ends a node's list of edges; a word's Huffman weight is its position in the list (1-based),
  so the list goes from the rarest word to the most frequent;
- right after the zlib stream, a bit stream: the number of nodes (one byte below 128, else 128 + the
  count of big-endian bytes that follow), then for the root and each other node in weight order
  (weight 1, 2, ...), its edges as (word code, node code) pairs and the end-of-node word's code,
  padded with zero bits to a whole byte.

Both Huffman trees are built the way the decoder builds them: a min-queue of (weight, arrival)
where two equal weights leave in arrival order, the first of a pair going left (bit 0). A node with
no edges ends a granted path; the encoder shares one such leaf among all paths, and identical
subtrees are stored once (a path tree of 5,000 repositories mostly differs in a few segments).

A segment starting with ``$`` (``$releasever``, ``$basearch``) matches any segment, as the CDN
does: :class:`PathMatcher` answers the same question as the decoded tree, for the content server.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable
from typing import Any

__all__ = ["PathMatcher", "encode_paths", "path_segments"]

# The decoder treats a request for ".../listing" directly below a granted node as granted.
LISTING = "listing"


def path_segments(path: str) -> list[str]:
    """A content path's segments (empty ones, from doubled or edge slashes, dropped)."""
    return [s for s in path.split("/") if s]


class _Trie:
    __slots__ = ("children", "end")

    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.end = False


def _trie(paths: Iterable[str]) -> _Trie:
    root = _Trie()
    for path in paths:
        segments = path_segments(path)
        if not segments:
            continue  # "/" would grant everything: never from a content set
        node = root
        for seg in segments:
            node = node.children.setdefault(seg, _Trie())
        node.end = True
    return root


def _huffman_codes(weights: list[int]) -> list[str]:
    """Codes of leaves with these weights, built exactly as python-rhsm's HuffmanNode.build_tree."""
    # Heap entries: (weight, arrival, node); a node is a leaf index or a (left, right) pair.
    heap: list[tuple[int, int, Any]] = [(w, i, i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    arrival = len(heap)
    while len(heap) > 1:
        lw, _, left = heapq.heappop(heap)
        rw, _, right = heapq.heappop(heap)
        heapq.heappush(heap, (lw + rw, arrival, (left, right)))
        arrival += 1
    codes = [""] * len(weights)
    stack: list[tuple[Any, str]] = [(heap[0][2], "")]
    while stack:
        node, code = stack.pop()
        if isinstance(node, tuple):
            stack.append((node[0], code + "0"))
            stack.append((node[1], code + "1"))
        else:
            codes[node] = code
    return codes


def encode_paths(paths: Iterable[str]) -> bytes | None:
    """The extension value (before its DER OCTET STRING wrapping) granting ``paths``; None if none."""
    root = _trie(paths)
    if not root.children:
        return None
    # Intern nodes bottom-up: a node is its sorted edges; the leaf (no edges) is shared by every path.
    ids: dict[tuple[tuple[str, int], ...], int] = {}
    nodes: list[tuple[tuple[str, int], ...]] = []

    def intern(edges: tuple[tuple[str, int], ...]) -> int:
        found = ids.get(edges)
        if found is None:
            found = ids[edges] = len(nodes)
            nodes.append(edges)
        return found

    leaf = intern(())

    def targets(node: _Trie) -> list[int]:
        """What an edge to this trie node points at: its interned subtree, and the leaf if a path ends here."""
        if not node.children:
            return [leaf]
        out = [intern(_edges(node))]
        if node.end:
            out.append(leaf)  # a granted path that is also the prefix of a longer one
        return out

    def _edges(node: _Trie) -> tuple[tuple[str, int], ...]:
        return tuple(sorted((word, target) for word, child in node.children.items() for target in targets(child)))

    root_edges = _edges(root)
    # The decoder's path-node tree needs two leaves at least: an unreachable spare node when alone.
    spare = len(nodes) < 2
    node_count = len(nodes) + (1 if spare else 0)
    refs = [0] * node_count
    word_freq: dict[str, int] = {"": node_count + 1}  # every node's list ends with the empty word
    for edges in [root_edges, *nodes]:
        for word, target in edges:
            refs[target] += 1
            word_freq[word] = word_freq.get(word, 0) + 1
    # Weight = position in ascending order of use: the most used gets the shortest code.
    order = sorted(range(node_count), key=lambda n: (refs[n], n))
    node_codes_by_rank = _huffman_codes(list(range(1, node_count + 1)))
    node_code = {n: node_codes_by_rank[rank] for rank, n in enumerate(order)}
    words = sorted(word_freq, key=lambda w: (word_freq[w], w))
    word_codes_list = _huffman_codes(list(range(1, len(words) + 1)))
    word_code = dict(zip(words, word_codes_list))

    bits: list[str] = []
    for edges in [root_edges, *(nodes[n] if n < len(nodes) else () for n in order)]:
        for word, target in edges:
            bits.append(word_code[word])
            bits.append(node_code[target])
        bits.append(word_code[""])
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    body = int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
    total = node_count + 1  # with the root
    if total < 128:
        count = bytes([total])
    else:
        raw = total.to_bytes((total.bit_length() + 7) // 8, "big")
        count = bytes([128 + len(raw)]) + raw
    for word in words:
        if "\0" in word:
            raise ValueError("a content path segment holds a NUL byte")
    return zlib.compress("\0".join(words).encode()) + count + body


class PathMatcher:
    """Whether a request path lies under one of a certificate's content paths.

    The same rule as the decoded tree: every segment of a granted path must match the request's
    segment at that place, exactly or through a ``$variable``; the request may go on below it.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        self._root = _trie(paths)

    def __bool__(self) -> bool:
        return bool(self._root.children)

    def grants(self, path: str) -> bool:
        return _match(self._root, path_segments(path))


def _match(node: _Trie, words: list[str]) -> bool:
    if node.end:
        return True
    if not words:
        return False
    if len(words) == 1 and words[0] == LISTING:
        return True
    tries = [node.children[words[0]]] if words[0] in node.children else []
    tries += [child for word, child in node.children.items() if word.startswith("$")]
    return any(_match(child, words[1:]) for child in tries)
