"""transformers 5.23 side of `cargo bench -p evomerge-vision --bench vision`: the same work on the same
tiny fixtures, CPU, median of 7 runs after a warm-up.

Run: /root/pyref/models/bin/python crates/vision/bench/bench_transformers.py [--threads N]
(torch 2.15 CPU, transformers 5.23, Pillow 13; PIL image processors since torchvision is absent.)
"""

import argparse
import os
import statistics
import time

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "..", "tests", "fixtures", "vision")
QUESTION = "USER: <image>\nWhat is in the picture? ASSISTANT:"


def median_time(reps, fn):
    fn()
    runs = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("threads:", torch.get_num_threads())
    image_path = os.path.join(FIX, "images", "test.png")
    for name, cls in [("llava", LlavaForConditionalGeneration), ("llava_next", LlavaNextForConditionalGeneration)]:
        d = os.path.join(FIX, name)
        model = cls.from_pretrained(d).eval()
        proc = AutoProcessor.from_pretrained(d)

        n_encode = 32

        def encode():
            with torch.no_grad():
                for _ in range(n_encode):
                    img = Image.open(image_path)
                    inputs = proc.image_processor(images=img, return_tensors="pt")
                    kw = {"image_sizes": inputs["image_sizes"]} if "image_sizes" in inputs else {}
                    model.model.get_image_features(pixel_values=inputs["pixel_values"], **kw)

        secs = median_time(args.reps, encode)
        print(f"{name}: encode {n_encode / secs:.1f} images/s ({secs * 1e3 / n_encode:.3f} ms/image)")

        n_vqa, batch = 8, 4
        proc.tokenizer.padding_side = "left"

        def vqa():
            with torch.no_grad():
                for start in range(0, n_vqa, batch):
                    imgs = [Image.open(image_path) for _ in range(batch)]
                    inputs = proc(images=imgs, text=[QUESTION] * batch, return_tensors="pt", padding=True)
                    out = model.generate(**inputs, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                                         eos_token_id=None, pad_token_id=0)
                    assert out.shape[1] - inputs["input_ids"].shape[1] == 16

        secs = median_time(args.reps, vqa)
        print(f"{name}: vqa {n_vqa / secs:.1f} answers/s ({secs * 1e3 / n_vqa:.1f} ms/answer, 16 new tokens, batch 4)")


if __name__ == "__main__":
    main()
