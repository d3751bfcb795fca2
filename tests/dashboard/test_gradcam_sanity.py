"""AppTest of the Grad-CAM page's sanity strip: the cascade's maps and similarities are
hooklab.cam.sanity's for the page's image, layer and class; the verdict and the expected outcome
are said in words; the data-randomisation test sits beside it (one st.error, the page going on,
when its shipped weights are missing)."""

from __future__ import annotations

import numpy as np

from hooklab.cam import sanity
from hooklab.charts import cam as C
from hooklab.data import datasets as datalib
from hooklab.models import defaults
from hooklab.studies.train import trained_model
from tests.dashboard.test_gradcam_page import _app, _array, _figure, cache_dir, store

__all__ = ["cache_dir", "store"]  # fixtures shared with the page's own tests


def _shipped(name: str) -> bool:
    try:
        defaults.entry_named(name)
    except Exception:  # noqa: BLE001 - not shipped (yet)
        return False
    return True


def test_sanity_strip_is_the_librarys_cascade(store):
    at = _app()
    at.radio(key="gradcam_section").set_value("sanity").run()
    assert not at.exception
    at.selectbox(key="gradcam_sanity_method").set_value("gradcam")
    at.button(key="gradcam_sanity_run").click().run()
    assert not at.exception
    img, _, _ = datalib.shapes_sample(102)
    model = trained_model()
    target = int(model(img[None]).argmax(1))
    want = sanity.mprt(model, img[None], "gradcam", layer="conv3", target=[target])
    strip = _figure(at, "gradcam_sanity_strip")
    assert len(strip["data"]) == len(want.labels) == 6  # original + 5 randomised layers
    titles = [a["text"] for a in strip["layout"]["annotations"] if "SSIM" in a["text"]]
    rho, ss = want.mean_spearman(), want.mean_ssim()
    assert titles == [f"{lab}<br>ρ {r:.2f} · SSIM {s:.2f}"
                      for lab, r, s in zip(want.labels[1:], rho[1:], ss[1:], strict=True)]
    display = datalib.to_display(img)
    for k, trace in enumerate(strip["data"]):
        z = _array(trace["z"]).reshape(32, 32, 3).astype(int)
        ref = C.to_uint8(C.overlay(display, want.maps[k, 0].numpy(), 0.4)).astype(int)
        assert np.abs(z - ref).max() <= 1
    said = [m.value for m in (*at.success, *at.warning)]
    assert want.verdict in said
    assert any(want.expected in c.value for c in at.caption)
    curves = _figure(at, "gradcam_sanity_curves")
    assert list(_array(curves["data"][0]["y"]).astype(float).round(6)) == list(
        np.round(rho, 6))
    if _shipped(sanity.SHUFFLED):
        assert not at.error
        assert len(_figure(at, "gradcam_sanity_data")["data"]) == 2
    else:  # the missing weights are one message; the strip above is still there
        assert len(at.error) == 1 and sanity.SHUFFLED in at.error[0].value


def test_cam_doctor_says_nothing_on_a_good_map_and_speaks_under_a_bad_one(store, monkeypatch):
    at = _app()
    assert not at.exception and not at.error
    assert not [w for w in at.warning if "CAM doctor" in w.value]  # the seed's map is fine
    from hooklab.cam import doctor

    seen = []

    def blank(res, model, x):  # the library's finding for a blank map, as diagnose gives it
        seen.append((res.layer, tuple(x.shape)))
        return [doctor.Diagnosis("blank", "wrong_class", (0,),
                                 "1 map(s) are blank: " + doctor.CAUSES["wrong_class"])]

    monkeypatch.setattr(doctor, "diagnose", blank)
    at = _app()
    assert not at.exception and not at.error
    notes = [w.value for w in at.warning if w.value.startswith("CAM doctor: ")]
    assert notes == ["CAM doctor: 1 map(s) are blank: " + doctor.CAUSES["wrong_class"]]
    assert seen == [("conv3", (1, 3, 32, 32))]  # the page's own result and input
