"""AppTest of the Grad-CAM page's sanity strip: the cascade's maps and similarities are
hooklab.cam.sanity's for the page's image, layer and class; the verdict and the expected outcome
are said in words; the data-randomisation test sits beside it (one st.error, the page going on,
when its shipped weights are missing)."""

from __future__ import annotations

import numpy as np

from hooklab.cam import sanity
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
    shipped = _shipped(sanity.SHUFFLED)
    # original + 5 randomised layers (+ the data-randomisation pair)
    assert len(strip["data"]) == len(want.labels) + (2 if shipped else 0) == 6 + 2 * shipped
    notes = [a["text"] for a in strip["layout"]["annotations"] if "SSIM" in a["text"]]
    assert notes[:5] == [f"ρ {float(want.spearman[k, 0]):.2f} · SSIM {float(want.ssim[k, 0]):.2f}"
                         for k in range(1, 6)]
    for k in range(6):
        z = _array(strip["data"][k]["z"]).astype(float).reshape(32, 32)
        assert np.allclose(z, want.maps[k, 0].numpy(), atol=1e-5)
    said = [m.value for m in (*at.success, *at.warning)]
    assert want.verdict in said
    assert any(want.expected in c.value for c in at.caption)
    curves = _figure(at, "gradcam_sanity_curves")
    assert list(_array(curves["data"][0]["y"]).astype(float).round(6)) == list(
        np.round(want.mean_spearman(), 6))
    if shipped:
        assert not at.error
        data = sanity.data_randomisation(img[None], "gradcam", layer="conv3", target=[target])
        z = _array(strip["data"][7]["z"]).astype(float).reshape(32, 32)
        assert np.allclose(z, data.shuffled[0].numpy(), atol=1e-5)
        assert data.verdict in said
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
