"""Config metadata and params.validate, the one way outside values become a config: bounds contain
defaults, values round-trip, bad values are clamped or kept with a message, strict mode refuses."""

from __future__ import annotations

import dataclasses

import pytest

from recon.methods import METHODS
from recon.params import SettingError, knob, knobs, to_values, validate

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
    cfg, messages = validate(cfg_cls, ui)
    assert messages == []
    assert to_values(cfg) == ui
    again, _ = validate(cfg_cls, to_values(cfg))
    assert again == cfg


def test_out_of_range_and_junk_values_are_clamped_with_messages():
    @dataclasses.dataclass
    class C:
        w: float = knob(1.0, 0.0, 2.0, label="W", help="h")
        n: int = knob(5, 1, 10, label="N", help="h")
        opt: str = knob("a", choices=("a", "b"), label="Opt", help="h")
        flag: bool = knob(False, label="Flag", help="h")

    cfg, msgs = validate(C, {"w": 9.0, "n": -3, "opt": "zzz", "flag": "yes", "bogus": 1})
    assert (cfg.w, cfg.n, cfg.opt, cfg.flag) == (2.0, 1, "a", True)
    assert len(msgs) == 4 and any("bogus" in m for m in msgs)
    cfg, msgs = validate(C, {"w": float("nan"), "n": "seven"})
    assert (cfg.w, cfg.n) == (1.0, 5) and len(msgs) == 2
    cfg, msgs = validate(C, {"n": 3.6})
    assert cfg.n == 4 and isinstance(cfg.n, int) and msgs == []
    # a cleared number box (None or "") keeps the current value instead of becoming a default or crashing
    base, _ = validate(C, {"w": 0.5})
    cfg, msgs = validate(C, {"w": None, "n": ""}, base=base)
    assert (cfg.w, cfg.n) == (0.5, 5) and msgs == ["W is empty; kept 0.5", "N is empty; kept 5"]
    cfg, msgs = validate(C, {"w": 1e9, "n": "1e9"})  # clamped and said so, no traceback
    assert (cfg.w, cfg.n) == (2.0, 10) and all("outside" in m for m in msgs)
    cfg, msgs = validate(C, {"w": True})  # a JSON true is not a number
    assert cfg.w == 1.0 and "not a valid value" in msgs[0]


def test_strict_validation_refuses_what_it_cannot_use():
    @dataclasses.dataclass
    class C:
        w: float = knob(1.0, 0.0, 2.0, label="W", help="h", live=True)
        n: int = knob(5, 1, 10, label="N", help="h")
        opt: str = knob("a", choices=("a", "b"), label="Opt", help="h")

    for values, words in (({"bogus": 1}, "unknown setting 'bogus'"), ({"n": "seven"}, "not a number"),
                          ({"opt": "z"}, "not one of a, b"), ({"w": "inf"}, "not finite")):
        with pytest.raises(SettingError, match=words):
            validate(C, values, strict=True)
    cfg, msgs = validate(C, {"w": 5.0}, strict=True)  # out of bounds is clamped, not refused
    assert cfg.w == 2.0 and msgs


def test_live_only_keeps_settings_that_cannot_change_mid_run():
    @dataclasses.dataclass
    class C:
        w: float = knob(1.0, 0.0, 2.0, label="W", help="h", live=True)
        n: int = knob(5, 1, 10, label="N", help="h")

    cfg, msgs = validate(C, {"w": 1.5, "n": 9}, live_only=True)
    assert (cfg.w, cfg.n) == (1.5, 5) and msgs == ["N cannot change while a run is going"]
