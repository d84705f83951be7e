"A configuration is validated once, where it is made: by its constructor, whether it comes from a params file, a dict or `dataclasses.replace`."
import dataclasses
import pytest
from fusion_study import core, params
from fusion_study.core import FusionStudyError, RunConfig
from fusion_study.params import load_params

def _count(monkeypatch, *names) -> dict:
    "Count the calls of core's checks `names`, wherever the package looks them up (core's own code, and params' imported names)."
    calls = dict.fromkeys(names, 0)
    for name in names:
        def counted(*a, _f=getattr(core, name), _name=name, **kw): calls[_name] += 1; return _f(*a, **kw)
        for mod in (core, params):
            if hasattr(mod, name): monkeypatch.setattr(mod, name, counted)
    return calls

def test_load_params_validates_each_configuration_once(tmp_path, monkeypatch):
    p = tmp_path/'p.yaml'
    p.write_text("defaults: {scales: [256], seeds: [1]}\nconfigs: [{name: a}, {name: b, lr: 1e-3}, {name: c, job: {mem: 4G}}]\n")
    calls = _count(monkeypatch, 'check_fields', 'check_ranges', 'check_names', 'check_job')
    assert [c.name for c in load_params(p)] == ['a', 'b', 'c']
    assert calls == dict(check_fields=1 + 3, check_ranges=3, check_names=3, check_job=1)    # the defaults section alone, then each configuration

def test_each_way_to_make_a_configuration_validates_once(monkeypatch):
    calls = _count(monkeypatch, 'check_fields', 'check_ranges')
    cfg = RunConfig(name='a'); RunConfig.from_dict({'name': 'b'}); dataclasses.replace(cfg, name='c')
    assert calls == dict(check_fields=3, check_ranges=3)

def test_from_dict_names_its_dict_and_only_there():
    with pytest.raises(FusionStudyError, match=r"^Key 'epochs' in configuration 'x' of p.yaml must be at least 1, got 0\.$"):
        RunConfig.from_dict({'name': 'x', 'epochs': 0}, where="configuration 'x' of p.yaml")
    with pytest.raises(FusionStudyError, match=r"^Unknown key 'sclaes' in here \(did you mean 'scales'\?\)\.$"): RunConfig.from_dict({'sclaes': [256]}, 'here')
    with pytest.raises(FusionStudyError, match=r"^Key 'epochs' in configuration 'y' must be"): RunConfig(name='y', epochs=0)
