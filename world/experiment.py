"""Development evidence for the miniature world: parents, default merges and an oracle sweep, in Python.

    python world/experiment.py vlm   [--split test] [--sweep]   # the evovlm target (Japanese VQA)
    python world/experiment.py llm   [--split test] [--sweep]   # the evollm target (Japanese word problems, evollm/ models)
    python world/experiment.py norms                             # task-vector norms and cosines

Merges are mergekit's generalized task arithmetic on the language models' float16 weights (read as float32):
`task_arithmetic`, `ties` (magnitude top-k, sign consensus by sum, normalised) and `dare_ties` (seeded random
drop + 1/density rescale, then the same consensus). The VLM keeps vlm_en's tower and projector; the merged
language model replaces its own. Scores: a character ROUGE-L F1 proxy (x100) here; `--pairs DIR` also writes
{"reference","prediction"} JSONL for the repository's Japanese ROUGE-L (`evomerge score rouge-ja`), and the
math target uses the MGSM rule (last number in the answer equals `answer_number`).
"""

import argparse
import itertools
import random
import json
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train as W  # noqa: E402

# ---------------------------------------------------------------------------------------------- models


def lm_state(name):
    from safetensors.torch import load_file
    sd = load_file(os.path.join(W.MODELS, name, "model.safetensors"))
    if name == "vlm_en":
        out = {}
        for k, v in sd.items():
            if k.startswith("language_model."):
                out[k[len("language_model."):]] = v.float()
        return out
    return {k: v.float() for k, v in sd.items()}


def load_vlm():
    from transformers import LlavaForConditionalGeneration
    return LlavaForConditionalGeneration.from_pretrained(os.path.join(W.MODELS, "vlm_en"), dtype=torch.float32).eval()


def lm_from_state(sd):
    from transformers import MistralForCausalLM
    tok = W.load_tokenizer()
    m = MistralForCausalLM(W.lm_config(tok))
    m.load_state_dict(sd)
    return m.eval()


# ---------------------------------------------------------------------------------------------- merging
def sparsify(delta, density, method, gen):
    if density >= 1.0:
        return delta
    if method == "magnitude":
        k = int(density * delta.numel())
        if k <= 0:
            return torch.zeros_like(delta)
        flat = delta.abs().flatten()
        thr = torch.topk(flat, k, sorted=True).values[-1]
        return torch.where(delta.abs() >= thr, delta, torch.zeros_like(delta))
    keep = torch.bernoulli(torch.full(delta.shape, density), generator=gen)
    return delta * keep / density


def merge(base, models, method, weights, densities, seed=0, normalize=True, groups=None):
    """mergekit's generalized task arithmetic. `weights`/`densities`: per model, a number or a function
    (tensor name -> number) for per-layer-group genes."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(base):
        b = base[name]
        ds, ws = [], []
        for i, m in enumerate(models):
            w = weights[i](name) if callable(weights[i]) else weights[i]
            d = densities[i](name) if callable(densities[i]) else densities[i]
            delta = m[name] - b
            if method == "ties":
                delta = sparsify(delta, d, "magnitude", gen)
            elif method == "dare_ties":
                delta = sparsify(delta, d, "random", gen)
            ds.append(delta)
            ws.append(torch.full_like(b, w))
        deltas = torch.stack(ds)
        wt = torch.stack(ws)
        weighted = deltas * wt
        if method in ("ties", "dare_ties"):
            sign = (weighted.sum(0) >= 0).float() * 2 - 1
            mask = (weighted.sign() == sign).float()
            mixed = (weighted * mask).sum(0)
            div = (wt * mask).sum(0)
            div[div == 0] = 1
        else:
            mixed = weighted.sum(0)
            div = wt.sum(0)
            div[div.abs() < 1e-8] = 1
        if normalize:
            mixed = mixed / div
        out[name] = (b + mixed).half().float()  # the merged model is written in float16
    return out


def layer_group(name, n_groups=2):
    m = re.search(r"layers\.(\d+)\.", name)
    if not m:
        return "embed" if "embed" in name else "head"
    return int(m.group(1)) * n_groups // W.LM_SHAPE["num_hidden_layers"]


# ---------------------------------------------------------------------------------------------- generation
@torch.no_grad()
def generate(model, tok, prompts, images=None, max_new=16, batch=64):
    """Greedy answers (text after the prompt, special tokens skipped)."""
    tok.padding_side = "left"
    outs = []
    for s in range(0, len(prompts), batch):
        chunk = prompts[s:s + batch]
        ids = [tok(p)["input_ids"] for p in chunk]
        if images is not None:
            ids = [W.expand_image(tok, x) for x in ids]
        n = max(len(x) for x in ids)
        inp = torch.tensor([[tok.pad_token_id] * (n - len(x)) + x for x in ids])
        att = torch.tensor([[0] * (n - len(x)) + [1] * len(x) for x in ids])
        kw = {}
        if images is not None:
            kw["pixel_values"] = W.pixels(images[s:s + batch])
        gen = model.generate(input_ids=inp, attention_mask=att, max_new_tokens=max_new, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)
        outs += [tok.decode(g[n:], skip_special_tokens=True).strip() for g in gen]
    return outs


def lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_char(ref, pred):
    r, p = list(ref.replace(" ", "")), list(pred.replace(" ", ""))
    if not r or not p:
        return 0.0
    l = lcs(r, p)
    if l == 0:
        return 0.0
    prec, rec = l / len(p), l / len(r)
    return 100 * 2 * prec * rec / (prec + rec)


JA = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


def score_vqa(rows, preds):
    s = [rouge_char(r["reference"], p) if JA.search(p) else 0.0 for r, p in zip(rows, preds)]
    return sum(s) / len(s)


def last_number(text):
    nums = re.findall(r"-?\d+(?:\.\d+)?", text.replace(",", ""))
    return float(nums[-1]) if nums else None


def score_math(rows, preds):
    ok = [last_number(p) == float(r["answer_number"]) for r, p in zip(rows, preds)]
    return 100 * sum(ok) / len(ok)


# ---------------------------------------------------------------------------------------------- experiments
class VlmWorld:
    def __init__(self, split, limit=None):
        self.tok = W.load_tokenizer()
        self.rows = W.read_jsonl(os.path.join(W.DATA, f"vqa_ja_{split}.jsonl"))[:limit]
        self.rows_en = W.read_jsonl(os.path.join(W.DATA, "vqa_en_test.jsonl"))[:limit]
        self.vlm = load_vlm()
        self.base = lm_state("base")
        self.parents = {"vlm_en": lm_state("vlm_en"), "llm_ja": lm_state("llm_ja")}

    def answers(self, lm_sd, rows=None, image=True):
        rows = rows or self.rows
        if image:
            W.set_language_model(self.vlm, lm_sd)
            return generate(self.vlm, self.tok, [r["prompt"] for r in rows], [r["image"] for r in rows])
        lm = lm_from_state(lm_sd)
        return generate(lm, self.tok, [r["prompt"].replace("<image>", "") for r in rows])

    def score(self, lm_sd, image=True):
        preds = self.answers(lm_sd, image=image)
        return score_vqa(self.rows, preds), preds


def run_vlm(args):
    w = VlmWorld(args.split, args.limit)
    t0 = time.time()
    table = {}
    samples = {}

    def record(name, sd, image=True):
        s, preds = w.score(sd, image=image)
        table[name] = round(s, 2)
        samples[name] = preds
        print(f"{name:40s} {s:6.2f}   e.g. {preds[:4]}", flush=True)
        if args.pairs:
            os.makedirs(args.pairs, exist_ok=True)
            with open(os.path.join(args.pairs, re.sub(r"[^A-Za-z0-9_.]+", "_", name) + ".jsonl"), "w", encoding="utf-8") as f:
                for r, p in zip(w.rows, preds):
                    f.write(json.dumps({"reference": r["reference"], "prediction": p}, ensure_ascii=False) + "\n")

    en = w.answers(w.parents["vlm_en"], rows=w.rows_en)
    acc = sum(p == r["reference"] for p, r in zip(en, w.rows_en)) / len(en)
    print(f"vlm_en on its own English test: exact match {100 * acc:.1f}%  e.g. {en[:4]}")
    record("vlm_en", w.parents["vlm_en"])
    record("llm_ja (in vlm_en's VLM shell)", w.parents["llm_ja"])
    record("llm_ja (text only)", w.parents["llm_ja"], image=False)
    record("base (in VLM shell)", w.base)
    P = [w.parents["vlm_en"], w.parents["llm_ja"]]
    record("task_arithmetic 1/1", merge(w.base, P, "task_arithmetic", [1, 1], [1, 1], normalize=False))
    record("ties default (w 1/1, d .5/.5)", merge(w.base, P, "ties", [1, 1], [0.5, 0.5]))
    record("dare_ties default (w 1/1, d .5/.5)", merge(w.base, P, "dare_ties", [1, 1], [0.5, 0.5]))
    print(f"({time.time() - t0:.0f} s)")
    if args.sweep:
        # Oracle over three genes, chosen on the SEARCH split, then scored on --split: task arithmetic with
        # per-layer-group weights; lower = embeddings + layers 0-1, upper = layers 2-3 + final norm + lm_head.
        search = VlmWorld("search") if args.split != "search" else w
        grid = []
        for wvl, wvu, wj in itertools.product([0.0, 0.5], [0.5, 0.75, 1.0], [1.25, 1.75, 2.25]):
            sd = merge(w.base, P, "task_arithmetic", [vlm_weight(wvl, wvu), wj], [1, 1], normalize=False)
            s, _ = search.score(sd)
            grid.append((s, (wvl, wvu, wj)))
            print(f"oracle (search) w_vlm lower {wvl} upper {wvu}, w_ja {wj}: {s:6.2f}", flush=True)
        s, (wvl, wvu, wj) = max(grid)
        print(f"best on search: {s:.2f} at w_vlm lower {wvl} upper {wvu}, w_ja {wj}")
        record(f"oracle TA w_vlm {wvl}/{wvu} w_ja {wj}",
               merge(w.base, P, "task_arithmetic", [vlm_weight(wvl, wvu), wj], [1, 1], normalize=False))
    if args.random:
        # A stand-in for evolution: `--random N` draws of per-layer-group DARE-TIES genes (groups: embeddings,
        # layers 0-1, layers 2-3, final norm + lm_head; genes per group: w_vlm, w_ja, density_vlm, density_ja;
        # no normalisation), scored on the SEARCH split; the best is then scored on --split.
        search = VlmWorld("search") if args.split != "search" else w
        rng = random.Random(0)
        trials = []
        for t in range(args.random):
            g = {k: [rng.uniform(0, 1.2), rng.uniform(0.5, 2.5), rng.uniform(0.2, 1), rng.uniform(0.2, 1)]
                 for k in [0, 1, "embed", "head"]}
            s, _ = search.score(genes_merge(w.base, P, g))
            trials.append((s, t, g))
            print(f"random {t} (search): {s:6.2f}  {json.dumps({str(k): [round(x, 2) for x in v] for k, v in g.items()})}",
                  flush=True)
        s, t, g = max(trials, key=lambda x: x[0])
        print(f"best on search: trial {t}, {s:.2f}")
        record(f"random search best (trial {t})", genes_merge(w.base, P, g))
    print(json.dumps(table, ensure_ascii=False))


def genes_merge(base, P, g):
    G = lambda n: layer_group(n, 2)  # noqa: E731
    return merge(base, P, "dare_ties", [lambda n: g[G(n)][0], lambda n: g[G(n)][1]],
                 [lambda n: max(0.05, g[G(n)][2]), lambda n: max(0.05, g[G(n)][3])], normalize=False)


def vlm_weight(lower, upper):
    return lambda name: lower if layer_group(name, 2) in ("embed", 0) else upper


def run_llm(args):
    """The evollm family (models/evollm/) on the Japanese word problems. `accja` is the paper's rule with a
    script proxy for the language check: the last number is right and the answer has kana or kanji."""
    tok = W.load_tokenizer()
    rows = W.read_jsonl(os.path.join(W.DATA, f"wp_ja_{args.split}.jsonl"))[:args.limit]
    en = W.read_jsonl(os.path.join(W.DATA, "wp_en_test.jsonl"))[:args.limit]
    base = lm_state("evollm/base")
    P = {n: lm_state("evollm/" + n) for n in ["llm_ja", "math_a", "math_b"]}
    table = {}

    def score(name, sd, rs=rows, show=True):
        preds = generate(lm_from_state(sd), tok, [r["prompt"] for r in rs])
        acc = [last_number(p) == float(r["answer_number"]) for r, p in zip(rs, preds)]
        accja = [a and bool(JA.search(p)) for a, p in zip(acc, preds)]
        by = {k: 100 * sum(x for x, r in zip(accja, rs) if r["kind"] == k) / max(1, sum(r["kind"] == k for r in rs))
              for k in ("add", "mul")}
        s = 100 * sum(accja) / len(rs)
        if show:
            table[name] = round(s, 2)
            print(f"{name:34s} accja {s:5.1f} (add {by['add']:.0f}, mul {by['mul']:.0f})  acc {100 * sum(acc) / len(rs):5.1f}"
                  f"  e.g. {preds[:3]}", flush=True)
        return s

    for n in ["math_a", "math_b"]:
        preds = generate(lm_from_state(P[n]), tok, [r["prompt"] for r in en])
        ok = lambda k: 100 * sum(last_number(p) == float(r["answer_number"]) for r, p in zip(en, preds) if r["kind"] == k) / sum(r["kind"] == k for r in en)  # noqa: E731
        print(f"{n} on the English word problems: add {ok('add'):.1f} mul {ok('mul'):.1f}")
    for n, sd in P.items():
        score(n, sd)
    L = [P["llm_ja"], P["math_a"], P["math_b"]]
    score("task_arithmetic 1/1/1", merge(base, L, "task_arithmetic", [1, 1, 1], [1, 1, 1], normalize=False))
    score("ties default (w 1, d .5)", merge(base, L, "ties", [1, 1, 1], [0.5] * 3))
    score("dare_ties default (w 1, d .5)", merge(base, L, "dare_ties", [1, 1, 1], [0.5] * 3))
    if args.sweep:
        grid = []
        for wj, wa, wb in itertools.product([0.5, 1.0, 1.5], [0.5, 1.0, 1.5], [0.5, 1.0, 1.5]):
            s = score(f"TA {wj}/{wa}/{wb}", merge(base, L, "task_arithmetic", [wj, wa, wb], [1] * 3, normalize=False),
                      show=False)
            print(f"oracle w_ja {wj} w_a {wa} w_b {wb}: {s:.1f}", flush=True)
            grid.append((s, (wj, wa, wb)))
        print("best", max(grid))
    print(json.dumps(table, ensure_ascii=False))


def run_paired(args):
    """Paired bootstrap of per-item rougeL (scores JSONL of `evomerge score rouge-ja`): mean of A - B, 95 %."""
    import numpy as np
    a, b = (np.array([json.loads(l)["rougeL"] for l in open(f)]) for f in args.files)
    d = a - b
    rng = np.random.default_rng(0)
    boots = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(2000)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    print(f"{d.mean():+.2f} [{lo:+.2f}, {hi:+.2f}]  ({len(d)} items)")


def run_norms(args):
    base = lm_state("base")
    names = [n for n in ["llm_ja", "vlm_en", "math_a", "math_b"] if os.path.exists(os.path.join(W.MODELS, n))]
    deltas = {n: torch.cat([(v - base[k]).flatten() for k, v in sorted(lm_state(n).items())]) for n in names}
    bnorm = torch.cat([v.flatten() for k, v in sorted(base.items())]).norm()
    for n in names:
        print(f"{n}: |delta|/|base| = {100 * deltas[n].norm() / bnorm:.2f}%")
    for a, b in itertools.combinations(names, 2):
        c = torch.nn.functional.cosine_similarity(deltas[a], deltas[b], dim=0)
        print(f"cos({a}, {b}) = {c:.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["vlm", "llm", "norms", "paired"])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--split", default="search")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--random", type=int, default=0)
    ap.add_argument("--pairs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    {"vlm": run_vlm, "llm": run_llm, "norms": run_norms, "paired": run_paired}[args.what](args)


if __name__ == "__main__":
    main()
