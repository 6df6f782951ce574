"""transformers (PyTorch, CPU) side of `cargo bench -p evomerge-mistral --bench generate`: the same synthetic
Mistral shape (hidden 768, 12 layers, intermediate 2048, 12 / 4 heads, vocab 32000, untied head, f32, random
weights), the same prompts (128 tokens, ids from the same formula), the same method: prefill = best time of
`generate(max_new_tokens=1)`, decode = best `generate(max_new_tokens=1 + 32)` minus prefill, greedy, no EOS; batch 1
and 16; torch limited to 2 threads like the Rust run.

    /root/pyref/models/bin/python crates/mistral/bench/transformers_side_by_side.py

Measured with python 3.11, torch 2.15.0 (CPU), transformers 5.23.0.
"""

import json
import os
import time

import torch
import transformers
from transformers import MistralConfig, MistralForCausalLM

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
QUICK = bool(os.environ.get("EVOMERGE_BENCH_QUICK"))


def main():
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    if QUICK:
        shape = dict(hidden=128, layers=2, intermediate=256, heads=4, kv_heads=2, vocab=1000, prompt_len=16,
                     new_tokens=4, repeats=1)
    else:
        shape = dict(hidden=768, layers=12, intermediate=2048, heads=12, kv_heads=4, vocab=32000, prompt_len=128,
                     new_tokens=32, repeats=3)
    config = MistralConfig(
        vocab_size=shape["vocab"], hidden_size=shape["hidden"], intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"], head_dim=shape["hidden"] // shape["heads"],
        max_position_embeddings=4096, rope_theta=1e6, sliding_window=None, tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config).eval().to(torch.float32)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    params = sum(p.numel() for p in model.parameters())
    print(f"synthetic model: {params / 1e6:.1f} M parameters, f32, CPU, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'batch':>6} {'prefill tok/s':>16} {'decode tok/s':>16}")
    for batch in (1, 16):
        ids = torch.tensor(
            [[(b * 7919 + i * 104729 + 1) % (shape["vocab"] - 3) + 3 for i in range(shape["prompt_len"])]
             for b in range(batch)], dtype=torch.long)
        mask = torch.ones_like(ids)

        def run(new):
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                     do_sample=False, num_beams=1)
            assert out.shape[1] == shape["prompt_len"] + new

        def best(new):
            times = []
            for _ in range(shape["repeats"]):
                t = time.perf_counter()
                run(new)
                times.append(time.perf_counter() - t)
            return min(times)

        run(2)  # warm-up
        prefill = best(1)
        full = best(1 + shape["new_tokens"])
        prefill_tps = batch * shape["prompt_len"] / prefill
        decode_tps = batch * shape["new_tokens"] / max(full - prefill, 1e-9)
        print(f"{batch:>6} {prefill_tps:>16.1f} {decode_tps:>16.1f}")
        print(json.dumps({"impl": "transformers", "batch": batch, "prefill_tok_s": prefill_tps,
                          "decode_tok_s": decode_tps, "prefill_s": prefill, "full_s": full}))


if __name__ == "__main__":
    main()
