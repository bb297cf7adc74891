"""The real-scan benchmark's denoising rows and montage (training.realbench.run) on a small made-up scan:
the bundled denoiser and non-local means, cached baselines, one montage row per scan and protocol."""

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from seqinv.inference import load_task_model
from seqinv.io import Volume
from seqinv.qc import write_grid
from training.realbench.references import Cache
from training.realbench.run import SCANS, RealOptions, Scan, denoise_rows


def made_up_scan(tmp_path) -> Scan:
    rng = np.random.default_rng(0)
    grid = np.indices((48, 44, 40)).astype(np.float32)
    centre = np.array([24, 22, 20], dtype=np.float32)[:, None, None, None]
    radius = np.sqrt((((grid - centre) / np.array([18, 16, 15])[:, None, None, None]) ** 2).sum(0))
    texture = ndimage.gaussian_filter(rng.standard_normal(radius.shape), 2.0) * 8
    data = np.where(radius < 1, 100 + 60 * (radius < 0.6) + texture, 0).astype(np.float32)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    spec = SCANS[0]
    return Scan(
        spec, Volume(data=data, affine=affine), "0" * 64, Cache(tmp_path, "0" * 64), mask=radius < 0.9
    )


def test_denoise_rows_score_each_method_and_give_one_montage_row_per_scan(tmp_path):
    scan = made_up_scan(tmp_path)
    model, _ = load_task_model("denoise", "denoise")
    options = RealOptions(
        real_dir="", output="", methods=("seqinv", "nlmeans"), protocols=("rician-8%",), slab_mm=8.0
    )
    rows, panels = denoise_rows({"chris_t1": scan}, model, options)
    by_method = {r["method"]: r for r in rows}
    assert set(by_method) == {"input", "seqinv", "nlmeans"}
    assert by_method["seqinv"]["psnr_db"] > by_method["input"]["psnr_db"] + 2
    assert by_method["nlmeans"]["psnr_db"] > by_method["input"]["psnr_db"]
    assert by_method["seqinv"]["region"].endswith("x4")  # 8 mm of 2 mm slices
    (row,) = panels["rician-8%"]
    assert len(row) == 4  # noisy, seqinv, nlmeans, clean
    assert all(p.shape == row[-1].shape for p in row)
    assert abs(np.percentile(row[-1], 99.5) - 1.0) < 1e-3  # windowed on the clean slice

    again, _ = denoise_rows({"chris_t1": made_up_scan(tmp_path)}, model, options)  # baselines from cache
    assert [r["psnr_db"] for r in again if r["method"] == "nlmeans"] == [by_method["nlmeans"]["psnr_db"]]

    path = tmp_path / "denoise.png"
    write_grid(path, panels["rician-8%"])
    png = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    height, width = row[0].shape
    assert png.shape == (height, 4 * width, 3)
    assert not list(tmp_path.glob("*.tmp*"))
