"""End to end in headless Chromium: `kb ui` over a few of corpus/'s documents, the default embedder and
the bundled 0.5B generator; a Chinese question is typed into the chat, the streamed answer must cite
the document that holds the answer. Prints the time from submit to the finished answer and leaves a
screenshot in the test's tmp folder and at /tmp/kb_ui_screenshot.png.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[2]
KB = Path(sys.executable).with_name("kb")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS = ["general/company_overview.md", "general/office_guide.txt", "it/printer_guide.txt"]
QUESTION = "公司是哪一天成立的？"  # corpus/qa.jsonl q001
EXPECTED_SOURCE = "general/company_overview.md"
SCREENSHOT = Path("/tmp/kb_ui_screenshot.png")
ANSWER_TIMEOUT = 120  # seconds from submit to the finished answer
LOAD_TIMEOUT = 300  # first page: the model and the embedder load (and convert, on a fresh cache)

pytestmark = [
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
        reason="needs Debian's chromium and chromium-driver: apt-get install -y chromium chromium-driver",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kb ui exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(
        f"kb ui did not answer on {url} within {timeout:.0f} s:\n{log.read_text(errors='replace')}"
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    corpus = tmp_path / "corpus"
    for rel in DOCS:
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "corpus" / rel, corpus / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_ADMIN_") and k != "KB_DIR"}
    kb_dir = tmp_path / "kb"
    subprocess.run([str(KB), "ingest", str(corpus), "--kb", str(kb_dir)], cwd=tmp_path, env=env, check=True)
    port = _free_port()
    log = tmp_path / "kb_ui.log"
    with open(log, "wb") as out:
        # Own session, so the teardown stops the server and nothing else.
        proc = subprocess.Popen(
            [str(KB), "ui", "--port", str(port), "--kb", str(kb_dir)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        print(f"--- kb ui log ---\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
        "--window-size=1280,1500",
        "--lang=zh-CN",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _answer_done(driver: webdriver.Chrome) -> bool:
    """The caption under a finished answer ("用时 … 秒 · n 个来源" or "… 未作答") is on the page."""
    captions = driver.find_elements(
        By.CSS_SELECTOR, '[data-testid="stChatMessage"] [data-testid="stCaptionContainer"]'
    )
    return any("用时" in c.text and "秒" in c.text for c in captions)


def test_chat_in_a_browser_answers_with_the_right_source(
    server: str, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    t0 = time.perf_counter()
    browser.get(server)
    box = WebDriverWait(browser, LOAD_TIMEOUT).until(
        EC.element_to_be_clickable((By.CSS_SELECTOR, 'textarea[data-testid="stChatInputTextArea"]'))
    )
    print(f"\npage with the model loaded after {time.perf_counter() - t0:.1f} s")
    box.send_keys(QUESTION)
    submitted = time.perf_counter()
    box.send_keys(Keys.ENTER)
    # Polling every 0.25 s: the browser shares the CPU with the model, so it should not poll harder.
    # Streaming: the partial answer, ending in a cursor, is on the page before the answer is done.
    WebDriverWait(browser, ANSWER_TIMEOUT, poll_frequency=0.25).until(
        lambda d: "▌" in d.find_element(By.TAG_NAME, "body").text or _answer_done(d)
    )
    assert not _answer_done(browser), "the answer appeared whole: nothing was streamed"
    first = time.perf_counter() - submitted
    WebDriverWait(browser, ANSWER_TIMEOUT, poll_frequency=0.25).until(_answer_done)
    seconds = time.perf_counter() - submitted
    print(f"browser: submit → first streamed text {first:.1f} s, → finished answer {seconds:.1f} s")

    assistant = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stChatMessage"]')[-1]
    answer = assistant.find_element(By.CSS_SELECTOR, '[data-testid="stMarkdownContainer"]').text
    print(f"answer: {answer}")
    sources = [s.text for s in assistant.find_elements(By.CSS_SELECTOR, '[data-testid="stExpander"] summary')]
    print(f"sources: {sources}")
    assert sources, f"no sources under the answer {answer!r}"
    assert any(EXPECTED_SOURCE in s for s in sources), sources
    assert "未作答" not in assistant.text, "the answer was refused"

    # Open the first citation so the screenshot shows the quoted passage and the download button.
    assistant.find_element(By.CSS_SELECTOR, '[data-testid="stExpander"] summary').click()
    WebDriverWait(browser, 10).until(
        lambda d: assistant.find_elements(
            By.CSS_SELECTOR, '[data-testid="stExpanderDetails"] [data-testid="stDownloadButton"]'
        )
    )
    time.sleep(0.5)  # let the expander's opening animation finish before the picture
    shot = tmp_path / "kb_ui_screenshot.png"
    assert browser.save_screenshot(str(shot))
    shutil.copy(shot, SCREENSHOT)
    print(f"screenshot: {shot} (copied to {SCREENSHOT})")
