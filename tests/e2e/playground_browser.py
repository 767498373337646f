#!/usr/bin/env python3
"""Browser driver: headless chromium (WebDriver via chromedriver and selenium) uses the playground
page at `/` as a person would, against a running headshot-server. Exits non-zero on the first
mismatch.

usage: playground_browser.py BASE_URL API_KEY FACE_PHOTO SCREENSHOT CHROMIUM CHROMEDRIVER

The page is loaded, the photo set on its file input, prompt, key and settings typed, the form
submitted; then the images must appear, point at BASE_URL/outputs/ and be decoded by the browser
(naturalWidth > 0), with nothing on the console (a Content-Security-Policy refusal would be).
A wrong key must show the server's message. SCREENSHOT receives the finished page.
"""
import os
import sys

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from browser import check, chromium, console_errors, fill

JOB_TIMEOUT_S = 600
SAMPLES = 2


def submit_and_wait(driver):
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, JOB_TIMEOUT_S, poll_frequency=0.25).until(
        lambda d: d.find_element(By.ID, "results").get_attribute("data-state") in ("done", "error"))
    return driver.find_element(By.ID, "results").get_attribute("data-state")


def main():
    base, key, photo, screenshot, binary, chromedriver = sys.argv[1:7]
    driver = chromium(binary, chromedriver)
    try:
        driver.get(base + "/")
        check(driver.title == "headshot-server playground", f"the page loads ({driver.title!r})")

        driver.find_element(By.ID, "photo").send_keys(os.path.abspath(photo))
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const p = document.getElementById('preview');"
            "return !p.hidden && p.complete && p.naturalWidth > 0;"))
        check(True, "the chosen photo is previewed")

        fill(driver, "prompt", "a portrait photo, studio light")
        fill(driver, "negative_prompt", "blurry, lowres")
        fill(driver, "key", key)
        # Small, so the tiny CPU models finish in seconds; the fields are the page's own.
        fill(driver, "width", "64")
        fill(driver, "height", "64")
        fill(driver, "samples", str(SAMPLES))
        Select(driver.find_element(By.ID, "steps")).select_by_value("21")
        fill(driver, "guidance_scale", "7.5")
        fill(driver, "seed", "7")

        state = submit_and_wait(driver)
        error = driver.find_element(By.ID, "error").text
        check(state == "done", f"the job finishes on the page (state {state}, error {error!r})")
        images = driver.find_elements(By.CSS_SELECTOR, "#results img")
        check(len(images) == SAMPLES, f"{SAMPLES} images appear (got {len(images)})")
        for img in images:
            src = img.get_attribute("src")
            check(src.startswith(base + "/outputs/") and src.endswith(".png"),
                  f"image src points at the outputs route ({src})")
            WebDriverWait(driver, 30).until(lambda d: d.execute_script(
                "return arguments[0].complete", img))
            width = driver.execute_script("return arguments[0].naturalWidth", img)
            check(width > 0, f"the browser decoded the image (naturalWidth {width})")
        details = driver.find_element(By.ID, "details").text
        check("seed 7" in details and "64×64" in details, f"the job's facts are shown ({details!r})")
        check("1 face(s) in the photo" in details, f"the photo's face count is shown ({details!r})")
        # The tiny random models draw noise: the likeness of each image is null, shown as such.
        captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#results figcaption")]
        check(len(captions) == SAMPLES and all("no face found" in c for c in captions),
              f"each image shows its likeness ({captions})")
        console = console_errors(driver)
        check(not console, f"no errors on the console ({console})")
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(screenshot)
        print(f"screenshot: {screenshot}")

        fill(driver, "key", "not-the-key")
        state = submit_and_wait(driver)
        error = driver.find_element(By.ID, "error").text
        check(state == "error" and "Invalid Api Key" in error,
              f"a wrong key shows the server's message ({error!r})")
        check(not driver.find_elements(By.CSS_SELECTOR, "#results img"), "no stale images stay")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
