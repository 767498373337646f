#!/usr/bin/env python3
"""Times the reference (insightface 0.7.3 on onnxruntime, CPU) on the photos and models that
`cargo bench -p headshot-face` uses, with the same scopes:

  decode/<photo>          cv2.imread
  detect/<photo>          SCRFD.detect (resize, blob, session.run, anchors, NMS)
  embed_one_face/<photo>  norm_crop 112 (+ ArcFaceONNX.get) and norm_crop 224 for the top face
  analyze_largest/<photo> decode + detect + embed of one face
  model/scrfd_640, model/arcface_112: session.run alone

Median of N runs (default 20) after warm-up; prints one line per item. Threads: onnxruntime's
default (all cores) unless ORT_THREADS is set; ORT_SPINNING=0 turns off pool spinning as
headshot-face does by default. Run: .venv/bin/python time_onnxruntime.py
"""

import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils import face_align

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("HEADSHOT_TEST_ASSETS", REPO / "target" / "test-assets"))
RUNS = int(os.environ.get("RUNS", "20"))


def session(path):
    options = onnxruntime.SessionOptions()
    if os.environ.get("ORT_SPINNING") == "0":  # headshot-face's default
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    threads = os.environ.get("ORT_THREADS")
    if threads:
        options.intra_op_num_threads = int(threads)
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(fn, runs=RUNS):
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main():
    det_path, rec_path = ASSETS / "scrfd_500m_bnkps.onnx", ASSETS / "w600k_mbf.onnx"
    det = SCRFD(str(det_path), session(det_path))
    det.prepare(-1, input_size=(640, 640), det_thresh=0.5)
    rec = ArcFaceONNX(str(rec_path), session(rec_path))
    rec.prepare(-1)
    print(f"onnxruntime {onnxruntime.__version__}, opencv {cv2.__version__}, runs {RUNS}", file=sys.stderr)

    for photo in ("players", "gdp", "yaoming"):
        path = str(ASSETS / f"{photo}.jpg")
        img = cv2.imread(path)
        bboxes, kpss = det.detect(img, max_num=0, metric="default")
        kps = kpss[0]

        class Face(dict):
            __getattr__ = dict.get

            def __setattr__(self, k, v):
                self[k] = v

        def embed():
            face = Face(kps=kps)
            rec.get(img, face)
            face_align.norm_crop(img, landmark=kps, image_size=224)

        def analyze_largest():
            image = cv2.imread(path)
            b, k = det.detect(image, max_num=0, metric="default")
            largest = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            face = Face(kps=k[largest])
            rec.get(image, face)
            face_align.norm_crop(image, landmark=k[largest], image_size=224)

        print(f"decode/{photo} {median_ms(lambda: cv2.imread(path)):.2f} ms")
        print(f"detect/{photo} {median_ms(lambda: det.detect(img, max_num=0, metric='default')):.2f} ms")
        print(f"embed_one_face/{photo} {median_ms(embed):.2f} ms")
        print(f"analyze_largest/{photo} {median_ms(analyze_largest):.2f} ms")

    # The likeness score of a generated image (finish stage): detect, largest face, ArcFace, cosine.
    identity = None
    yao = cv2.imread(str(ASSETS / "yaoming.jpg"))
    b, k = det.detect(yao, max_num=0, metric="default")
    identity = rec.get(yao, Face(kps=k[int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))]))
    goldens = REPO / "tests" / "fixtures" / "goldens" / "face"
    for output in ("likeness_yaoming_512", "likeness_tiny_output"):
        img = cv2.imread(str(goldens / f"{output}.png"))

        def likeness():
            b, k = det.detect(img, max_num=0, metric="default")
            if b.shape[0] == 0:
                return None
            largest = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            return rec.compute_sim(identity, rec.get(img, Face(kps=k[largest])))

        print(f"likeness/{output} {median_ms(likeness):.2f} ms")

    blob = np.random.default_rng(0).standard_normal((1, 3, 640, 640), dtype=np.float32)
    print(f"model/scrfd_640 {median_ms(lambda: det.session.run(None, {det.input_name: blob})):.2f} ms")
    blob = np.random.default_rng(0).standard_normal((1, 3, 112, 112), dtype=np.float32)
    print(f"model/arcface_112 {median_ms(lambda: rec.session.run(None, {rec.input_name: blob})):.2f} ms")


if __name__ == "__main__":
    main()
