#!/usr/bin/env python3
"""Zeroes the token-embedding rows of a CLIP text encoder (.safetensors, f32) that no prompt of a
golden uses, in place; the file keeps its layout and every other byte. Standard library only.

usage: slim_text_encoder.py TEXT_ENCODER.safetensors tokenizer.safetensors

tokenizer.safetensors is the committed golden: its `input_ids` rows are the token ids (BOS, EOS,
padding included) of every prompt the goldens use, so those prompts encode exactly as before.
"""

import json
import struct
import sys

NAME = "text_model.embeddings.token_embedding.weight"


def header(raw):
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), 8 + n


def main(model_path, tokenizer_path):
    tok = open(tokenizer_path, "rb").read()
    h, base = header(tok)
    ids_info = h["input_ids"]
    assert ids_info["dtype"] == "I64", ids_info
    a, b = ids_info["data_offsets"]
    ids = set(struct.unpack(f"<{(b - a) // 8}q", tok[base + a : base + b]))

    raw = bytearray(open(model_path, "rb").read())
    h, base = header(raw)
    info = h[NAME]
    assert info["dtype"] == "F32", info
    rows, width = info["shape"]
    a, _ = info["data_offsets"]
    row = width * 4
    zero = bytes(row)
    for r in range(rows):
        if r not in ids:
            start = base + a + r * row
            raw[start : start + row] = zero
    open(model_path, "wb").write(raw)
    print(f"slim_text_encoder: kept {len(ids)} of {rows} token rows", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
