"""The text formats, OBJ and OFF, and the scanner they share with ASCII PLY.

:func:`text_lines` walks text with numpy one megabyte at a time (counting each line's tokens and
noting its first word), so a file's own length bounds the work and memory; :func:`lines_of` cuts
its lines into the sections a header declares and checks that the file holds them all.
"""

from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from .declared import Declared, MalformedMesh, polygons

#: Text is scanned in chunks of about this many bytes, which bounds the scan's memory (~20 bytes per byte).
_CHUNK_BYTES = 1 << 20

_NEXT_SPACE = re.compile(rb"[ \t\r\n\v\f]")


def _is_space(b: np.ndarray) -> np.ndarray:
    """Where the bytes `b` are whitespace, as bytes.split() sees it."""
    return (b == 32) | ((b >= 9) & (b <= 13))


def text_lines(data: bytes, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Yield ``(tokens, key, pos)`` for the lines of ``data[start:]`` that hold at least one token, in
    order, a chunk of about a megabyte at a time.

    tokens: (L,) int64 whitespace-separated tokens on the line.
    key: (L,) int64 the line's first token as a number: its first byte, plus 256 times its second byte
        when it is longer than one byte ("v" -> 118, "vt" -> 118 + 256 * 116).
    pos: (L,) int64 byte offset of the line's first token in `data`.

    Chunks are cut at whitespace, never inside a token, and a line that spans chunks is carried over,
    so one 20 MB line costs no more memory than many short ones. `start` must follow whitespace.
    """
    buf = np.frombuffer(data, dtype=np.uint8)  # (N,) a view: no copy
    n = len(buf)
    carry_tokens, carry_key, carry_pos = 0, -1, -1  # the open line so far, from earlier chunks
    a = start
    while a < n:
        cut = _NEXT_SPACE.search(data, min(a + _CHUNK_BYTES, n))
        b = cut.start() if cut and a + _CHUNK_BYTES < n else n
        seg = buf[a:b]  # (C,)
        space = _is_space(seg)
        begins = ~space
        begins[1:] &= space[:-1]  # token starts; seg[0] follows whitespace (see above)
        ts = np.flatnonzero(begins)  # (T,) token starts, relative to a
        starts = np.concatenate(([0], np.flatnonzero(seg == 10) + 1))  # (K + 1,) line starts; line K is open
        first = np.searchsorted(ts, starts)  # (K + 1,) index in ts of each line's first token, if it has one
        tokens = np.diff(first, append=len(ts))  # (K + 1,)
        has = tokens > 0
        at = ts[first[has]] + a  # (L,) absolute offsets of first tokens
        after = buf[np.minimum(at + 1, n - 1)].astype(np.int64)
        after[(at + 1 >= n) | _is_space(after)] = 0
        key = np.full(len(starts), -1, dtype=np.int64)
        pos = np.full(len(starts), -1, dtype=np.int64)
        key[has] = buf[at].astype(np.int64) + 256 * after
        pos[has] = at
        tokens[0] += carry_tokens
        if carry_key >= 0:
            key[0], pos[0] = carry_key, carry_pos
        carry_tokens, carry_key, carry_pos = int(tokens[-1]), int(key[-1]), int(pos[-1])
        done = tokens[:-1] > 0  # (K,) complete lines that hold a token
        if done.any():
            yield tokens[:-1][done], key[:-1][done], pos[:-1][done]
        a = b
    if carry_tokens:
        yield np.array([carry_tokens]), np.array([carry_key]), np.array([carry_pos])


def declared_obj(data: bytes) -> Declared:
    """Count "v" lines and the corners of each "f" line: PyTorch3D fan-triangulates polygons."""
    vertices = 0
    corners: list[np.ndarray] = []  # per chunk: (F,) corners of its face lines
    for tokens, key, _ in text_lines(data):
        vertices += int(np.count_nonzero(key == ord("v")))
        corners.append(tokens[key == ord("f")] - 1)
    return polygons(np.concatenate(corners) if corners else np.zeros(0, np.int64), vertices)


def lines_of(data: bytes, start: int, sections: list[tuple[str, int]],
              skip_comments: bool = False) -> list[tuple[np.ndarray, int]]:
    """Consecutive sections of lines (e.g. [("vertices", V), ("faces", F)]) starting at byte `start`:
    for each, the (n,) token counts of its lines and the byte offset of its first line (-1 if empty).

    Raises :class:`MalformedMesh` when the file holds fewer lines than declared. Lines without tokens
    (and '#' comments if asked) are not counted: numpy's loadtxt, which PyTorch3D uses, skips them.
    """
    bounds = np.cumsum([0] + [n for _, n in sections])  # (S + 1,) first line of each section
    tokens_of: list[list[np.ndarray]] = [[] for _ in sections]
    first_at = [-1] * len(sections)
    seen = 0
    for tokens, key, pos in text_lines(data, start):
        if skip_comments:
            keep = key % 256 != ord("#")
            tokens, pos = tokens[keep], pos[keep]
        index = np.arange(seen, seen + len(tokens))  # (L,) line numbers within the body
        for s in range(len(sections)):
            inside = np.flatnonzero((index >= bounds[s]) & (index < bounds[s + 1]))
            if len(inside):
                tokens_of[s].append(tokens[inside])
                first_at[s] = int(pos[inside[0]]) if first_at[s] < 0 else first_at[s]
        seen += len(tokens)
        if seen >= bounds[-1]:
            break
    for (name, n), lo in zip(sections, bounds):
        if seen < lo + n:
            raise MalformedMesh(f"its header declares {n:,} {name} but the file holds data for only {max(seen - lo, 0):,}")
    return [(np.concatenate(t) if t else np.zeros(0, np.int64), at) for t, at in zip(tokens_of, first_at)]



def declared_off(data: bytes) -> Declared:
    """OFF: "OFF", then "V F E", then V vertex lines and F face lines "n i1 .. in [colour]"."""
    words, body = _off_counts(data)
    try:
        n_verts, n_faces = int(words[0]), int(words[1])
    except (IndexError, ValueError):
        raise MalformedMesh("it has no 'vertices faces edges' counts line after 'OFF'") from None
    if n_verts < 0 or n_faces < 0:
        raise MalformedMesh("its counts line has negative counts")
    _, (face_tokens, first_face) = lines_of(data, body, [("vertices", n_verts), ("faces", n_faces)], skip_comments=True)
    if not n_faces:
        return polygons(face_tokens, n_verts)
    # A face line may end in an RGB(A) colour, equally wide on every line (PyTorch3D insists), so the
    # corners are its tokens less the count and the colour width that the first face line shows.
    colour = int(face_tokens[0]) - 1 - int(_first_token(data, first_face))
    return polygons(face_tokens - 1 - max(colour, 0), n_verts)


def _off_counts(data: bytes, limit: int = 1 << 16) -> tuple[list[bytes], int]:
    """The words of an OFF file's counts line, as PyTorch3D finds it (after an optional "OFF" on the
    first line that holds anything), and the offset where the next line starts. Looks only at the first
    `limit` bytes: a header hidden after pages of blank lines is not one."""
    pos, seen_first = 0, False
    while pos < min(len(data), limit):
        newline = data.find(b"\n", pos)
        end = newline + 1 if newline >= 0 else len(data)
        line, pos = data[pos:end], end
        words = line.split(b"#")[0].split()
        if not words:
            continue
        if not seen_first and line[:3].lower() == b"off":
            seen_first, words = True, line[3:].split(b"#")[0].split()
            if not words:
                continue
        return words, pos
    return [], pos


def _first_token(data: bytes, pos: int) -> bytes:
    """The token starting at byte `pos` (at most 32 bytes of it)."""
    return data[pos:pos + 32].split()[0]
