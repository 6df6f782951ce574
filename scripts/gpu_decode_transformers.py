"""Greedy decode tokens/s of transformers on the same model and prompts as `gpu_check decode-bench` (the peer
measured side by side in scripts/gpu-check.sh). Prints `RESULT decode-bench engine=transformers ...` lines.

    python3 scripts/gpu_decode_transformers.py MODEL_DIR [--batch 1,32] [--new-tokens 128] [--prompt-len 32]
"""

import argparse
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-len", type=int, default=32)
    args = parser.parse_args()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).to("cuda").eval()
    vocab = model.config.vocab_size
    for batch in [int(b) for b in args.batch.split(",")]:
        # The prompts gpu_check builds: row r, position i -> 1 + (r * 7919 + i * 104729) % vocab ... as u32.
        ids = torch.tensor(
            [[(1 + (r * 7919 + i * 104_729)) % vocab for i in range(args.prompt_len)] for r in range(batch)],
            device="cuda",
        )
        mask = torch.ones_like(ids)
        common = dict(attention_mask=mask, do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=4, min_new_tokens=4, **common)
            torch.cuda.synchronize()
            started = time.time()
            out = model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **common)
            torch.cuda.synchronize()
        seconds = time.time() - started
        tokens = (out.shape[1] - ids.shape[1]) * batch
        print(
            f"RESULT decode-bench engine=transformers-{__import__('transformers').__version__} dtype=BF16 "
            f"batch={batch} prompt_len={args.prompt_len} new_tokens={tokens} seconds={seconds:.3f} "
            f"tokens_per_second={tokens / seconds:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
