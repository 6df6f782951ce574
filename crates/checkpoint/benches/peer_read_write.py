"""Python peer of benches/read_write.rs: same Mistral-shaped bf16 model, written with
safetensors.torch.save_file in <=500 MB shards, then every tensor read with safe_open and
converted to float32.

    /root/pyref/models/bin/python crates/checkpoint/benches/peer_read_write.py [--layers 4] [--dir /tmp/x]

Versions measured: torch 2.15.0 (CPU), safetensors 0.8.0.
"""

import argparse
import json
import os
import resource
import shutil
import time

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def mistral_plan(layers):
    hidden, inter, kv, vocab = 2048, 7168, 512, 32000
    plan = [("model.embed_tokens.weight", (vocab, hidden))]
    for l in range(layers):
        p = f"model.layers.{l}."
        plan += [
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.weight", (kv, hidden)),
            (p + "self_attn.v_proj.weight", (kv, hidden)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
        ]
    plan += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return plan


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dir", default="/tmp/evomerge-ckpt-bench-py")
    args = ap.parse_args()
    out = os.path.join(args.dir, "model")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    plan = mistral_plan(args.layers)
    nbytes = sum(2 * torch.Size(s).numel() for _, s in plan)

    max_numel = max(torch.Size(s).numel() for _, s in plan)
    j = torch.arange(max_numel, dtype=torch.int64)
    pattern = ((j * 31) % 1024).to(torch.float32) * 1e-3 - 0.5
    del j

    start = time.perf_counter()
    shards, current, size = [], {}, 0
    for i, (name, shape) in enumerate(plan):
        n = torch.Size(shape).numel()
        if current and size + 2 * n > 500_000_000:
            shards.append(current)
            current, size = {}, 0
        current[name] = pattern[:n].reshape(shape).to(torch.bfloat16)
        size += 2 * n
    shards.append(current)
    weight_map = {}
    for k, tensors in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, os.path.join(out, fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in tensors})
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": nbytes}, "weight_map": weight_map}, fh)
    del shards, current, pattern
    write_s = time.perf_counter() - start
    print(f"write (f32 -> bf16 + save_file): {write_s:.2f} s, {nbytes / 1e9 / write_s:.2f} GB/s written")

    start = time.perf_counter()
    checksum = 0.0
    files = sorted(set(weight_map.values()))
    for fname in files:
        with safe_open(os.path.join(out, fname), framework="pt") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name).float()
                checksum += float(t.flatten()[t.numel() // 2])
    read_s = time.perf_counter() - start
    print(f"open + read all to f32: {read_s:.2f} s, {nbytes / 1e9 / read_s:.2f} GB/s of bf16 read (checksum {checksum:.3f})")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    shutil.rmtree(out)


if __name__ == "__main__":
    main()
