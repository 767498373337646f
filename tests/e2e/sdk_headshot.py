#!/usr/bin/env python3
"""End-to-end driver: the official ModelsLab SDK (PyPI `modelslab-py`) and the documented example
body, against a running headshot-server. Exits non-zero on the first mismatch.

usage: sdk_headshot.py BASE_URL API_KEY FACE_PHOTO

BASE_URL is the server root (http://127.0.0.1:PORT). The server must run with
--allow-private-urls (the documented example fetches its face image from a loopback server here).
"""
import base64
import http.server
import json
import socketserver
import sys
import threading
import urllib.request

from modelslab_py.core.client import Client
from modelslab_py.core.apis.image_editing import Image_editing
from modelslab_py.schemas.image_editing import HeadshotSchema

META_KEYS = sorted([
    "base64", "face_image", "file_prefix", "guidance_scale", "height", "negative_prompt",
    "num_inference_steps", "outdir", "prompt", "safety_checker", "safety_checker_type", "samples",
    "seed", "temp", "width",
])
SUCCESS_KEYS = sorted(["status", "generationTime", "id", "output", "proxy_links",
                       "nsfw_content_detected", "meta"])
# Our additions beside the documented keys (issue 14): per image, the likeness of its face to
# the input face (a number in -1..1, or null where no face was found), and how many faces the
# input photo shows.
EXTRA_SUCCESS_KEYS = ["face_similarity", "faces_found"]
PROCESSING_KEYS = sorted(["status", "tip", "eta", "message", "fetch_result", "id", "output",
                          "future_links", "proxy_links", "meta"])


def check(cond, what, body=None):
    if not cond:
        raise SystemExit(f"FAILED: {what}\n{json.dumps(body, indent=1) if body is not None else ''}")
    print(f"ok: {what}")


def download(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, r.read()


def check_scores(body, what):
    scores = body["face_similarity"]
    check(isinstance(scores, list) and len(scores) == len(body["output"]), f"{what}: one score per image", body)
    check(all(s is None or -1.0 <= s <= 1.0 for s in scores), f"{what}: scores are cosines or null", body)
    check(isinstance(body["faces_found"], int) and body["faces_found"] >= 1, f"{what}: faces_found", body)


def keys_besides_style(body):
    """The body's keys without `style` (echoed beside `meta` only when the request sent one)."""
    return sorted(k for k in body.keys() if k != "style")


def check_success(body, what):
    check(keys_besides_style(body) == sorted(SUCCESS_KEYS + EXTRA_SUCCESS_KEYS), f"{what}: success keys", body)
    check_scores(body, what)
    check(body["status"] == "success", f"{what}: status success", body)
    check(isinstance(body["id"], int), f"{what}: integer id", body)
    check(isinstance(body["generationTime"], (int, float)), f"{what}: generationTime", body)
    check(sorted(body["meta"].keys()) == META_KEYS, f"{what}: meta keys", body)
    check(body["proxy_links"] == body["output"], f"{what}: proxy_links", body)
    for url in body["output"]:
        status, data = download(url)
        check(status == 200, f"{what}: output {url} served")
        if url.endswith(".png"):
            check(data.startswith(b"\x89PNG"), f"{what}: output is a PNG")
        else:
            check(data.startswith(b"data:image/png;base64,"), f"{what}: output is a PNG data URI")


def serve_file(path):
    """A loopback HTTP server for the face photo; returns its URL."""
    data = open(path, "rb").read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = socketserver.TCPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/face.jpg"


def main():
    base, key, photo = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    face_b64 = base64.b64encode(open(photo, "rb").read()).decode()

    # 1. The official SDK, exactly as its README shows, with only the base URL changed.
    client = Client(key, fetch_retry=600, fetch_timeout=1)
    client.base_url = base + "/api/"
    api = Image_editing(client)
    schema = HeadshotSchema(
        prompt="professional headshot photo, studio light",
        face_image="data:image/jpeg;base64," + face_b64,
        width=128, height=128, samples=1, seed=7,
    )
    first = api.headshot(schema)
    print("submit:", json.dumps({k: v for k, v in first.items() if k != "meta"}))
    # The SDK sends style="realistic" by default: accepted, and echoed beside meta.
    check(first.get("style") == "realistic", "sdk: style echoed", first)
    if first["status"] == "processing":
        check(keys_besides_style(first) == PROCESSING_KEYS, "sdk: processing keys", first)
        check(first["output"] == [] and len(first["future_links"]) == 1, "sdk: processing lists", first)
        fetched = api.fetch(str(first["id"]))
        check(sorted(fetched.keys()) == ["face_similarity", "faces_found", "id", "output", "status"], "sdk fetch: keys", fetched)
        check_scores(fetched, "sdk fetch")
        check(fetched["status"] == "success", "sdk fetch: success", fetched)
        check(fetched["output"] == first["future_links"], "sdk fetch: future links kept", fetched)
    else:
        check_success(first, "sdk submit")
        meta = first["meta"]
        # The SDK's own defaults are normalised, not rejected.
        check(meta["num_inference_steps"] == 21, "sdk: steps 20 -> 21", meta)
        check(meta["seed"] == 7 and meta["width"] == 128, "sdk: values echoed", meta)
        fetched = api.fetch(str(first["id"]))
        check(fetched == {"status": "success", "id": first["id"], "output": first["output"],
                          "face_similarity": first["face_similarity"], "faces_found": first["faces_found"]},
              "sdk fetch of a finished job", fetched)

    # 2. The documented example body, verbatim except the face image URL (key in the header,
    #    since the example's key is "").
    example = {
        "key": "",
        "prompt": "pretty woman",
        "negative_prompt": "anime, cartoon, drawing, big nose, long nose, fat, ugly, big lips, big mouth, face proportion mismatch, unrealistic, monochrome, lowres, bad anatomy, worst quality, low quality, blurry",
        "face_image": serve_file(photo),
        "width": "512",
        "height": "512",
        "samples": "1",
        "num_inference_steps": "21",
        "safety_checker": False,
        "base64": False,
        "seed": None,
        "guidance_scale": 7.5,
        "webhook": None,
        "track_id": None,
    }
    req = urllib.request.Request(
        base + "/api/v6/image_editing/head_shot",
        data=json.dumps(example).encode(),
        headers={"Content-Type": "application/json", "key": key},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        check(r.status == 200, "example: HTTP 200")
        body = json.loads(r.read())
    if body["status"] == "processing":
        body = api.fetch(str(body["id"]))
        check(body["status"] == "success", "example: fetched success", body)
    else:
        check_success(body, "example")
        check("style" not in body, "example: no style sent, none echoed", body)
        meta = body["meta"]
        check(meta["guidance_scale"] == 7.5 and meta["safety_checker"] == "no", "example: meta", meta)
        check(isinstance(meta["seed"], int), "example: random seed echoed", meta)

    # 3. Wrong key and unknown id, through the SDK's client.
    bad = Client("wrong-key")
    bad.base_url = base + "/api/"
    answer = Image_editing(bad).headshot(schema)
    check(answer["status"] == "error" and answer["message"] == "Invalid Api Key", "wrong key", answer)
    answer = client.post(base + "/api/v6/image_editing/fetch/999999999", {"key": key})
    check(answer == {"status": "failed", "id": "", "message": "Request not found", "output": ""},
          "unknown id", answer)

    # 4. The SDK's enterprise admin calls: answered (HTTP 200, or the SDK raises) with facts.
    admin = Image_editing(client, enterprise=True)
    details = admin.system_details()
    print("system_details:", json.dumps(details))
    check(details["status"] == "success", "system_details: success", details)
    data = details["data"]
    check(len(data["devices"]) >= 1 and all(d["alive"] for d in data["devices"]),
          "system_details: live devices", details)
    check(data["queue"]["max_queued"] >= 1 and len(data["models"]) >= 1,
          "system_details: queue and models", details)
    check(isinstance(data["uptime_seconds"], int) and data["server_version"],
          "system_details: uptime and version", details)
    cleared = admin.clear_cache()
    check(cleared["status"] == "success" and "files_removed" in cleared["data"],
          "clear_cache: what was removed", cleared)
    for name, call in (("restart_server", admin.restart), ("update", admin.update)):
        answer = call()
        check(answer["status"] == "error" and "not supported" in answer["message"],
              f"{name}: not supported, without raising", answer)
    denied = Image_editing(bad, enterprise=True).system_details()
    check(denied["status"] == "error" and denied["message"] == "Invalid Api Key",
          "system_details: wrong key", denied)
    # 5. The SDK's enterprise clear_queue (nothing is waiting now).
    answer = admin.clear_queue()
    check(answer == {"status": "success", "message": "Queue cleared", "cancelled": 0},
          "sdk enterprise clear_queue", answer)
    print("e2e: all checks passed")


if __name__ == "__main__":
    main()
