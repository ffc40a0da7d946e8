"""The web console in a real headless Chromium (Debian's chromium, driven by Playwright for Python
with the system browser). Run by tests/tests/e2e/console.rs, which starts a brain, a backend and a
real Envoy and passes what this script needs in the environment:

  FLOTILLA_UI_BASE      the brain's REST base URL
  FLOTILLA_UI_NODE      the Envoy's node id
  FLOTILLA_UI_CONFIG    the config's id
  FLOTILLA_UI_BAD_YAML  a revision of the config that Envoy rejects (valid for Flotilla)
  FLOTILLA_UI_BAD_PORT  the port that revision's listener cannot bind (in Envoy's error)
  FLOTILLA_UI_SHOTS     where to write screenshots (docs/console refreshes the docs' ones)
  FLOTILLA_CHROMIUM_BIN the browser (default /usr/bin/chromium)

Steps: the fleet table shows the Envoy synced; a bad revision is applied through the API and the
row turns nacked, with Envoy's error in the drill-down and a nacked event in the live view; the
history shows both revisions side by side with the change marked; the rollback button restores
revision 1 and the proxy is synced again.
"""

import json
import os
import sys
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE = os.environ["FLOTILLA_UI_BASE"]
NODE = os.environ["FLOTILLA_UI_NODE"]
CONFIG = os.environ["FLOTILLA_UI_CONFIG"]
BAD_YAML = os.environ["FLOTILLA_UI_BAD_YAML"]
BAD_PORT = os.environ["FLOTILLA_UI_BAD_PORT"]
SHOTS = os.environ.get("FLOTILLA_UI_SHOTS", "")
CHROMIUM = os.environ.get("FLOTILLA_CHROMIUM_BIN", "/usr/bin/chromium")
WAIT = 30_000  # ms


def api(method, path, body=None, content_type="application/json"):
    req = urllib.request.Request(BASE + path, method=method, data=body)
    if body is not None:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def shot(page, name):
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        page.screenshot(path=os.path.join(SHOTS, name), full_page=True)


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())
        page.goto(BASE + "/ui/")

        # The fleet table: the real Envoy's row turns synced, every type it uses synced.
        row = page.locator(f'#fleet-table tr[data-node="{NODE}"]')
        expect(row).to_have_attribute("data-state", "synced", timeout=WAIT)
        for t in ("cds", "eds", "lds", "rds"):
            expect(row.locator(f"td.type-{t}")).to_have_text("synced")
        shot(page, "fleet.png")

        # A revision Envoy rejects: the row turns nacked; the drill-down shows Envoy's error.
        with open(BAD_YAML, "rb") as f:
            api("PUT", f"/api/v1/configs/{CONFIG}?apply=true", f.read(), "application/yaml")
        expect(row).to_have_attribute("data-state", "nacked", timeout=WAIT)
        row.click()
        error = page.locator("#nack-detail .nack-error").first
        expect(error).to_contain_text(BAD_PORT, timeout=WAIT)
        shot(page, "nack.png")

        # The live event view got the NACK with the same error.
        page.click("#tab-events")
        nacked = page.locator('#events-table tr[data-event="nacked"]').first
        expect(nacked).to_be_visible(timeout=WAIT)
        expect(nacked.locator("td.detail")).to_contain_text(BAD_PORT)
        shot(page, "events.png")

        # History: two revisions, side by side, the listener port marked as changed.
        page.click("#tab-configs")
        page.locator(f'#configs-table tr[data-id="{CONFIG}"]').click()
        expect(page.locator("#history li")).to_have_count(2, timeout=WAIT)
        expect(page.locator("#diff .add").first).to_contain_text(BAD_PORT)
        shot(page, "history.png")

        # One click rolls back to revision 1 (applied), and the proxy is synced again.
        page.locator('button.rollback[data-version="1"]').click()
        expect(page.locator("#history li")).to_have_count(3, timeout=WAIT)
        cfg = api("GET", f"/api/v1/configs/{CONFIG}")
        assert cfg["appliedVersion"] == 3, cfg
        page.click("#tab-fleet")
        expect(row).to_have_attribute("data-state", "synced", timeout=WAIT)
        shot(page, "rolled-back.png")

        assert not errors, f"JavaScript errors on the page: {errors}"
        browser.close()
    print("console test passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure with its message
        print(f"console test failed: {e}", file=sys.stderr)
        raise
