"""Run inside a client namespace: open the status page in headless Chromium, wait until machine
MAC shows STAGE, and print what the page shows as JSON (one object per row), plus the console
errors and the hosts the page requested.

    python -m tests.integration.status_probe URL MAC STAGE
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

from tests.browser import chromium_page


def main() -> int:
    url, mac, stage = sys.argv[1:4]
    errors: list[str] = []
    hosts: set[str] = set()
    with chromium_page() as page:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
        page.goto(url)
        cell = f'tr[data-mac="{mac}"] [data-field="stage"]'
        page.wait_for_function(
            "([sel, want]) => { const c = document.querySelector(sel);"
            " return c !== null && c.textContent.trim().toLowerCase() === want; }",
            arg=[cell, stage],
            timeout=20_000,
        )
        rows = page.eval_on_selector_all(
            "tr[data-mac]",
            """rows => rows.map(r => ({
                mac: r.dataset.mac,
                hostname: r.querySelector('[data-field="hostname"]')?.textContent.trim(),
                ip: r.querySelector('[data-field="ip"]')?.textContent.trim(),
                stage: r.querySelector('[data-field="stage"]')?.textContent.trim(),
            }))""",
        )
        summary = page.inner_text("#summary")
    print(json.dumps({"rows": rows, "summary": summary, "errors": errors, "hosts": sorted(hosts)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
