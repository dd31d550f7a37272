"""Open the status page in headless Chromium and report the operator's actions it shows for
MAC; with ``--click ACTION``, click it (accepting the confirmation) and wait until the machine's
state badge reads WANT. Prints JSON: the actions shown, the state, console errors.

    python -m tests.integration.admin_probe URL MAC [--click ACTION WANT]
"""

from __future__ import annotations

import json
import sys

from tests.browser import chromium_page


def main() -> int:
    url, mac, *rest = sys.argv[1:]
    errors: list[str] = []
    with chromium_page() as page:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(url)
        row = f'tr[data-mac="{mac}"]'
        page.wait_for_selector(f'{row} [data-field="state"]:not([hidden])', timeout=20_000)
        shown = page.eval_on_selector_all(
            f"{row} .actions:not([hidden]) button.action:not([hidden])",
            "buttons => buttons.map(b => b.dataset.action)",
        )
        if rest:
            _flag, action, want = rest  # --click ACTION WANT
            page.click(f'{row} button[data-action="{action}"]')
            page.wait_for_function(
                "([sel, want]) => document.querySelector(sel)?.textContent.trim() === want",
                arg=[f'{row} [data-field="state"]', want],
                timeout=20_000,
            )
        state = page.inner_text(f'{row} [data-field="state"]')
    print(json.dumps({"actions": shown, "state": state, "errors": errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
