"""Trains the miniature world's models (issue 14) on the CPU, deterministically.

Reference stack: torch 2.15.0 (PyPI wheel, run on the CPU), transformers 5.23.0, tokenizers 0.23.3,
safetensors 0.8.0, numpy 2.4.6, Pillow 13.0.0, Python 3.11.

    python world/generate_data.py          # data (deterministic)
    python world/train.py all              # tokenizer, base, llm_ja, vlm_en, math_a, math_b
    python world/train.py base             # or one stage at a time (each reads the earlier ones)

Every model is a MistralForCausalLM of one shape (the VLM's language model too), saved in float16 under
world/models/<name>/ with the shared tokenizer and a generation_config.json. The VLM is a llava-hf
LlavaForConditionalGeneration: a tiny CLIP tower (64 px, 8 px patches), an `mlp2x_gelu` projector and the
language model initialised from the base.

Training recipe (all seeds fixed, torch deterministic, 1 thread):
- tokenizer: BPE on the bilingual world text, every character of the world in the alphabet, digits split;
- base: causal LM on world/data/pretrain.txt (English and Japanese sentences about the same world);
- llm_ja: base fine-tuned gently (answer tokens only, no weight decay) on Japanese text Q&A, no images;
- vlm_en: (1) the CLIP tower is trained alone with linear probes on what each image shows (kind, colour, count,
  position); (2) with the tower frozen, the projector (from random) and the LM's decoder layers (not the
  embeddings, final norm or lm_head) are trained together on English VQA, the projector at a higher learning
  rate than the LM so that the LM's task vector stays small;
- evollm family (models/evollm/): wp_base continues base's pretraining on the same text plus the arithmetic text
  (wp_pretrain.txt: facts, fact questions, word problems as parallel statements without answers); llm_ja is
  wp_base fine-tuned on the Japanese chat Q&A plus reading number words; math_a / math_b are wp_base fine-tuned
  gently on English one-digit addition / multiplication word problems.
"""

import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
MODELS = os.environ.get("WORLD_MODELS", os.path.join(HERE, "models"))  # a rerun can write elsewhere
TOK_DIR = os.path.join(HERE, "tokenizer")

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
IMAGE = 64
PATCH = 16
N_PATCHES = (IMAGE // PATCH) ** 2

LM_SHAPE = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, head_dim=32)
TOWER_SHAPE = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4)
VOCAB = 1024

# Stage hyper-parameters (kept here so that the README and the code agree).
HP = {
    "base": dict(steps=1500, batch=48, lr=3e-3, warmup=100, wd=0.01, seed=1),
    "llm_ja": dict(steps=60, batch=32, lr=3e-4, warmup=10, wd=0.0, seed=2),
    "tower": dict(steps=1500, batch=64, lr=2e-3, warmup=50, wd=0.01, seed=3),
    "vlm_en": dict(steps=600, batch=32, lr=3e-4, proj_lr=2e-3, warmup=30, wd=0.0, seed=4, lm_layers=4),
    # The evollm family (models/evollm/): its own base, the base's pretraining continued on the same text
    # plus the arithmetic text (wp_pretrain.txt), and three gentle fine-tunes of it.
    "wp_base": dict(steps=400, batch=48, lr=1e-3, warmup=20, wd=0.01, seed=7, init="base"),
    "wp_llm_ja": dict(steps=80, batch=32, lr=3e-4, warmup=10, wd=0.0, seed=8),
    "wp_math_a": dict(steps=250, batch=32, lr=3e-4, warmup=20, wd=0.0, seed=9),
    "wp_math_b": dict(steps=250, batch=32, lr=3e-4, warmup=20, wd=0.0, seed=10),
}
# stage -> (directory under MODELS, its data files); each starts from evollm/base
WP_STAGES = {
    "wp_llm_ja": ("evollm/llm_ja", ["ja_qa_train.jsonl", "wp_ja_chat_train.jsonl"]),
    "wp_math_a": ("evollm/math_a", ["wp_a_train.jsonl"]),
    "wp_math_b": ("evollm/math_b", ["wp_b_train.jsonl"]),
}


def setup(seed):
    torch.set_num_threads(int(os.environ.get("WORLD_THREADS", "1")))
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# ---------------------------------------------------------------------------------------------- tokenizer
def corpus_lines():
    lines = [l.rstrip("\n").replace("\\n", "\n") for l in open(os.path.join(DATA, "pretrain.txt"), encoding="utf-8")]
    for name in sorted(os.listdir(DATA)):
        # The first world's text only (VQA and the first math splits): the `wp_*` files use only its characters
        # (checked when the evollm models are trained), so adding them left the tokenizer as it was.
        if name.endswith(".jsonl") and not name.startswith(("scenes_", "wp_")):
            for r in read_jsonl(os.path.join(DATA, name)):
                lines.append(r["prompt"].replace("<image>", "") + " " + r["reference"])
    return lines


def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = corpus_lines()
    alphabet = sorted(set("".join(lines)) | set(chr(c) for c in range(32, 127)) | {"\n", "▁"})
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Words: English at spaces (the ▁ goes with the next word); Japanese split into runs of one script (kanji,
    # hiragana, katakana), newlines and punctuation on their own, digits one by one. So BPE cannot learn
    # whole templated sentences as tokens, and a Japanese answer is made of word-like pieces.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("▁", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"[\n。、？！：，．?!.,:]"), behavior="isolated"),
        pre_tokenizers.Split(Regex(r"[一-龯々]+|[ぁ-ゖ]+|[ァ-ヺー]+"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet) + 10, show_progress=False)
    tok.train_from_iterator(lines, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")
    shutil.rmtree(TOK_DIR, ignore_errors=True)
    fast.save_pretrained(TOK_DIR)
    # every character of the world must be covered (no <unk>)
    unk = tok.token_to_id("<unk>")
    bad = [l for l in lines if unk in tok.encode(l).ids]
    assert not bad, bad[:3]
    log(f"tokenizer: {tok.get_vocab_size()} tokens, alphabet {len(alphabet)}")


def load_tokenizer():
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast.from_pretrained(TOK_DIR)


# ---------------------------------------------------------------------------------------------- models
def lm_config(tok):
    from transformers import MistralConfig
    return MistralConfig(vocab_size=len(tok), max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, sliding_window=None, **LM_SHAPE)


def save_common(model, tok, out):
    from transformers import GenerationConfig
    shutil.rmtree(out, ignore_errors=True)
    model = model.to(torch.float16)
    model.config.dtype = "float16"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out)
    model.to(torch.float32)


def load_lm(name):
    from transformers import MistralForCausalLM
    return MistralForCausalLM.from_pretrained(os.path.join(MODELS, name), dtype=torch.float32)


def lr_at(step, hp):
    if step < hp["warmup"]:
        return hp["lr"] * (step + 1) / hp["warmup"]
    t = (step - hp["warmup"]) / max(1, hp["steps"] - hp["warmup"])
    return hp["lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def pad_batch(seqs, labels, pad_id):
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    att = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, :len(s)] = torch.tensor(s)
        lab[i, :len(l)] = torch.tensor(l)
        att[i, :len(s)] = 1
    return ids, lab, att


def encode_pair(tok, prompt, answer):
    """ids of `<s> prompt answer</s>` and labels that score the answer and the EOS only."""
    p = tok(prompt)["input_ids"]
    full = tok(prompt + " " + answer)["input_ids"] + [tok.eos_token_id]
    assert full[:len(p)] == p, (prompt, answer)
    return full, [-100] * len(p) + full[len(p):]


def train_loop(model, params, batches, hp, name, param_groups=None):
    opt = torch.optim.AdamW(param_groups or params, lr=hp["lr"], weight_decay=hp["wd"], betas=(0.9, 0.98))
    base_lrs = [g["lr"] for g in opt.param_groups]
    model.train()
    t0 = time.time()
    ema = None
    for step in range(hp["steps"]):
        scale = lr_at(step, hp) / hp["lr"]
        for g, b in zip(opt.param_groups, base_lrs):
            g["lr"] = b * scale
        loss = batches(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if step % 100 == 0 or step == hp["steps"] - 1:
            log(f"{name} step {step} loss {ema:.4f} ({time.time() - t0:.0f} s)")
    model.eval()
    return time.time() - t0


def read_text(name):
    return [l.rstrip("\n").replace("\\n", "\n") for l in open(os.path.join(DATA, name), encoding="utf-8")]


def train_base(tok, stage="base", out="base", texts=("pretrain.txt",)):
    from transformers import MistralForCausalLM
    hp = HP[stage]
    setup(hp["seed"])
    lines = [l for name in texts for l in read_text(name)]
    unk = [l for l in lines if tok.unk_token_id in tok(l)["input_ids"]]
    assert not unk, unk[:3]
    seqs = [tok(l)["input_ids"] + [tok.eos_token_id] for l in lines]
    model = load_lm(hp["init"]) if "init" in hp else MistralForCausalLM(lm_config(tok))
    rng = random.Random(hp["seed"])

    def batches(step):
        b = [seqs[rng.randrange(len(seqs))] for _ in range(hp["batch"])]
        ids, lab, att = pad_batch(b, b, tok.pad_token_id)
        lab[att == 0] = -100
        return model(input_ids=ids, attention_mask=att, labels=lab).loss

    secs = train_loop(model, list(model.parameters()), batches, hp, stage)
    save_common(model, tok, os.path.join(MODELS, out))
    return secs


def finetune_lm(tok, name, rows, base="base", out=None):
    hp = HP[name]
    setup(hp["seed"])
    model = load_lm(base)
    pairs = [encode_pair(tok, r["prompt"], r["reference"]) for r in rows]
    rng = random.Random(hp["seed"])

    def batches(step):
        b = [pairs[rng.randrange(len(pairs))] for _ in range(hp["batch"])]
        ids, lab, att = pad_batch([p[0] for p in b], [p[1] for p in b], tok.pad_token_id)
        return model(input_ids=ids, attention_mask=att, labels=lab).loss

    secs = train_loop(model, list(model.parameters()), batches, hp, name)
    save_common(model, tok, os.path.join(MODELS, out or name))
    return secs


# ---------------------------------------------------------------------------------------------- vision
def pixels(paths):
    """The llava-hf processor's pixels for 64 px images (resize and crop are no-ops at this size)."""
    arr = np.stack([np.asarray(Image.open(os.path.join(DATA, p)).convert("RGB"), dtype=np.float32) / 255.0
                    for p in paths])
    arr = (arr - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def vision_config():
    from transformers import CLIPVisionConfig
    return CLIPVisionConfig(image_size=IMAGE, patch_size=PATCH, projection_dim=TOWER_SHAPE["hidden_size"],
                            hidden_act="quick_gelu", **TOWER_SHAPE)


KINDS = ["circle", "square", "triangle", "torii", "daruma", "fuji", "onigiri"]
COLOURS = ["red", "blue", "green", "yellow", "white"]
POSITIONS = ["none", "left", "right", "top", "bottom", "middle"]


def train_tower():
    """The CLIP tower alone, with linear probes on its patch features (what / colour / count / where)."""
    from transformers import CLIPVisionModel
    hp = HP["tower"]
    setup(hp["seed"])
    scenes = read_jsonl(os.path.join(DATA, "scenes_train.jsonl"))
    px = pixels([s["image"] for s in scenes])
    y = torch.tensor([[KINDS.index(s["kind"]), COLOURS.index(s["colour"]), s["count"] - 1,
                       POSITIONS.index(s["position"] or "none")] for s in scenes])
    tower = CLIPVisionModel(vision_config())
    d = TOWER_SHAPE["hidden_size"]
    heads = torch.nn.ModuleList([torch.nn.Linear(N_PATCHES * d, n) for n in (len(KINDS), len(COLOURS), 4,
                                                                              len(POSITIONS))])
    params = list(tower.parameters()) + list(heads.parameters())
    g = torch.Generator().manual_seed(hp["seed"])

    def batches(step):
        idx = torch.randint(0, len(scenes), (hp["batch"],), generator=g)
        feats = tower(pixel_values=px[idx], output_hidden_states=True).hidden_states[-1][:, 1:]
        flat = feats.reshape(len(idx), -1)
        return sum(F.cross_entropy(h(flat), y[idx, k]) for k, h in enumerate(heads))

    secs = train_loop(tower, params, batches, hp, "tower")
    with torch.no_grad():
        feats = tower(pixel_values=px[:500], output_hidden_states=True).hidden_states[-1][:, 1:].reshape(500, -1)
        acc = [(h(feats).argmax(-1) == y[:500, k]).float().mean().item() for k, h in enumerate(heads)]
    log(f"tower probe train accuracy (what, colour, count, where): {acc}")
    return tower, secs


def build_llava(tok, tower, lm_state):
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    cfg = LlavaConfig(vision_config=vision_config(), text_config=lm_config(tok),
                      image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=N_PATCHES,
                      projector_hidden_act="gelu", vision_feature_layer=-1,
                      vision_feature_select_strategy="default", multimodal_projector_bias=True,
                      tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(cfg)
    model.model.vision_tower.load_state_dict(tower.state_dict())
    set_language_model(model, lm_state)
    return model


def set_language_model(llava, lm_state):
    """Loads a MistralForCausalLM state dict (model.* and lm_head.weight) into a LLaVA's language model."""
    inner = {k[len("model."):]: v for k, v in lm_state.items() if k.startswith("model.")}
    llava.model.language_model.load_state_dict(inner)
    llava.lm_head.load_state_dict({"weight": lm_state["lm_head.weight"]})


def language_model_state(llava):
    sd = {"model." + k: v for k, v in llava.model.language_model.state_dict().items()}
    sd["lm_head.weight"] = llava.lm_head.weight
    return sd


def expand_image(tok, ids):
    image_id = tok.convert_tokens_to_ids("<image>")
    out = []
    for t in ids:
        out.extend([image_id] * N_PATCHES if t == image_id else [t])
    return out


def save_vlm(model, tok, out):
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
    save_common(model, tok, out)
    ip = LlavaImageProcessorPil(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE},
                                image_mean=MEAN, image_std=STD)
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(out)


def train_vlm(tok):
    hp = HP["vlm_en"]
    tower, tower_secs = train_tower()
    setup(hp["seed"])
    model = build_llava(tok, tower, load_lm("base").state_dict())
    rows = read_jsonl(os.path.join(DATA, "vqa_en_train.jsonl"))
    images = sorted({r["image"] for r in rows})
    index = {p: i for i, p in enumerate(images)}
    px = pixels(images)
    pairs = []
    for r in rows:
        full, labels = encode_pair(tok, r["prompt"], r["reference"])
        full = expand_image(tok, full)
        labels = [-100] * (N_PATCHES - 1) + labels
        pairs.append(((full, labels), index[r["image"]]))
    for p in model.model.vision_tower.parameters():
        p.requires_grad_(False)
    proj = list(model.model.multi_modal_projector.parameters())
    # The decoder layers (the bottom `lm_layers` of them) learn to read the image; embeddings, final norm and
    # lm_head stay the base's.
    for p in model.model.language_model.parameters():
        p.requires_grad_(False)
    for p in model.lm_head.parameters():
        p.requires_grad_(False)
    lm = [p for layer in model.model.language_model.layers[:hp["lm_layers"]] for p in layer.parameters()]
    rng = random.Random(hp["seed"])

    def batches(step):
        b = [pairs[rng.randrange(len(pairs))] for _ in range(hp["batch"])]
        ids, lab, att = pad_batch([p[0][0] for p in b], [p[0][1] for p in b], tok.pad_token_id)
        return model(input_ids=ids, attention_mask=att, labels=lab,
                     pixel_values=px[torch.tensor([p[1] for p in b])]).loss

    for p in lm:
        p.requires_grad_(True)
    groups = [{"params": proj, "lr": hp["proj_lr"]}, {"params": lm, "lr": hp["lr"]}]
    secs = train_loop(model, proj + lm, batches, hp, "vlm_en", param_groups=groups)
    save_vlm(model, tok, os.path.join(MODELS, "vlm_en"))
    return tower_secs + secs


# ---------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    evollm = ["wp_base", "wp_llm_ja", "wp_math_a", "wp_math_b"]
    everything = ["tokenizer", "base", "llm_ja", "vlm_en"] + evollm
    ap.add_argument("stage", choices=everything + ["all", "evovlm", "evollm"])
    args = ap.parse_args()
    stages = {"all": everything, "evovlm": everything[:4], "evollm": evollm}.get(args.stage, [args.stage])
    times = {}
    for st in stages:
        t0 = time.time()
        if st == "tokenizer":
            build_tokenizer()
        else:
            tok = load_tokenizer()
            if st == "base":
                train_base(tok)
            elif st == "llm_ja":
                finetune_lm(tok, "llm_ja", read_jsonl(os.path.join(DATA, "ja_qa_train.jsonl")))
            elif st == "vlm_en":
                train_vlm(tok)
            elif st == "wp_base":
                train_base(tok, "wp_base", "evollm/base", ("pretrain.txt", "wp_pretrain.txt"))
            elif st in WP_STAGES:
                out, files = WP_STAGES[st]
                rows = [r for f in files for r in read_jsonl(os.path.join(DATA, f))]
                unk = [r for r in rows if tok.unk_token_id in tok(r["prompt"] + " " + r["reference"])["input_ids"]]
                assert not unk, unk[:3]
                finetune_lm(tok, st, rows, base="evollm/base", out=out)
        times[st] = round(time.time() - t0, 1)
        log(f"stage {st}: {times[st]} s")
    log("times", json.dumps(times))


if __name__ == "__main__":
    main()
