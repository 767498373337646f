#!/usr/bin/env python3
"""Likeness-score goldens for `cargo test -p headshot-face --test likeness`, by insightface 0.7.3.

Run by hand (not in CI), in the environment of make_face_goldens.py:

    .venv/bin/python tools/face_goldens/make_likeness_goldens.py

The score of a generated image is insightface's `ArcFaceONNX.compute_sim` between the job's
identity (the `normed_embedding` of the largest face of the input photo, what FaceID is given)
and the embedding of the largest face found in the image (`None` when there is none). Largest
means the biggest box area, ties to the higher detection score, as the server picks faces.

Images scored (tests/fixtures/goldens/face/):
  - `likeness_yaoming_512.png`, `likeness_gdp_512.png`: the photos centre-cropped to a square and
    resized to 512x512 (cv2 INTER_AREA), standing in for generated head shots;
  - `likeness_tiny_output.png`: a real output of the tiny random-weight set (`headshot generate
    --models models/tiny.toml --face yaoming.jpg --prompt "pretty woman" --width 256 --height 256
    --steps 2 --seed 7`): noise, so no face;
  - `gradient_noface.png` (from make_face_goldens.py).
Writes `likeness.json`: every identity photo against every image.
"""

import json
import os
import sys
from pathlib import Path

import cv2
import insightface
import numpy as np
import onnxruntime
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("HEADSHOT_TEST_ASSETS", REPO / "target" / "test-assets"))
OUT = REPO / "tests" / "fixtures" / "goldens" / "face"
IDENTITIES = ["yaoming.jpg", "gdp.jpg", "players.jpg"]


def square_512(src: Path, dst: Path):
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = img[top : top + side, left : left + side]
    cv2.imwrite(str(dst), cv2.resize(crop, (512, 512), interpolation=cv2.INTER_AREA))


def largest(det, rec, img):
    """(normed embedding, raw embedding) of the largest face, or None."""
    bboxes, kpss = det.detect(img, max_num=0, metric="default")
    best = None
    for i in range(bboxes.shape[0]):
        area = (bboxes[i, 2] - bboxes[i, 0]) * (bboxes[i, 3] - bboxes[i, 1])
        if best is None or area > best[0]:
            best = (area, i)
    if best is None:
        return None
    i = best[1]
    face = insightface.app.common.Face(bbox=bboxes[i, 0:4], kps=kpss[i], det_score=bboxes[i, 4])
    rec.get(img, face)
    return face


def main():
    det_path = ASSETS / "scrfd_500m_bnkps.onnx"
    rec_path = ASSETS / "w600k_mbf.onnx"
    providers = ["CPUExecutionProvider"]
    det = SCRFD(str(det_path), onnxruntime.InferenceSession(str(det_path), providers=providers))
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = ArcFaceONNX(str(rec_path), onnxruntime.InferenceSession(str(rec_path), providers=providers))
    rec.prepare(-1)

    square_512(ASSETS / "yaoming.jpg", OUT / "likeness_yaoming_512.png")
    square_512(ASSETS / "gdp.jpg", OUT / "likeness_gdp_512.png")
    images = [
        "likeness_yaoming_512.png",
        "likeness_gdp_512.png",
        "likeness_tiny_output.png",
        "gradient_noface.png",
    ]
    pairs = []
    for identity in IDENTITIES:
        face = largest(det, rec, cv2.imread(str(ASSETS / identity), cv2.IMREAD_COLOR))
        for image in images + [identity]:
            path = OUT / image if (OUT / image).is_file() else ASSETS / image
            found = largest(det, rec, cv2.imread(str(path), cv2.IMREAD_COLOR))
            sim = None if found is None else float(rec.compute_sim(face.normed_embedding, found.embedding))
            pairs.append({"identity": identity, "image": image, "similarity": sim})
            print(f"{identity} vs {image}: {sim}", file=sys.stderr)
    result = {
        "generator": "tools/face_goldens/make_likeness_goldens.py",
        "insightface": insightface.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "detector": det_path.name,
        "recognizer": rec_path.name,
        "pairs": pairs,
    }
    with open(OUT / "likeness.json", "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
