"""Small hand-made samples in the formats of the evaluation datasets (for tests and demos).

None of the rows comes from the real datasets: questions, answers and images are made up here.
- mgsm_ja_sample.tsv            juletxara/mgsm `mgsm_ja.tsv` format: question<TAB>answer_number, no header
- gsm8k_ja_sample.jsonl         SakanaAI/gsm8k-ja-test_250-1319 format: {"question", "answer_number", ...}
- ja_vg_vqa_sample.parquet      SakanaAI/JA-VG-VQA-500 layout: image {bytes, path}, image_id, url, qas [{question, answer, qa_id}]
- ja_vlm_wild_sample.parquet    SakanaAI/JA-VLM-Bench-In-the-Wild layout: page_url, image_url, image {bytes, path}, question, answer
- bad/                          the same formats with broken rows (missing fields, corrupt/truncated images)

Reproduce (from the repository root):
    /root/pyref/models/bin/python datasets/generate_samples.py
Versions: Python 3.11, pyarrow 26.0.1, Pillow 13.0.0.
"""

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

HERE = Path(__file__).parent

MGSM_ROWS = [
    ("りんごが3個あります。さらに5個買いました。りんごは全部で何個ありますか？", 8),
    ("1冊120円のノートを4冊買うと、代金はいくらですか？", 480),
    ("クラスに生徒が32人います。そのうち半分が男子です。女子は何人ですか？", 16),
    ("太郎さんは毎日2キロ走ります。1週間で何キロ走りますか？", 14),
    ("1,000円札で750円の本を買いました。おつりはいくらですか？", 250),
    ("箱にボールが24個入っています。6人で同じ数ずつ分けると、1人何個ですか？", 4),
]

GSM8K_ROWS = [
    ("花子さんはクッキーを15枚焼き、友達に7枚あげました。残りは何枚ですか？", 8),
    ("バスに乗客が20人いました。次の停留所で6人降り、9人乗りました。乗客は何人ですか？", 23),
    ("1時間に60ページ読める人が、3時間で読めるのは何ページですか？", 180),
    ("鉛筆を1ダース買い、3本使いました。残りは何本ですか？", 9),
]


def image_bytes(color, size, fmt, shape):
    img = Image.new("RGB", size, (240, 240, 240))
    draw = ImageDraw.Draw(img)
    w, h = size
    if shape == "circle":
        draw.ellipse([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=color)
    else:
        draw.rectangle([w // 5, h // 5, 4 * w // 5, 4 * h // 5], fill=color)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


VG_ROWS = [
    # image spec, qas
    (((220, 30, 30), (40, 30), "PNG", "circle"), [("何色の丸ですか？", "赤色です。"), ("背景は何色ですか？", "灰色")]),
    (((30, 30, 220), (36, 36), "JPEG", "square"), [("この図形は何ですか？", "青い四角形")]),
    (((30, 160, 30), (48, 32), "PNG", "square"), [("図形の色は？", "緑"), ("いくつありますか？", "1つ")]),
]

WILD_ROWS = [
    (((250, 200, 0), (40, 40), "JPEG", "circle"), "画像には何が描かれていますか？", "黄色い円が描かれています。"),
    (((120, 0, 160), (44, 28), "PNG", "square"), "四角形の色を教えてください。", "紫色です。"),
    (((250, 200, 0), (40, 40), "JPEG", "circle"), "円はいくつありますか？", "1つです。"),
]

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
QA_TYPE = pa.struct([("question", pa.string()), ("answer", pa.string()), ("qa_id", pa.int64())])


def write_vg(path, rows):
    table = pa.table(
        {
            "image": pa.array([r["image"] for r in rows], type=IMAGE_TYPE),
            "image_id": pa.array([r["image_id"] for r in rows], type=pa.int64()),
            "url": pa.array([r["url"] for r in rows], type=pa.string()),
            "qas": pa.array([r["qas"] for r in rows], type=pa.list_(QA_TYPE)),
        }
    )
    pq.write_table(table, path)


def write_wild(path, rows):
    table = pa.table(
        {
            "page_url": pa.array([r["page_url"] for r in rows], type=pa.string()),
            "image_url": pa.array([r["image_url"] for r in rows], type=pa.string()),
            "image": pa.array([r["image"] for r in rows], type=IMAGE_TYPE),
            "question": pa.array([r["question"] for r in rows], type=pa.string()),
            "answer": pa.array([r["answer"] for r in rows], type=pa.string()),
        }
    )
    pq.write_table(table, path)


def vg_rows():
    rows = []
    for i, (spec, qas) in enumerate(VG_ROWS):
        rows.append(
            {
                "image": {"bytes": image_bytes(*spec), "path": f"{i}.{spec[2].lower()}"},
                "image_id": 1000 + i,
                "url": f"https://example.invalid/vg/{i}",
                "qas": [{"question": q, "answer": a, "qa_id": 10 * i + j} for j, (q, a) in enumerate(qas)],
            }
        )
    return rows


def wild_rows():
    rows = []
    for i, (spec, q, a) in enumerate(WILD_ROWS):
        rows.append(
            {
                "page_url": f"https://example.invalid/page/{i}",
                "image_url": f"https://example.invalid/img/{i}",
                "image": {"bytes": image_bytes(*spec), "path": None},
                "question": q,
                "answer": a,
            }
        )
    return rows


def main():
    with (HERE / "mgsm_ja_sample.tsv").open("w", encoding="utf-8", newline="") as f:
        for q, a in MGSM_ROWS:
            f.write(f"{q}\t{a}\n")
    with (HERE / "gsm8k_ja_sample.jsonl").open("w", encoding="utf-8") as f:
        for q, a in GSM8K_ROWS:
            f.write(json.dumps({"question": q, "answer": f"... #### {a}", "answer_number": a}, ensure_ascii=False) + "\n")
    write_vg(HERE / "ja_vg_vqa_sample.parquet", vg_rows())
    write_wild(HERE / "ja_vlm_wild_sample.parquet", wild_rows())

    bad = HERE / "bad"
    bad.mkdir(exist_ok=True)
    # Rows 1 (no tab), 2 (answer not a number) and 3 (empty question) are bad.
    with (bad / "mgsm_ja_bad.tsv").open("w", encoding="utf-8", newline="") as f:
        f.write("りんごが2個あります。1個食べると何個？\t1\n")
        f.write("タブのない行\n")
        f.write("答えが数でない行\tたくさん\n")
        f.write("\t5\n")
        f.write("みかんが4個と3個あります。全部で何個？\t7\n")
    # Rows 1 (no answer_number) and 3 (no question) are bad.
    with (bad / "gsm8k_ja_bad.jsonl").open("w", encoding="utf-8") as f:
        f.write(json.dumps({"question": "2+2は？", "answer_number": 4}, ensure_ascii=False) + "\n")
        f.write(json.dumps({"question": "答えのない問題"}, ensure_ascii=False) + "\n")
        f.write(json.dumps({"question": "3+4は？", "answer_number": "7"}, ensure_ascii=False) + "\n")
        f.write(json.dumps({"answer_number": 1}) + "\n")
    good = vg_rows()
    png = good[0]["image"]["bytes"]
    jpeg = good[1]["image"]["bytes"]
    broken = [
        good[0],
        # 1: corrupt image bytes
        dict(good[1], image={"bytes": b"not an image at all", "path": "x.jpg"}),
        # 2: empty qas list
        dict(good[2], qas=[]),
        # 3: truncated JPEG
        dict(good[1], image={"bytes": jpeg[: len(jpeg) // 2], "path": "t.jpg"}),
        # 4: first QA has no answer
        dict(good[0], qas=[{"question": "答えがない", "answer": None, "qa_id": 1}]),
        # 5: no image at all
        dict(good[2], image=None),
        good[2],
    ]
    write_vg(bad / "ja_vg_vqa_bad.parquet", broken)
    wild = wild_rows()
    write_wild(bad / "ja_vlm_wild_bad.parquet", [wild[0], dict(wild[1], question=None), wild[2], dict(wild[0], image={"bytes": png[:40], "path": None})])


if __name__ == "__main__":
    main()
