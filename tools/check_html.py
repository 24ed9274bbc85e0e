"""Check built book pages in a headless browser with no network: MathJax is served with the
book and typesets every formula, offline (a formula or a glued $\\pm$ left as raw LaTeX is an error).

    python tools/check_html.py _build/html/chapters/03_cmaes.html _build/html/notation.html
    python tools/check_html.py --screenshots /tmp/shots --height 6000 _build/html/notation.html
    python tools/check_html.py --all _build/html     # every page of a built book

For each page it checks, and says which check failed (exit status 1 if any):
1. the page's HTML loads MathJax from the book's own _static/ (a file that exists), and no
   script or stylesheet from the network;
2. in the DOM after the browser ran the page (network cut: unreachable proxy and no DNS),
   every formula Sphinx wrote (``span.math`` / ``div.math``) holds a typeset ``mjx-container``,
   MathJax reported no TeX error (``mjx-merror``), and no raw TeX is left in the text a reader
   sees (``\\(``, ``\\[``, ``$$``, ``\\pm``, ``\\frac`` ...; code blocks excepted).

The browser is Debian's headless Chromium (``apt-get install chromium-headless-shell``; the
full ``chromium`` package works too), or the one named by $BROWSER.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
OFFLINE = ("--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND")
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\(pm|frac|mathbb|mathrm|sum|sigma|mu|top|cdot|ell|"
                     r"lambda|alpha|hat|in|le|ge|approx|times|sqrt|text|begin|end)\b")
NOT_READ = {"script", "style", "pre", "code", "mjx-assistive-mml", "noscript", "template"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


def find_browser():
    """The headless browser's path: $BROWSER, else the first of BROWSERS on PATH."""
    name = os.environ.get("BROWSER")
    found = shutil.which(name) if name else next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        sys.exit(f"no headless browser found ({name or ', '.join(BROWSERS)}); on Debian: "
                 "apt-get install chromium-headless-shell")
    return found


def _browser(browser, args, url, timeout):
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           *OFFLINE, "--virtual-time-budget=20000", *args, url]
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(cmd + [f"--user-data-dir={profile}"], capture_output=True,
                              text=True, timeout=timeout)


def rendered_dom(browser, url, timeout=120):
    """The page's DOM after its scripts ran (20 s of virtual time), with the network cut."""
    done = _browser(browser, ["--dump-dom"], url, timeout)
    if done.returncode or not done.stdout.strip():
        raise RuntimeError(f"{browser} failed on {url}: {done.stderr[-2000:]}")
    return done.stdout


def screenshot(browser, url, png, width=1200, height=1500, timeout=120):
    _browser(browser, [f"--screenshot={png}", f"--window-size={width},{height}"], url, timeout)
    if not Path(png).is_file():
        raise RuntimeError(f"{browser} wrote no screenshot of {url}")


class _Page(HTMLParser):
    """Collects formulas, MathJax's output and the text a reader sees from an HTML document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.formulas, self.errors, self.text, self.sources = [], [], 0, [], []
        self.containers = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag in ("script", "link"):
            self.sources.append((tag, attrs.get("src") or attrs.get("href") or "", attrs.get("rel")))
        if tag == "mjx-container":
            self.containers += 1
            for formula in self.formulas:
                if formula[1] == "open":
                    formula[1] = "typeset"
        if tag == "mjx-merror":
            self.errors += 1
        if tag in VOID:
            return
        math = tag in ("span", "div") and "math" in classes
        if math:
            self.formulas.append([len(self.stack), "open", ""])
        self.stack.append((tag, math))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        while self.stack:
            name, math = self.stack.pop()
            if math:
                formula = next(f for f in reversed(self.formulas) if f[0] == len(self.stack))
                if formula[1] == "open":
                    formula[1] = "raw"
            if name == tag:
                break

    def handle_data(self, data):
        if any(name in NOT_READ for name, _ in self.stack):
            return
        self.text.append(data)
        open_formulas = [f for f in self.formulas if f[1] == "open"]
        if open_formulas:
            open_formulas[-1][2] += data


def static_problems(html, page):
    """What in the page's HTML (as built) needs a network, or points at a missing MathJax."""
    parsed = _Page()
    parsed.feed(html)
    problems, mathjax = [], []
    for tag, src, rel in parsed.sources:
        if re.match(r"(https?:)?//", src) and (tag == "script" or "stylesheet" in (rel or "")):
            problems.append(f"loads {src} from the network")
        if tag == "script" and "mathjax" in src.lower():
            mathjax.append(src)
    for src in mathjax:
        if not re.match(r"(https?:)?//", src) and not (page.parent / src.split("?")[0]).is_file():
            problems.append(f"its MathJax script {src} does not exist")
    if parsed.formulas and not mathjax:
        problems.append("has formulas but loads no MathJax")
    return problems


def dom_problems(dom):
    """What in the rendered DOM shows that MathJax did not typeset every formula."""
    parsed = _Page()
    parsed.feed(dom)
    problems = []
    raw = [f[2].strip() for f in parsed.formulas if f[1] != "typeset"]
    if raw:
        problems.append(f"{len(raw)} of {len(parsed.formulas)} formulas not typeset, e.g. {raw[0][:80]!r}")
    if parsed.errors:
        problems.append(f"MathJax reported {parsed.errors} TeX errors (mjx-merror)")
    text = " ".join(parsed.text)
    left = sorted({m[0] for m in RAW_TEX.finditer(text)})
    if left:
        i = RAW_TEX.search(text).start()
        problems.append(f"raw TeX in the text: {left}, e.g. {' '.join(text[max(0, i - 60):i + 60].split())!r}")
    return problems, len(parsed.formulas), parsed.containers


def check(page, browser, screenshots=None, height=1500):
    """Problems of one page; an empty list when it is fine. With ``screenshots`` (a folder), also
    a PNG of the page's top ``height`` pixels (headless Chromium draws nothing for a #fragment)."""
    path = Path(page).resolve()
    url = path.as_uri()
    problems = static_problems(path.read_text(encoding="utf8"), path)
    in_dom, found, typeset = dom_problems(rendered_dom(browser, url))
    problems += in_dom
    if screenshots:
        Path(screenshots).mkdir(parents=True, exist_ok=True)
        screenshot(browser, url, Path(screenshots) / f"{path.stem}.png", height=height)
    return problems, found, typeset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", help="built HTML pages or, with --all, folders")
    parser.add_argument("--all", action="store_true", help="check every .html page under the folders given")
    parser.add_argument("--screenshots", metavar="DIR", help="also save a PNG of each page there")
    parser.add_argument("--height", type=int, default=1500, help="screenshot height in pixels")
    args = parser.parse_args(argv)
    pages = args.pages
    if args.all:
        pages = [p for folder in pages for p in sorted(Path(folder).rglob("*.html"))
                 if "_static" not in p.parts and p.name not in ("search.html", "genindex.html")]
    browser, failed = find_browser(), 0
    for page in pages:
        problems, formulas, typeset = check(page, browser, args.screenshots, args.height)
        status = "FAIL" if problems else "ok"
        print(f"{status:4} {page}: {formulas} formulas, {typeset} typeset by MathJax")
        for problem in problems:
            print(f"     - {problem}")
        failed += bool(problems)
    print(f"{len(pages) - failed} pages passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
