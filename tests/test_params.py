"""Config metadata: bounds contain defaults, values round-trip, bad values are clamped with a message."""

from __future__ import annotations

import dataclasses

import pytest

from recon.methods import METHODS
from recon.params import from_values, knob, knobs, to_values

ALL = list(METHODS)


@pytest.mark.parametrize("name", ALL)
def test_every_field_is_a_knob_with_bounds_containing_its_default(name):
    cls = METHODS[name][0]
    ks = knobs(cls.Config)
    assert [k.name for k in ks] == [f.name for f in dataclasses.fields(cls.Config)]
    for k in ks:
        assert k.label and k.help, k.name
        if k.kind in ("int", "float"):
            assert k.lo <= k.default <= k.hi, k.name
            assert k.step is None or k.step > 0
        if k.kind == "choice":
            assert k.default in k.choices
    assert any(k.live for k in ks), "weights / learning rate should be live-editable"


@pytest.mark.parametrize("name", ALL)
def test_values_round_trip_from_ui_to_config(name):
    cfg_cls = METHODS[name][0].Config
    ui = {}
    for k in knobs(cfg_cls):  # pick a value other than the default, as a user moving the slider would
        if k.kind == "bool":
            ui[k.name] = not k.default
        elif k.kind == "choice":
            ui[k.name] = k.choices[-1]
        else:
            ui[k.name] = k.hi if k.default != k.hi else k.lo
    cfg, messages = from_values(cfg_cls, ui)
    assert messages == []
    assert to_values(cfg) == ui
    again, _ = from_values(cfg_cls, to_values(cfg))
    assert again == cfg


@pytest.mark.parametrize("name", ALL)
def test_presets_name_real_fields_within_bounds(name):
    cls = METHODS[name][0]
    for preset, values in cls.presets.items():
        cfg, messages = from_values(cls.Config, values)
        assert messages == [], (preset, messages)
    for preset in cls.device_presets.values():
        assert preset in cls.presets


def test_out_of_range_and_junk_values_are_clamped_with_messages():
    @dataclasses.dataclass
    class C:
        w: float = knob(1.0, 0.0, 2.0, label="W", help="h")
        n: int = knob(5, 1, 10, label="N", help="h")
        opt: str = knob("a", choices=("a", "b"), label="Opt", help="h")
        flag: bool = knob(False, label="Flag", help="h")

    cfg, msgs = from_values(C, {"w": 9.0, "n": -3, "opt": "zzz", "flag": "yes", "bogus": 1})
    assert (cfg.w, cfg.n, cfg.opt, cfg.flag) == (2.0, 1, "a", True)
    assert len(msgs) == 4 and any("bogus" in m for m in msgs)
    cfg, msgs = from_values(C, {"w": float("nan"), "n": "seven"})
    assert (cfg.w, cfg.n) == (1.0, 5) and len(msgs) == 2
    cfg, msgs = from_values(C, {"n": 3.6})
    assert cfg.n == 4 and isinstance(cfg.n, int) and msgs == []
