"""Python reference for crates/eval/benches/rouge.rs: the paper's rouge_ja work on the same 500 pairs
(MecabTokenizer = emoji 2.10.1 + neologdn 0.5.2 + fugashi 1.3.1/unidic-lite 1.0.8, rouge_score 0.1.2 RougeScorer,
then BootstrapAggregator with np.random.seed(42)). Single process, single thread.

Run (from the repository root): /root/pyref/eval/bin/python crates/eval/bench/rouge_python.py
"""
import json
import os
import re
import time

import emoji
import fugashi
import neologdn
import numpy as np
from rouge_score import rouge_scorer, scoring


class MecabTokenizer:
    def __init__(self):
        self.tagger = fugashi.Tagger("-Owakati")

    def tokenize(self, text):
        def white_space_fix(t):
            return " ".join(t.split())

        def remove_emoji(t):
            t = "".join(["" if emoji.is_emoji(c) else c for c in t])
            p = re.compile("[" "\U0001F600-\U0001F64F" "\U0001F300-\U0001F5FF" "\U0001F680-\U0001F6FF"
                           "\U0001F1E0-\U0001F1FF" "\U00002702-\U000027B0" "]+", flags=re.UNICODE)
            return p.sub(r"", t)

        return self.tagger.parse(white_space_fix(neologdn.normalize(remove_emoji(text)))).split()


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rouge_pairs_500.jsonl")
    pairs = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    t = time.perf_counter()
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=MecabTokenizer())
    print(f"dictionary load: {time.perf_counter() - t:.3f} s")
    for p in pairs:                      # warm-up pass
        scorer.score(p["reference"], p["prediction"])
    rounds = 5
    t = time.perf_counter()
    checksum = 0.0
    for _ in range(rounds):
        for p in pairs:
            checksum += scorer.score(p["reference"], p["prediction"])["rougeL"].fmeasure
    secs = time.perf_counter() - t
    n = rounds * len(pairs)
    print(f"tokenize + rouge1/2/L: {n / secs:.0f} items/s ({len(pairs)} items x {rounds} rounds in {secs:.3f} s; checksum {checksum:.6f})")
    t = time.perf_counter()
    for _ in range(rounds):
        agg = scoring.BootstrapAggregator()
        for p in pairs:
            agg.add_scores(scorer.score(p["reference"], p["prediction"]))
        np.random.seed(42)
        checksum += agg.aggregate()["rougeL"].mid.fmeasure
    secs = time.perf_counter() - t
    print(f"... plus bootstrap aggregate (rouge_ja): {n / secs:.0f} items/s ({secs:.3f} s; checksum {checksum:.6f})")


if __name__ == "__main__":
    main()
