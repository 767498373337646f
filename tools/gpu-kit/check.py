#!/usr/bin/env python3
"""The GPU kit's check (run through check.sh). Standard library only; the diffusers parts run in
a child process (diffusers_ref.py) that imports torch. Parts, each with its own time budget:

  models   headshot random-models writes the random set (full size on a GPU, tiny on a CPU)
  parity   the committed end-to-end goldens on the device: ours f32/f16/bf16, diffusers f16/bf16
  speed    ours vs diffusers on the random set: whole jobs, UNet step, VAE decode, concurrency,
           peak GPU memory (NVML, sampled every 20 ms)
  server   headshot-server on loopback with the random set: concurrent SDK-shaped submits

check.json and check.md are rewritten after every part.
"""

import argparse
import base64
import ctypes
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

# f32: the issue's bar. f16/bf16: a multiple of diffusers' own error in that precision on the
# same device (both sides round the same activations; we may differ in kernel order), never
# below the f32 bar. Without a diffusers run (CPU machines) they are not judged.
F32_TOL = 2e-3
HALF_FACTOR = 3.0

PARITY_CASES_GPU = [
    "e2e_s1_g7.5_512x512_n1_neg_21",
    "e2e_s1_g1_512x512_n1_neg_21",
    "e2e_s1_g5_512x512_n1_neg_31",
]
PARITY_CASES_CPU = ["e2e_s1_g1_512x512_n1_neg_21"]


def now():
    return time.time()


class Gpu:
    """Device-wide used memory through NVML (the driver's libnvidia-ml), sampled in a thread."""

    def __init__(self, index):
        self.lib = None
        self.samples = []  # (time, used bytes)
        try:
            lib = ctypes.CDLL("libnvidia-ml.so.1")
            if lib.nvmlInit_v2() != 0:
                return
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(index, ctypes.byref(handle)) != 0:
                return
            self.lib, self.handle = lib, handle
        except OSError:
            return
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def used(self):
        class Memory(ctypes.Structure):
            _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]

        m = Memory()
        if self.lib.nvmlDeviceGetMemoryInfo(self.handle, ctypes.byref(m)) != 0:
            return None
        return m.used

    def _run(self):
        while not self.stop:
            u = self.used()
            if u is not None:
                self.samples.append((now(), u))
            time.sleep(0.02)

    def describe(self):
        if not self.lib:
            return None
        name = ctypes.create_string_buffer(96)
        self.lib.nvmlDeviceGetName(self.handle, name, 96)
        driver = ctypes.create_string_buffer(96)
        self.lib.nvmlSystemGetDriverVersion(driver, 96)
        return {"name": name.value.decode(), "driver": driver.value.decode()}

    def peak_mib(self, t0, t1, baseline):
        """Most memory in use between t0 and t1, above what was in use before the process."""
        if not self.lib:
            return None
        inside = [u for t, u in self.samples if t0 <= t <= t1]
        if not inside or baseline is None:
            return None
        return round((max(inside) - baseline) / 2**20, 1)

    def idle_baseline(self):
        return self.used() if self.lib else None


class Report:
    def __init__(self, out, device, budget):
        self.out = out
        self.started = now()
        self.data = {
            "kit": {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": machine(),
                "device": device,
                "budget_secs": budget,
                "complete": False,
            },
            "parts": {},
        }

    def part(self, name, value):
        self.data["parts"][name] = value
        self.write()

    def write(self, complete=False):
        self.data["kit"]["elapsed_secs"] = round(now() - self.started, 1)
        self.data["kit"]["complete"] = complete
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "check.json").write_text(json.dumps(self.data, indent=1) + "\n")
        (self.out / "check.md").write_text(markdown(self.data))


def machine():
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def run_json_lines(cmd, timeout, env=None, log=None):
    """Runs cmd, collecting the JSON objects it prints, one per line, until it exits or the
    timeout passes (then it is killed and what it printed so far is kept)."""
    records, status = [], "ok"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log or subprocess.DEVNULL, text=True, env=env)

    def read():
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=max(timeout, 1))
        if code != 0:
            status = f"failed (exit {code})"
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        status = "partial (time budget spent)"
    reader.join(timeout=5)
    return records, status


class Check:
    def __init__(self, args):
        self.args = args
        self.kit = Path(args.kit)
        self.gpu_mode = args.device != "cpu"
        self.bin = Path(os.environ.get("HEADSHOT_BIN_DIR") or (self.kit / "bin" if (self.kit / "bin").is_dir() else self.kit / "target" / "debug"))
        default_out = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path.cwd() / "gpu-kit-results"
        self.out = Path(args.out) if args.out else default_out
        self.work = Path(tempfile.mkdtemp(prefix="gpu-kit-"))
        self.report = Report(self.out, args.device, args.budget_secs)
        self.deadline = now() + args.budget_secs
        index = int(args.device.split(":")[1]) if ":" in args.device else 0
        self.gpu = Gpu(index) if self.gpu_mode else None
        self.report.data["kit"]["gpu"] = self.gpu.describe() if self.gpu else None
        self.logs = self.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.assets = self.kit / "target" / "test-assets"
        self.goldens = self.kit / "tests" / "fixtures" / "goldens"
        self.diffusers_ok, self.diffusers_why = self.diffusers_available()

    # ---- helpers ---------------------------------------------------------------------------
    def budget(self, share):
        """Seconds for a part: its share, never past the overall deadline."""
        return max(1.0, min(share, self.deadline - now()))

    def log(self, name):
        return open(self.logs / f"{name}.log", "w")

    def diffusers_available(self):
        if not self.gpu_mode:
            return False, "skipped on CPU: diffusers/torch are not installed on CPU machines (CI); the GPU box runs them"
        probe = subprocess.run([sys.executable, "-c", "import torch, diffusers, peft; assert torch.cuda.is_available()"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            return False, "diffusers unavailable: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
        return True, None

    def headshot(self, *args):
        return [str(self.bin / "headshot"), *map(str, args)]

    # ---- parts -----------------------------------------------------------------------------
    def models(self):
        size = "full" if self.gpu_mode else "tiny"
        dtype = "f16" if self.gpu_mode else "f32"
        self.set_dir = self.work / f"random-{size}"
        started = now()
        records, status = run_json_lines(
            self.headshot("random-models", "--size", size, "--seed", "0", "--dtype", dtype,
                          "--face-models", self.assets, "--out", self.set_dir),
            self.budget(60 if self.gpu_mode else 30), log=self.log("models"))
        self.manifest = self.set_dir / "models.toml"
        part = {"status": status, "size": size, "dtype": dtype, "seconds": round(now() - started, 1),
                "written": records[-1] if records else None}
        self.report.part("models", part)
        return status == "ok"

    def parity(self):
        started = now()
        if self.args.cases:
            cases = self.args.cases.split(",")
        else:
            # build.sh may have left a case out to fit the archive: take those present.
            wanted = PARITY_CASES_GPU if self.gpu_mode else PARITY_CASES_CPU
            cases = [c for c in wanted if (self.goldens / f"{c}.safetensors").is_file()]
        dtypes = ["f32", "f16", "bf16"] if self.gpu_mode else ["f32"]
        part = {"budget_secs": None, "cases": cases, "tolerances": {
            "f32": f"image max |ours - golden| <= {F32_TOL} (the goldens are diffusers f32 on CPU)",
            "f16/bf16": f"<= max({HALF_FACTOR} x diffusers' own max error in that dtype on this device, {F32_TOL})",
        }}
        budget = self.budget(70 if self.gpu_mode else 60)
        part["budget_secs"] = round(budget)
        ours, status = run_json_lines(
            self.headshot("parity", "--models", self.kit / "models" / "tiny.toml", "--goldens", self.goldens,
                          "--cases", ",".join(cases), "--device", self.args.device, "--dtypes", ",".join(dtypes)),
            budget * (0.6 if self.diffusers_ok else 1.0), log=self.log("parity-ours"),
            env={**os.environ, "HEADSHOT_TEST_ASSETS": str(self.assets)})
        part["ours"], part["status"] = ours, status
        theirs = []
        if self.diffusers_ok:
            theirs, dstatus = run_json_lines(
                [sys.executable, str(HERE / "diffusers_ref.py"), "parity", "--kit", str(self.kit),
                 "--device", self.args.device, "--cases", ",".join(cases), "--dtypes", "f16,bf16"],
                self.budget(budget * 0.4), log=self.log("parity-diffusers"))
            part["diffusers_status"] = dstatus
        else:
            part["diffusers_status"] = self.diffusers_why
        part["diffusers"] = theirs
        ref = {(r["case"], r["dtype"]): r["image_max_abs"] for r in theirs if r.get("kind") == "parity"}
        checks = []
        for r in ours:
            if r.get("kind") != "parity":
                continue
            if r["dtype"] == "f32":
                tol, basis = F32_TOL, "issue bar"
            elif (r["case"], r["dtype"]) in ref:
                tol = max(HALF_FACTOR * ref[(r["case"], r["dtype"])], F32_TOL)
                basis = f"{HALF_FACTOR} x diffusers {r['dtype']} ({ref[(r['case'], r['dtype'])]:.2e})"
            else:
                tol, basis = None, "no diffusers reference: not judged"
            checks.append({"case": r["case"], "dtype": r["dtype"], "image_max_abs": r["image_max_abs"],
                           "tolerance": tol, "basis": basis,
                           "pass": None if tol is None else bool(r["finite"] and r["image_max_abs"] <= tol)})
        part["checks"] = checks
        missing = len(cases) * len(dtypes) - len(checks)
        if missing and part["status"] == "ok":
            part["status"] = f"incomplete ({missing} runs missing)"
        part["seconds"] = round(now() - started, 1)
        self.report.part("parity", part)

    def speed(self):
        started = now()
        if self.gpu_mode:
            bench_args = ["--size", "512", "--steps", "21,31,41", "--concurrency", "1,4,8", "--repeats", "3", "--dtype", "f16"]
            ours_budget, theirs_budget = 75, 95
        else:
            bench_args = ["--size", "64", "--steps", "21,31,41", "--concurrency", "1,4,8", "--repeats", "1", "--dtype", "f32"]
            ours_budget, theirs_budget = 60, 0
        part = {"settings": " ".join(bench_args)}
        budget = self.budget(ours_budget)
        baseline = self.gpu.idle_baseline() if self.gpu else None
        ours, status = run_json_lines(
            self.headshot("bench", "--models", self.manifest, "--device", self.args.device,
                          "--budget-secs", round(budget * 0.8), *bench_args),
            budget, log=self.log("speed-ours"))
        self.attach_memory(ours, baseline)
        part["ours"], part["status"] = ours, status
        theirs = []
        if self.diffusers_ok:
            budget = self.budget(theirs_budget)
            baseline = self.gpu.idle_baseline()
            theirs, dstatus = run_json_lines(
                [sys.executable, str(HERE / "diffusers_ref.py"), "bench", "--kit", str(self.kit),
                 "--set", str(self.set_dir), "--device", self.args.device, "--budget-secs", str(round(budget * 0.8)),
                 *bench_args],
                budget, log=self.log("speed-diffusers"))
            self.attach_memory(theirs, baseline)
            part["diffusers_status"] = dstatus
        else:
            part["diffusers_status"] = self.diffusers_why
        part["diffusers"] = theirs
        part["table"] = side_by_side(ours, theirs)
        part["seconds"] = round(now() - started, 1)
        self.report.part("speed", part)

    def attach_memory(self, records, baseline):
        for r in records:
            if "t_start" in r:
                r["peak_gpu_mib"] = self.gpu.peak_mib(r["t_start"], r["t_end"], baseline) if self.gpu else None

    def server(self):
        started = now()
        budget = self.budget(50 if self.gpu_mode else 45)
        size, requests, concurrency = (512, 16, 8) if self.gpu_mode else (128, 4, 2)
        part = {"size": f"{size}x{size}", "steps": 21, "requests": requests, "concurrency": concurrency}
        port = free_port()
        data = self.work / "server-data"
        cmd = [str(self.bin / "headshot-server"), "--bind", f"127.0.0.1:{port}", "--api-keys", "kit-key",
               "--models", str(self.manifest), "--device", self.args.device,
               "--dtype", "f16" if self.gpu_mode else "f32", "--onnxruntime-library", str(self.assets),
               "--data-dir", str(data), "--sync-wait-secs", str(round(budget)), "--queue-size", "64"]
        log = self.log("server")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            t0 = now()
            ready = wait_ready(base, proc, deadline=started + budget * 0.5)
            part["startup_secs"] = round(now() - t0, 1)
            if not ready:
                part["status"] = "failed (server did not become ready; see logs/server.log)"
                return
            photo = base64.b64encode((self.assets / "yaoming.jpg").read_bytes()).decode()
            # One job first (warm-up, not counted), then the concurrent run.
            submit(base, photo, size, 0, deadline=started + budget)
            results = run_concurrent(base, photo, size, requests, concurrency, deadline=started + budget)
            ok = [r for r in results if r["ok"]]
            lat = sorted(r["latency"] for r in ok)
            part.update({
                "status": "ok" if len(ok) == requests else f"partial ({len(ok)}/{requests} succeeded)",
                "succeeded": len(ok),
                "errors": [r["error"] for r in results if not r["ok"]][:5],
                "latency_p50_s": round(percentile(lat, 50), 3) if lat else None,
                "latency_p95_s": round(percentile(lat, 95), 3) if lat else None,
                "wall_secs": round(max((r["end"] for r in results), default=0) - min((r["start"] for r in results), default=0), 3),
            })
            part["jobs_per_s"] = round(len(ok) / part["wall_secs"], 3) if part["wall_secs"] else None
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            part["seconds"] = round(now() - started, 1)
            self.report.part("server", part)

    def run(self):
        try:
            if self.models():
                self.parity()
                self.speed()
                self.server()
            else:
                for name in ("parity", "speed", "server"):
                    self.report.part(name, {"status": "skipped: the random model set was not written (logs/models.log)"})
        finally:
            shutil.rmtree(self.work, ignore_errors=True)
        self.report.write(complete=True)
        print((self.out / "check.md").read_text())
        print(f"check: results in {self.out}/check.json and check.md")


# ---- server helpers --------------------------------------------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base, proc, deadline):
    while now() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def post(url, body, timeout):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def submit(base, photo, size, seed, deadline):
    """One job the way the SDK sends it (HeadshotSchema fields, key in the body, data URI face);
    polls fetch while the answer is `processing`. Returns the final body."""
    body = {
        "key": "kit-key", "prompt": "professional headshot photo, studio light",
        "negative_prompt": "anime, cartoon, drawing, lowres, blurry",
        "face_image": "data:image/jpeg;base64," + photo, "width": size, "height": size,
        "samples": 1, "num_inference_steps": 21, "guidance_scale": 7.5, "seed": seed,
        "safety_checker": False, "base64": False,
    }
    answer = post(base + "/api/v6/image_editing/head_shot", body, timeout=max(1, deadline - now()))
    while answer.get("status") == "processing" and now() < deadline:
        time.sleep(0.1)
        answer = post(base + f"/api/v6/image_editing/fetch/{answer['id']}", {"key": "kit-key"}, timeout=max(1, deadline - now()))
    return answer


def run_concurrent(base, photo, size, requests, concurrency, deadline):
    results = []
    lock = threading.Lock()
    seeds = iter(range(1, requests + 1))

    def worker():
        while True:
            with lock:
                seed = next(seeds, None)
            if seed is None:
                return
            start = now()
            try:
                answer = submit(base, photo, size, seed, deadline)
                ok = answer.get("status") == "success"
                error = None if ok else json.dumps(answer)[:300]
            except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
                ok, error = False, repr(e)[:300]
            with lock:
                results.append({"ok": ok, "error": error, "start": start, "end": now(), "latency": now() - start})

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def percentile(sorted_values, p):
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[p - 1]


# ---- output ----------------------------------------------------------------------------------
def side_by_side(ours, theirs):
    rows = []
    by_what = {r["what"]: r for r in theirs if "what" in r}
    for r in ours:
        if r.get("kind") not in ("job", "unet_step", "vae_decode") or r.get("what") == "warmup":
            continue
        t = by_what.get(r["what"])
        row = {"what": r["what"], "ours_s": r["seconds"], "diffusers_s": t["seconds"] if t else None,
               "ours_peak_gpu_mib": r.get("peak_gpu_mib"), "diffusers_peak_gpu_mib": t.get("peak_gpu_mib") if t else None}
        if "jobs_per_s" in r:
            row["ours_jobs_per_s"] = r["jobs_per_s"]
            row["diffusers_jobs_per_s"] = t.get("jobs_per_s") if t else None
        row["ratio"] = round(r["seconds"] / t["seconds"], 3) if t and t.get("seconds") else None
        rows.append(row)
    if "unet_step_direct" in by_what:
        rows.append({"what": "unet_step_direct (diffusers: one UNet call, batch 2)", "ours_s": None,
                     "diffusers_s": by_what["unet_step_direct"]["seconds"], "ratio": None})
    return rows


def fmt(v, digits=3):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-2 else f"{v:.{digits}f}"
    return str(v)


def markdown(data):
    k = data["kit"]
    gpu = k.get("gpu") or {}
    lines = [
        f"# GPU kit check — {k['date']}",
        "",
        f"Machine: {k['machine']['hostname']}, {k['machine']['cpu']} ({k['machine']['cores']} cores)"
        + (f", {gpu['name']} (driver {gpu['driver']})" if gpu else ", no GPU")
        + f"; device `{k['device']}`; {k.get('elapsed_secs')} s of {k['budget_secs']} s budget"
        + ("" if k["complete"] else " (**incomplete**)"),
        "",
    ]
    p = data["parts"]
    if "models" in p:
        m = p["models"]
        lines += [f"Random model set: {m.get('size')} {m.get('dtype')}, {m.get('status')}, {m.get('seconds')} s", ""]
    if "parity" in p:
        pa = p["parity"]
        lines += [f"## Parity ({pa.get('status')}; diffusers: {pa.get('diffusers_status')})", "",
                  "| case | dtype | image max abs | tolerance | pass |", "|---|---|---|---|---|"]
        for c in pa.get("checks", []):
            lines.append(f"| {c['case']} | {c['dtype']} | {fmt(c['image_max_abs'])} | {fmt(c['tolerance'])} ({c['basis']}) | {c['pass']} |")
        for r in pa.get("diffusers", []):
            if r.get("kind") == "parity":
                lines.append(f"| {r['case']} | diffusers {r['dtype']} | {fmt(r['image_max_abs'])} | reference | — |")
        lines.append("")
    if "speed" in p:
        s = p["speed"]
        lines += [f"## Speed ({s.get('status')}; diffusers: {s.get('diffusers_status')}; {s.get('settings')})", "",
                  "| measurement | ours (s) | diffusers (s) | ours / diffusers | ours jobs/s | diffusers jobs/s | ours peak GPU MiB | diffusers peak GPU MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in s.get("table", []):
            lines.append(f"| {r['what']} | {fmt(r['ours_s'])} | {fmt(r['diffusers_s'])} | {fmt(r['ratio'])} | "
                         f"{fmt(r.get('ours_jobs_per_s'))} | {fmt(r.get('diffusers_jobs_per_s'))} | "
                         f"{fmt(r.get('ours_peak_gpu_mib'))} | {fmt(r.get('diffusers_peak_gpu_mib'))} |")
        skipped = [r["what"] for r in s.get("ours", []) if r.get("kind") == "skipped"]
        if skipped:
            lines.append(f"\nSkipped by the time budget (ours): {', '.join(skipped)}")
        lines.append("")
    if "server" in p:
        v = p["server"]
        lines += [f"## Server ({v.get('status')})", "",
                  "| requests | concurrency | size | p50 latency (s) | p95 latency (s) | jobs/s | start-up (s) |",
                  "|---|---|---|---|---|---|---|",
                  f"| {fmt(v.get('requests'))} | {fmt(v.get('concurrency'))} | {fmt(v.get('size'))} | {fmt(v.get('latency_p50_s'))} | "
                  f"{fmt(v.get('latency_p95_s'))} | {fmt(v.get('jobs_per_s'))} | {fmt(v.get('startup_secs'))} |", ""]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", required=True)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", help="results folder (default $OUT, else ./gpu-kit-results)")
    ap.add_argument("--budget-secs", type=float, default=None,
                    help="whole run (default 330 on a GPU: 6 minutes minus set-up margin; 240 on a CPU)")
    ap.add_argument("--cases", help="comma-separated e2e golden names for the parity part")
    args = ap.parse_args()
    if args.budget_secs is None:
        args.budget_secs = 330.0 if args.device != "cpu" else 240.0
    Check(args).run()


if __name__ == "__main__":
    main()
