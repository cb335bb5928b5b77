"""A real headless Chromium driven over the DevTools protocol, for the
report's browser tests, its screenshots and its load-time benchmark.

No extra package: Chromium is started with --remote-debugging-pipe and
spoken to over its pipe (file descriptors 3 and 4; JSON messages ended by
a NUL byte), so only the chromium binary is needed (Debian: apt-get
install chromium).

  with browser.Chromium() as chrome:
    chrome.open("file:///.../report.html#tab=layer4")
    chrome.evaluate("document.title")
    chrome.click("tr[data-unit='3'] a")
    png = chrome.screenshot()
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
from typing import Any

CHROMIUM = (shutil.which("chromium") or shutil.which("chromium-browser")
            or shutil.which("google-chrome"))


class BrowserError(RuntimeError):
  pass


class Chromium:
  """A headless Chromium with one page.

  Attributes:
    console: console messages and uncaught exceptions seen so far
      ("level: text").
  """

  def __init__(self, width: int = 1400, height: int = 900,
               timeout_s: float = 60.0):
    if CHROMIUM is None:
      raise BrowserError("chromium is not installed")
    self.width, self.height, self.timeout_s = width, height, timeout_s
    self.console: list[str] = []
    self._events: list[dict[str, Any]] = []
    self._id = 0
    self._buffer = b""
    self._profile = tempfile.mkdtemp(prefix="chromium-")
    # Chromium reads commands on its fd 3 and answers on fd 4. It is
    # spawned without fork (posix_spawn: no preexec_fn, so no fork of a
    # multi-threaded process), the pipe ends first moved above 10 so that
    # moving them onto 3 and 4 never overwrites one with the other.
    high = lambda fd: (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10),
                       os.close(fd))[0]
    to_chrome_r, to_chrome_w = map(high, os.pipe())
    from_chrome_r, from_chrome_w = map(high, os.pipe())
    self._to_chrome, self._from_chrome = to_chrome_w, from_chrome_r
    null = os.open(os.devnull, os.O_RDWR)
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--remote-debugging-pipe",
            "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--hide-scrollbars",
            "--mute-audio", f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}", "about:blank"]
    try:
      self.pid = os.posix_spawn(CHROMIUM, argv, dict(os.environ),
                                file_actions=[
                                    (os.POSIX_SPAWN_DUP2, null, 0),
                                    (os.POSIX_SPAWN_DUP2, null, 1),
                                    (os.POSIX_SPAWN_DUP2, null, 2),
                                    (os.POSIX_SPAWN_DUP2, to_chrome_r, 3),
                                    (os.POSIX_SPAWN_DUP2, from_chrome_w, 4)])
    finally:
      for fd in (null, to_chrome_r, from_chrome_w):
        os.close(fd)
    self.session = None
    try:
      targets = self._call("Target.getTargets")["targetInfos"]
      page = next((t for t in targets if t["type"] == "page"), None)
      target = page["targetId"] if page else self._call(
          "Target.createTarget", url="about:blank")["targetId"]
      self.session = self._call("Target.attachToTarget", targetId=target,
                                flatten=True)["sessionId"]
      for domain in ("Page", "Runtime"):
        self.call(f"{domain}.enable")
      self.call("Emulation.setDeviceMetricsOverride", width=width,
                height=height, deviceScaleFactor=1, mobile=False)
    except Exception:
      self.close()
      raise

  # -- protocol -------------------------------------------------------------

  def _send(self, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode() + b"\0"
    while data:
      n = os.write(self._to_chrome, data)
      data = data[n:]

  def _receive(self, deadline: float) -> dict[str, Any]:
    while b"\0" not in self._buffer:
      left = deadline - time.monotonic()
      if left <= 0:
        raise BrowserError("chromium did not answer in time")
      ready, _, _ = select.select([self._from_chrome], [], [], left)
      if ready:
        chunk = os.read(self._from_chrome, 1 << 20)
        if not chunk:
          raise BrowserError("chromium closed the pipe")
        self._buffer += chunk
    message, self._buffer = self._buffer.split(b"\0", 1)
    return json.loads(message)

  def _handle_event(self, message: dict[str, Any]) -> None:
    method = message.get("method", "")
    params = message.get("params", {})
    if method == "Runtime.consoleAPICalled":
      text = " ".join(str(a.get("value", a.get("description", "")))
                      for a in params.get("args", []))
      self.console.append(f"{params.get('type')}: {text}")
    elif method == "Runtime.exceptionThrown":
      details = params.get("exceptionDetails", {})
      text = details.get("exception", {}).get("description") or details.get(
          "text", "")
      self.console.append(f"exception: {text}")
    self._events.append(message)

  def _call(self, method: str, session: str | None = None, **params):
    self._id += 1
    message: dict[str, Any] = {"id": self._id, "method": method,
                               "params": params}
    if session:
      message["sessionId"] = session
    self._send(message)
    deadline = time.monotonic() + self.timeout_s
    while True:
      answer = self._receive(deadline)
      if answer.get("id") == self._id:
        if "error" in answer:
          raise BrowserError(f"{method}: {answer['error']}")
        return answer.get("result", {})
      self._handle_event(answer)

  def call(self, method: str, **params) -> dict[str, Any]:
    """A DevTools command on the page."""
    return self._call(method, self.session, **params)

  def wait_event(self, method: str, timeout_s: float | None = None
                 ) -> dict[str, Any]:
    """Waits for (and returns) the next event `method` of the page."""
    for i, e in enumerate(self._events):
      if e.get("method") == method:
        del self._events[i]
        return e
    deadline = time.monotonic() + (timeout_s or self.timeout_s)
    while True:
      message = self._receive(deadline)
      if "id" in message:
        continue
      self._handle_event(message)
      if message.get("method") == method:
        self._events.remove(message)
        return message

  # -- page -----------------------------------------------------------------

  def open(self, url: str, ready: str | None =
           "document.documentElement.getAttribute('data-report-ready') || "
           "document.documentElement.getAttribute('data-report-errors')"
           ) -> float:
    """Loads `url`; waits for the load event (and for `ready` to be
    truthy). Returns the seconds it took."""
    if url.split("#")[0] == (self.evaluate("location.href") or "").split(
        "#")[0]:
      # Only the fragment would change: no new document, no load event.
      self.call("Page.navigate", url="about:blank")
      self.wait_event("Page.loadEventFired")
    self._events.clear()
    start = time.perf_counter()
    self.call("Page.navigate", url=url)
    self.wait_event("Page.loadEventFired")
    if ready:
      self.wait_for(ready)
    return time.perf_counter() - start

  def evaluate(self, expression: str) -> Any:
    """The value of a JavaScript expression on the page."""
    result = self.call("Runtime.evaluate", expression=expression,
                       returnByValue=True, awaitPromise=True)
    if "exceptionDetails" in result:
      raise BrowserError(f"{expression!r}: "
                         f"{result['exceptionDetails'].get('text')}")
    return result.get("result", {}).get("value")

  def wait_for(self, expression: str, timeout_s: float | None = None) -> Any:
    """Polls `expression` until it is truthy; returns its value."""
    deadline = time.monotonic() + (timeout_s or self.timeout_s)
    while True:
      value = self.evaluate(expression)
      if value:
        return value
      if time.monotonic() > deadline:
        raise BrowserError(f"timed out waiting for {expression!r}")
      time.sleep(0.05)

  def click(self, selector: str) -> None:
    """A real mouse click at the centre of the first element matching
    `selector` (scrolled into view)."""
    box = self.evaluate(
        f"(function(){{var e=document.querySelector({json.dumps(selector)});"
        "if(!e)return null;e.scrollIntoView({block:'center'});"
        # The first line box: an inline link that wraps has a gap at the
        # centre of its bounding box.
        "var r=e.getClientRects()[0]||e.getBoundingClientRect();"
        "return [r.left+r.width/2,r.top+r.height/2];})()")
    if box is None:
      raise BrowserError(f"no element {selector!r}")
    for kind in ("mousePressed", "mouseReleased"):
      self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                button="left", clickCount=1)

  def type_text(self, selector: str, text: str) -> None:
    """Focuses `selector` and types `text`, key by key."""
    self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
    self.call("Input.insertText", text=text)

  def screenshot(self, path: str | None = None,
                 full_page: bool = False) -> bytes:
    """A PNG of the page (the viewport, or the whole page)."""
    params: dict[str, Any] = {"format": "png"}
    if full_page:
      size = self.evaluate("[document.documentElement.scrollWidth,"
                           "document.documentElement.scrollHeight]")
      params.update(captureBeyondViewport=True, clip={
          "x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1})
    png = base64.b64decode(self.call("Page.captureScreenshot",
                                     **params)["data"])
    if path:
      with open(path, "wb") as f:
        f.write(png)
    return png

  def close(self) -> None:
    try:
      self._call("Browser.close")
    except (BrowserError, OSError):
      pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
      if os.waitpid(self.pid, os.WNOHANG)[0]:
        break
      time.sleep(0.05)
    else:
      os.kill(self.pid, signal.SIGKILL)
      os.waitpid(self.pid, 0)
    for fd in (self._to_chrome, self._from_chrome):
      try:
        os.close(fd)
      except OSError:
        pass
    shutil.rmtree(self._profile, ignore_errors=True)

  def __enter__(self) -> "Chromium":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
