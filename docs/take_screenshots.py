"""The README's dashboard screenshots, taken in headless Chromium (Debian's chromium + chromedriver).

    python docs/take_screenshots.py --store STORE [--exclude-task mnist10_small]

STORE is copied first (nothing is written to it). When the copy has no predictor, one is fitted
in-process on every task but ``--exclude-task`` and promoted to ``champion``; the task map then
stars the excluded task and the suggestion page asks for it. PNGs go to docs/dashboard-*.png.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import socket
import tempfile
import threading
import time

PAGES = (("overview", "/"), ("runs", "/runs"), ("predictors", "/predictors"), ("task-map", "/embeddings"),
         ("curves", "/curves"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--exclude-task", default="mnist10_small")
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from nasdb.cli.dashboard import create_app
    from nasdb.store import ExperimentStore
    from predictor import registry
    from predictor.testing import fit_tiny_predictor

    root = os.path.join(tempfile.mkdtemp(prefix="nasdb-shots-"), "store")
    shutil.copytree(args.store, root)
    store = ExperimentStore(root)
    if not registry.summaries(store):
        tasks = [t for t in store.task_names() if t != args.exclude_task and store.count(t)]
        pid = fit_tiny_predictor(store, tasks, num_steps=400, batch_size=32)
        registry.promote(store, pid, "champion")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900",
                "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(300)

    def shoot(name: str) -> None:
        WebDriverWait(driver, 300).until(lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
        height = min(driver.execute_script("return document.documentElement.scrollHeight"), 2200)
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {  # the whole page, not only the viewport
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}})
        path = os.path.join(args.out, f"dashboard-{name}.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(path, flush=True)

    try:
        for name, page in PAGES:
            driver.get(base + (page + f"?highlight={args.exclude_task}" if name == "task-map" else page))
            shoot(name)
        driver.get(base + "/suggest")
        Select(driver.find_element("id", "task")).select_by_value(args.exclude_task)
        driver.find_element("id", "go").click()
        WebDriverWait(driver, 300).until(lambda d: d.title.startswith(("Suggestion", "Error")))
        shoot("suggestion")
    finally:
        driver.quit()
        server.should_exit = True


if __name__ == "__main__":
    main()
