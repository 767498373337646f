#!/usr/bin/env python3
"""Browser driver for answers the tiny real server does not give on demand. The playground page
(served from its source file) runs in headless chromium against a scripted API:
  - fetch answers that carry `progress` {step, total} and `queue_position` (shown when present);
  - a validation error, `message` {field: [sentences]}, shown field by field;
and the bodies the page sends are checked against the wire (a data URI, the fields, the key
on fetch). Exits non-zero on the first mismatch.

usage: playground_progress.py PAGE_HTML FACE_PHOTO CHROMIUM CHROMEDRIVER
"""
import http.server
import json
import os
import struct
import sys
import threading
import zlib

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser import check, chromium, console_errors, fill

KEY = "scripted-key"
JOB_ID = 5


def png(width, height):
    rows = b"".join(b"\0" + bytes([40, 120, 200]) * width for _ in range(height))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data)))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


class ScriptedApi:
    def __init__(self, page):
        self.page = page
        self.submits, self.fetches = [], []
        self.finish = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path, body):
        if path == "/api/v6/image_editing/head_shot":
            self.submits.append(body)
            if body.get("prompt") == "bad":
                return {"status": "error", "message": {"prompt": ["The prompt is not usable."],
                                                       "seed": ["The seed must be a number."]}}
            return {"status": "processing", "id": JOB_ID, "eta": 12.0,
                    "fetch_result": f"{self.base}/api/v6/image_editing/fetch/{JOB_ID}",
                    "output": [], "future_links": [], "proxy_links": [],
                    "meta": {"seed": 42, "width": 64, "height": 64, "num_inference_steps": 21}}
        if path == f"/api/v6/image_editing/fetch/{JOB_ID}":
            self.fetches.append(body)
            if self.finish.is_set():
                return {"status": "success", "id": JOB_ID, "output": [f"{self.base}/out/a-0.png"],
                        "face_similarity": [0.71234], "faces_found": 2, "seeds": [43]}
            return {"status": "processing", "id": JOB_ID, "message": "try again later.",
                    "output": "", "progress": {"step": 3, "total": 21}, "queue_position": 2}
        return None

    def handler(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, status, kind, data):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/":
                    self.send(200, "text/html; charset=utf-8", api.page)
                elif self.path == "/out/a-0.png":
                    self.send(200, "image/png", png(8, 8))
                else:
                    self.send(404, "application/json", b'{"status":"error"}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                answer = api.answer(self.path, body)
                self.send(200 if answer else 404, "application/json",
                          json.dumps(answer or {"status": "error"}).encode())

        return Handler


def main():
    page_file, photo, binary, chromedriver = sys.argv[1:5]
    api = ScriptedApi(open(page_file, "rb").read())
    driver = chromium(binary, chromedriver)
    try:
        driver.get(api.base + "/")
        driver.find_element(By.ID, "photo").send_keys(os.path.abspath(photo))
        fill(driver, "prompt", "a portrait photo")
        fill(driver, "key", KEY)
        driver.find_element(By.ID, "submit").click()

        status = lambda d: d.find_element(By.ID, "status").text
        WebDriverWait(driver, 30).until(lambda d: "step 3 of 21" in status(d))
        text = status(driver)
        check("queue position 2" in text and f"Job {JOB_ID}" in text,
              f"progress and queue position are shown ({text!r})")
        bar = driver.execute_script(
            "const p = document.getElementById('progress'); return [p.hidden, p.value, p.max];")
        check(bar == [False, 3, 21], f"the progress bar stands at step 3 of 21 ({bar})")

        submit = api.submits[0]
        check(submit["face_image"].startswith("data:image/jpeg;base64,"), "the photo is a data URI")
        sent = {k: submit[k] for k in ("key", "prompt", "width", "height", "samples",
                                       "num_inference_steps", "guidance_scale", "seed",
                                       "safety_checker", "base64")}
        check(sent == {"key": KEY, "prompt": "a portrait photo", "width": 512, "height": 512,
                       "samples": 1, "num_inference_steps": 21, "guidance_scale": 7.5,
                       "seed": None, "safety_checker": True, "base64": False},
              f"the form's defaults go out as wire fields ({sent})")
        check(api.fetches and all(f == {"key": KEY} for f in api.fetches),
              f"fetch_result is polled with the key ({api.fetches[:2]})")

        api.finish.set()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "done")
        images = driver.find_elements(By.CSS_SELECTOR, "#results img")
        check([i.get_attribute("src") for i in images] == [f"{api.base}/out/a-0.png"],
              "the fetched output is shown")
        details = driver.find_element(By.ID, "details").text
        check("seed 42" in details, f"the submit's meta is kept for the result ({details!r})")
        check("2 face(s) in the photo" in details, f"the photo's face count is shown ({details!r})")
        caption = driver.find_element(By.CSS_SELECTOR, "#results figcaption").text
        check(caption == "Image 1 · likeness 0.712 · seed 43",
              f"the image's likeness and own seed are shown ({caption!r})")

        fill(driver, "prompt", "bad")
        driver.find_element(By.ID, "submit").click()
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "results").get_attribute("data-state") == "error")
        error = driver.find_element(By.ID, "error").text
        check("prompt: The prompt is not usable." in error
              and "seed: The seed must be a number." in error,
              f"validation errors are shown field by field ({error!r})")
        check(not console_errors(driver), "no errors on the console")
    finally:
        driver.quit()
        api.server.shutdown()


if __name__ == "__main__":
    main()
