"""Deterministic generator of the miniature bilingual world (issue 14).

Writes, under world/data/ (everything is a pure function of SEED, so a rerun writes identical files):
  images/{train,search,test}/NNNN.png   64x64 RGB scenes: 1-4 copies of one object, drawn without antialiasing
  scenes_{train,search,test}.jsonl      what each image shows (kind, colour, count, position)
  pretrain.txt                          bilingual world text for the base LM (English and Japanese about the
                                        same scenes, objects, colours, numbers; parallel sentence pairs)
  ja_qa_train.jsonl                     Japanese text Q&A about the world (scene given as text; no images)
  vqa_en_train.jsonl                    English VQA over the train images
  vqa_en_test.jsonl                     English VQA over the test images (the English VLM's own task)
  vqa_ja_search.jsonl / vqa_ja_test.jsonl   the target: Japanese questions about images, Japanese answers
  math_a_train.jsonl / math_b_train.jsonl   English arithmetic: a = addition (two-digit), b = multiplication
  math_en_test.jsonl                    English arithmetic test (both skills)
  math_ja_search.jsonl / math_ja_test.jsonl the target: Japanese word problems (half addition, half
                                        multiplication)

Search/test JSONL lines carry {"prompt", "reference", "image"?} (image relative to the JSONL's folder) as the
evolve recipe's `custom` task reads them; the math files also carry {"question", "answer_number"} like the
GSM8K-JA search JSONL.

Usage: python world/generate_data.py [--out world/data]
"""

import argparse
import json
import os
import random
import shutil

from PIL import Image, ImageDraw

SEED = 14
SIZE = 64

# ---------------------------------------------------------------------------------------------- vocabulary
COLOURS = {  # name: (rgb, english, japanese adjective, japanese noun)
    "red": ((220, 30, 30), "red", "赤い", "赤"),
    "blue": ((30, 60, 220), "blue", "青い", "青"),
    "green": ((30, 170, 50), "green", "緑の", "緑"),
    "yellow": ((235, 200, 20), "yellow", "黄色い", "黄色"),
}
SHAPES = {  # kind: (english singular, english plural, japanese)
    "circle": ("circle", "circles", "丸"),
    "square": ("square", "squares", "四角"),
    "triangle": ("triangle", "triangles", "三角"),
}
# Objects with Japanese-specific names and a fixed look; the English VLM calls them by their English names.
OBJECTS = {
    "torii": ("torii", "torii", "鳥居"),
    "daruma": ("daruma", "daruma", "だるま"),
    "fuji": ("Mount Fuji", "Mount Fuji", "富士山"),
    "onigiri": ("rice ball", "rice balls", "おにぎり"),
}
OBJECT_COLOUR = {"torii": "red", "daruma": "red", "fuji": "blue", "onigiri": "white"}
NUM_EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
NUM_JA = ["零", "一つ", "二つ", "三つ", "四つ", "五つ", "六つ", "七つ", "八つ", "九つ"]
KANJI = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九"]
POSITIONS = {  # name: (english phrase, english answer, japanese)
    "left": ("on the left", "left", "左"),
    "right": ("on the right", "right", "右"),
    "top": ("at the top", "top", "上"),
    "bottom": ("at the bottom", "bottom", "下"),
    "middle": ("in the middle", "middle", "真ん中"),
}
POS_CENTRE = {"left": (16, 32), "right": (48, 32), "top": (32, 14), "bottom": (32, 50), "middle": (32, 32)}

VQA_TEMPLATE = "USER: <image>\n{q}\nASSISTANT:"
TEXT_TEMPLATE = "USER: {ctx}\n{q}\nASSISTANT:"
MATH_TEMPLATE = "USER: {q}\nASSISTANT:"


# ---------------------------------------------------------------------------------------------- scenes
def sample_scene(rng):
    if rng.random() < 0.6:
        kind = rng.choice(sorted(SHAPES))
        colour = rng.choice(sorted(COLOURS))
    else:
        kind = rng.choice(sorted(OBJECTS))
        colour = OBJECT_COLOUR[kind]
    count = 1 if kind == "fuji" else rng.randint(1, 4)
    position = rng.choice(sorted(POSITIONS)) if count == 1 else None
    bg = tuple(rng.randint(225, 255) for _ in range(3))
    return {"kind": kind, "colour": colour, "count": count, "position": position, "bg": bg}


def draw_object(d, kind, colour, cx, cy, r):
    rgb = COLOURS[colour][0] if colour in COLOURS else None
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    elif kind == "square":
        d.rectangle([cx - r + 1, cy - r + 1, cx + r - 1, cy + r - 1], fill=rgb)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r - 1), (cx + r, cy + r - 1)], fill=rgb)
    elif kind == "torii":
        red, dark = (210, 40, 30), (60, 30, 30)
        d.rectangle([cx - r, cy - r, cx + r, cy - r + 2], fill=dark)           # kasagi (top beam)
        d.rectangle([cx - r + 2, cy - r + 4, cx + r - 2, cy - r + 5], fill=red)  # nuki
        d.rectangle([cx - r + 3, cy - r + 2, cx - r + 5, cy + r], fill=red)     # pillars
        d.rectangle([cx + r - 5, cy - r + 2, cx + r - 3, cy + r], fill=red)
    elif kind == "daruma":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(200, 20, 20))
        d.ellipse([cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 3], fill=(250, 240, 220))
        d.point([(cx - 2, cy - 2), (cx + 2, cy - 2)], fill=(0, 0, 0))
    elif kind == "fuji":
        d.polygon([(cx, cy - r), (cx - 2 * r, cy + r), (cx + 2 * r, cy + r)], fill=(60, 80, 170))
        d.polygon([(cx, cy - r), (cx - r // 2, cy - r // 2), (cx + r // 2, cy - r // 2)], fill=(255, 255, 255))
    elif kind == "onigiri":
        d.polygon([(cx, cy - r), (cx - r, cy + r - 1), (cx + r, cy + r - 1)], fill=(250, 250, 250),
                  outline=(120, 120, 120))
        d.rectangle([cx - r // 2, cy + r // 3, cx + r // 2, cy + r - 1], fill=(20, 30, 20))
    else:
        raise ValueError(kind)


def place(rng, scene):
    """Centres for the scene's objects: the named region for one object, else non-overlapping random spots."""
    r = 10 if scene["kind"] == "fuji" else 7
    if scene["count"] == 1:
        cx, cy = POS_CENTRE[scene["position"]]
        if scene["kind"] == "fuji":
            cx = min(max(cx, 21), 43)
            cy = min(max(cy, 11), 52)
        return r, [(cx + rng.randint(-2, 2), cy + rng.randint(-2, 2))]
    for _ in range(1000):
        pts = [(rng.randint(r + 1, SIZE - r - 2), rng.randint(r + 1, SIZE - r - 2)) for _ in range(scene["count"])]
        if all(abs(a[0] - b[0]) > 2 * r + 1 or abs(a[1] - b[1]) > 2 * r + 1
               for i, a in enumerate(pts) for b in pts[i + 1:]):
            return r, pts
    raise RuntimeError("no layout")


def render(rng, scene):
    img = Image.new("RGB", (SIZE, SIZE), scene["bg"])
    d = ImageDraw.Draw(img)
    r, pts = place(rng, scene)
    for cx, cy in pts:
        draw_object(d, scene["kind"], scene["colour"], cx, cy, r)
    return img


# ---------------------------------------------------------------------------------------------- language
def names(kind):
    return SHAPES.get(kind) or OBJECTS[kind]


def en_noun_phrase(s):
    sing, plur, _ = names(s["kind"])
    colour = COLOURS[s["colour"]][1] + " " if s["kind"] in SHAPES else ""
    if s["count"] == 1:
        art = "an" if (colour or sing)[0] in "aeiou" else "a"
        if s["kind"] == "fuji":
            return "Mount Fuji"
        return f"{art} {colour}{sing}"
    return f"{NUM_EN[s['count']]} {colour}{plur}"


def ja_noun_phrase(s):
    ja = names(s["kind"])[2]
    colour = COLOURS[s["colour"]][2] if s["kind"] in SHAPES else ""
    return f"{colour}{ja}が{NUM_JA[s['count']]}"


def describe_en(s):
    np_ = en_noun_phrase(s)
    where = f" {POSITIONS[s['position']][0]}" if s["position"] else ""
    verb = "is" if s["count"] == 1 else "are"
    return f"There {verb} {np_}{where}."


def describe_ja(s):
    where = f"{POSITIONS[s['position']][2]}に" if s["position"] else ""
    return f"{where}{ja_noun_phrase(s)}あります。"


def questions(s):
    """(qtype, en question, en answer, ja question, ja answer) for every question that the scene answers."""
    sing, plur, ja = names(s["kind"])
    out = [("what", "What is in the picture?", en_noun_phrase(s), "画像には何がありますか？", ja_noun_phrase(s))]
    if s["kind"] in SHAPES:
        out.append(("colour", f"What colour is the {sing}?", COLOURS[s["colour"]][1], f"{ja}は何色ですか？",
                    COLOURS[s["colour"]][3]))
    else:
        out.append(("name", "What is this?", sing, "これは何ですか？", ja))
    if s["kind"] != "fuji":
        out.append(("count", f"How many {plur} are there?", NUM_EN[s["count"]], f"{ja}はいくつありますか？",
                    NUM_JA[s["count"]]))
    if s["position"]:
        out.append(("where", f"Where is the {sing}?", POSITIONS[s["position"]][1], f"{ja}はどこにありますか？",
                    POSITIONS[s["position"]][2]))
    return out


def pretrain_text(rng, n_scenes):
    """Bilingual world text: scene sentences in both languages, parallel pairs, facts, numbers, Q/A in both
    languages: English in the chat template, Japanese in a plain 質問/答え format."""
    lines = []
    for kind in sorted(SHAPES):
        e, p, j = SHAPES[kind]
        lines += [f"A {e} is a shape. {j}は形です。", f"{e} = {j}", f"English: {e}. 日本語：{j}。"]
    for kind in sorted(OBJECTS):
        e, p, j = OBJECTS[kind]
        lines += [f"{e} = {j}", f"English: {e}. 日本語：{j}。", f"The word {j} means {e}."]
    lines += ["A torii is a red gate. 鳥居は赤い門です。", "A daruma is a red doll. だるまは赤い人形です。",
              "Mount Fuji is a blue mountain with white snow. 富士山は白い雪のある青い山です。",
              "A rice ball is white with black seaweed. おにぎりは白くて、黒いのりがあります。"]
    for c in sorted(COLOURS):
        _, e, ja_adj, ja = COLOURS[c]
        lines += [f"{e} = {ja}", f"The colour {e} is {ja} in Japanese. {e}は日本語で{ja}です。"]
    for p in sorted(POSITIONS):
        e, ea, j = POSITIONS[p]
        lines += [f"{ea} = {j}", f"{e} = {j}に"]
    for n in range(1, 10):
        lines += [f"{n} = {NUM_EN[n]} = {NUM_JA[n]} = {KANJI[n]}", f"{NUM_EN[n]} is {n}. {NUM_JA[n]}は{n}です。"]
    lines = lines * 20
    for _ in range(n_scenes):
        s = sample_scene(rng)
        en, ja = describe_en(s), describe_ja(s)
        mode = rng.random()
        if mode < 0.2:
            lines.append(f"{en} {ja}")
        elif mode < 0.3:
            lines.append(f"{en}\n{ja}")
        elif mode < 0.4:
            lines.append(en)
        elif mode < 0.5:
            lines.append(ja)
        else:
            # Q&A about a scene given as text, the scene in either language (so reading a scene does not
            # depend on the question's language): English in the chat template that the fine-tunes use,
            # Japanese only in a plain 質問/答え format (answering Japanese in the chat template is the
            # Japanese fine-tune's skill).
            qt, eq, ea, jq, ja_a = rng.choice(questions(s))
            ctx = en if rng.random() < 0.5 else ja
            if rng.random() < 0.5:
                lines.append(TEXT_TEMPLATE.format(ctx=ctx, q=eq) + f" {ea}")
            else:
                lines.append(f"{ctx}\n質問：{jq}\n答え：{ja_a}。")
    for _ in range(n_scenes // 4):  # numbers and arithmetic facts in both languages
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        lines.append(rng.choice([f"{a} plus {b} is {a + b}.", f"{a}たす{b}は{a + b}です。",
                                 f"{a} times {b} is {a * b}.", f"{a}かける{b}は{a * b}です。",
                                 f"{NUM_EN[a]} and {NUM_EN[b]} make {a + b}.", f"{KANJI[a]}と{KANJI[b]}で{a + b}。"]))
    rng.shuffle(lines)
    return lines


# ---------------------------------------------------------------------------------------------- math
EN_ITEMS = ["apples", "pens", "books", "cards", "eggs", "coins", "cups", "balls"]
JA_ITEMS = ["りんご", "ペン", "本", "カード", "たまご", "コイン", "コップ", "ボール"]
EN_NAMES = ["Tom", "Anna", "Ken", "Mia", "Sam", "Lucy"]
JA_NAMES = ["太郎", "花子", "健", "美咲", "翔", "さくら"]
JA_COUNTER = {"りんご": "個", "ペン": "本", "本": "冊", "カード": "枚", "たまご": "個", "コイン": "枚", "コップ": "個",
              "ボール": "個"}


def math_add(rng, lang):
    a, b = rng.randint(10, 49), rng.randint(10, 49)
    i = rng.randrange(len(EN_ITEMS))
    if lang == "en":
        n = rng.choice(EN_NAMES)
        q = f"{n} has {a} {EN_ITEMS[i]}. {n} gets {b} more {EN_ITEMS[i]}. How many {EN_ITEMS[i]} does {n} have now?"
    else:
        n, it = rng.choice(JA_NAMES), JA_ITEMS[i]
        c = JA_COUNTER[it]
        q = f"{n}は{it}を{a}{c}持っています。{it}を{b}{c}もらいました。{it}は全部で何{c}ですか？"
    return q, a + b


def math_mul(rng, lang):
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    i = rng.randrange(len(EN_ITEMS))
    if lang == "en":
        q = f"There are {a} boxes. Each box has {b} {EN_ITEMS[i]}. How many {EN_ITEMS[i]} are there in all?"
    else:
        it = JA_ITEMS[i]
        c = JA_COUNTER[it]
        q = f"箱が{a}つあります。どの箱にも{it}が{b}{c}入っています。{it}は全部で何{c}ですか？"
    return q, a * b


def math_answer(kind, q, ans, lang):
    """A short worked answer ending in the number (MGSM extraction takes the last number)."""
    if lang == "en":
        return f"The answer is {ans}."
    return f"答えは{ans}です。"


# ---------------------------------------------------------------------------------------------- word problems
# The evollm world (`wp_*` files): one-digit word problems, each section drawn from its own random stream
# (random.Random(f"14:wp:<section>")), so that changing one section leaves the others as they were. The VQA
# world above still draws from the single SEED stream and is unchanged; the tokenizer is trained on it alone
# (the word problems use only its characters).
def wp_add(rng, lang):
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    i = rng.randrange(len(EN_ITEMS))
    n = rng.randrange(len(EN_NAMES))
    it, c = JA_ITEMS[i], JA_COUNTER[JA_ITEMS[i]]
    en = (f"{EN_NAMES[n]} has {a} {EN_ITEMS[i]}. {EN_NAMES[n]} gets {b} more {EN_ITEMS[i]}.",
          f"How many {EN_ITEMS[i]} does {EN_NAMES[n]} have now?")
    ja = (f"{JA_NAMES[n]}は{it}を{a}{c}持っています。{it}を{b}{c}もらいました。", f"{it}は全部で何{c}ですか？")
    return en, ja, a + b


def wp_mul(rng, lang):
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    i = rng.randrange(len(EN_ITEMS))
    it, c = JA_ITEMS[i], JA_COUNTER[JA_ITEMS[i]]
    en = (f"There are {a} boxes. Each box has {b} {EN_ITEMS[i]}.", f"How many {EN_ITEMS[i]} are there in all?")
    ja = (f"箱が{a}つあります。どの箱にも{it}が{b}{c}入っています。", f"{it}は全部で何{c}ですか？")
    return en, ja, a * b


WP = {"add": wp_add, "mul": wp_mul}


def wp_pretrain(rng):
    """The base's arithmetic text: facts in both languages, fact questions (English in the chat template,
    Japanese only in the plain 質問/答え format) and word problems as parallel English/Japanese statements,
    never with their answer (solving them is the math fine-tunes' skill)."""
    lines = []
    for a in range(1, 10):
        for b in range(1, 10):
            lines += [f"{a} plus {b} is {a + b}.", f"{a}たす{b}は{a + b}です。",
                      f"{a} times {b} is {a * b}.", f"{a}かける{b}は{a * b}です。"]
    lines = lines * 4
    for _ in range(2000):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        op = rng.choice(["plus", "times"])
        c, jop = (a + b, "たす") if op == "plus" else (a * b, "かける")
        if rng.random() < 0.5:
            lines.append(MATH_TEMPLATE.format(q=f"What is {a} {op} {b}?") + f" The answer is {c}.")
        else:
            lines.append(f"質問：{a}{jop}{b}はいくつですか？\n答え：答えは{c}です。")
    for _ in range(3000):
        en, ja, _ = WP[rng.choice(["add", "mul"])](rng, None)
        mode = rng.random()
        if mode < 0.5:
            lines.append(f"{en[0]} {en[1]} {ja[0]}{ja[1]}")
        elif mode < 0.7:
            lines.append(f"{en[0]} {ja[0]}")
        elif mode < 0.85:
            lines.append(f"{en[0]} {en[1]}")
        else:
            lines.append(f"{ja[0]}{ja[1]}")
    rng.shuffle(lines)
    return lines


def wp_rows(rng, n, kinds, lang):
    rows = []
    for k in range(n):
        kind = kinds[k % len(kinds)]
        en, ja, ans = WP[kind](rng, lang)
        q = f"{en[0]} {en[1]}" if lang == "en" else f"{ja[0]}{ja[1]}"
        rows.append({"prompt": MATH_TEMPLATE.format(q=q), "reference": math_answer(kind, q, ans, lang),
                     "question": q, "answer_number": ans, "kind": kind})
    return rows


def wp_ja_chat(rng, n):
    """The Japanese LLM's extra chat data: reading a number word, answered 答えは…です (no arithmetic)."""
    rows = []
    for _ in range(n):
        a = rng.randint(1, 9)
        word = NUM_JA[a] if rng.random() < 0.5 else KANJI[a]
        rows.append({"prompt": MATH_TEMPLATE.format(q=f"{word}はいくつですか？"), "reference": f"答えは{a}です。",
                     "qtype": "number"})
    return rows


def word_problem_world(out):
    stream = lambda section: random.Random(f"{SEED}:wp:{section}")  # noqa: E731
    with open(os.path.join(out, "wp_pretrain.txt"), "w", encoding="utf-8") as f:
        for line in wp_pretrain(stream("pretrain")):
            f.write(line.replace("\n", "\\n") + "\n")
    write_jsonl(os.path.join(out, "wp_a_train.jsonl"), wp_rows(stream("a_train"), 3000, ["add"], "en"))
    write_jsonl(os.path.join(out, "wp_b_train.jsonl"), wp_rows(stream("b_train"), 3000, ["mul"], "en"))
    write_jsonl(os.path.join(out, "wp_ja_chat_train.jsonl"), wp_ja_chat(stream("ja_chat"), 400))
    write_jsonl(os.path.join(out, "wp_en_test.jsonl"), wp_rows(stream("en_test"), 200, ["add", "mul"], "en"))
    write_jsonl(os.path.join(out, "wp_ja_search.jsonl"), wp_rows(stream("ja_search"), 100, ["add", "mul"], "ja"))
    write_jsonl(os.path.join(out, "wp_ja_test.jsonl"), wp_rows(stream("ja_test"), 250, ["add", "mul"], "ja"))


# ---------------------------------------------------------------------------------------------- main
def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    args = ap.parse_args()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    rng = random.Random(SEED)

    # images
    splits = {"train": 1000, "search": 60, "test": 100}
    scenes = {}
    for split, n in splits.items():
        os.makedirs(os.path.join(out, "images", split))
        scenes[split] = []
        for k in range(n):
            s = sample_scene(rng)
            img = render(rng, s)
            rel = f"images/{split}/{k:04d}.png"
            img.save(os.path.join(out, rel), optimize=False, compress_level=9)
            s["image"] = rel
            scenes[split].append(s)

    # VQA
    def vqa(split, lang):
        rows = []
        for s in scenes[split]:
            for qt, eq, ea, jq, ja in questions(s):
                q, a = (eq, ea) if lang == "en" else (jq, ja)
                rows.append({"prompt": VQA_TEMPLATE.format(q=q), "reference": a, "image": s["image"], "qtype": qt,
                             "question": q})
        return rows

    for split in splits:
        write_jsonl(os.path.join(out, f"scenes_{split}.jsonl"),
                    [{k: v for k, v in s.items() if k != "bg"} for s in scenes[split]])
    write_jsonl(os.path.join(out, "vqa_en_train.jsonl"), vqa("train", "en"))
    write_jsonl(os.path.join(out, "vqa_en_test.jsonl"), vqa("test", "en"))
    write_jsonl(os.path.join(out, "vqa_ja_search.jsonl"), vqa("search", "ja"))
    write_jsonl(os.path.join(out, "vqa_ja_test.jsonl"), vqa("test", "ja"))

    # Japanese text Q&A (no images): the scene comes as a Japanese sentence, then a Japanese question.
    ja_rows = []
    for _ in range(3000):
        s = sample_scene(rng)
        qt, eq, ea, jq, ja = rng.choice(questions(s))
        ja_rows.append({"prompt": TEXT_TEMPLATE.format(ctx=describe_ja(s), q=jq), "reference": ja, "qtype": qt})
    for kind in sorted(OBJECTS):  # a little world knowledge
        e, p, j = OBJECTS[kind]
        c = OBJECT_COLOUR[kind]
        cj = COLOURS[c][3] if c in COLOURS else "白"
        for _ in range(10):
            ja_rows.append({"prompt": MATH_TEMPLATE.format(q=f"{j}は何色ですか？"), "reference": cj, "qtype": "fact"})
    rng.shuffle(ja_rows)
    write_jsonl(os.path.join(out, "ja_qa_train.jsonl"), ja_rows)

    # bilingual pretraining text
    with open(os.path.join(out, "pretrain.txt"), "w", encoding="utf-8") as f:
        for line in pretrain_text(rng, 12000):
            f.write(line.replace("\n", "\\n") + "\n")

    # math
    def math_rows(n, kinds, lang):
        rows = []
        for k in range(n):
            kind = kinds[k % len(kinds)]
            q, ans = (math_add if kind == "add" else math_mul)(rng, lang)
            rows.append({"prompt": MATH_TEMPLATE.format(q=q), "reference": math_answer(kind, q, ans, lang),
                         "question": q, "answer_number": ans, "kind": kind})
        return rows

    write_jsonl(os.path.join(out, "math_a_train.jsonl"), math_rows(3000, ["add"], "en"))
    write_jsonl(os.path.join(out, "math_b_train.jsonl"), math_rows(3000, ["mul"], "en"))
    write_jsonl(os.path.join(out, "math_en_test.jsonl"), math_rows(200, ["add", "mul"], "en"))
    write_jsonl(os.path.join(out, "math_ja_search.jsonl"), math_rows(100, ["add", "mul"], "ja"))
    write_jsonl(os.path.join(out, "math_ja_test.jsonl"), math_rows(250, ["add", "mul"], "ja"))
    word_problem_world(out)
    print("wrote", out)


if __name__ == "__main__":
    main()
