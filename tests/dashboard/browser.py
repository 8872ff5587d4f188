#!/usr/bin/env python3
"""The dashboard end to end, in headless Chromium driven by Playwright (sync API).

Run by tests/dashboard.rs once the whole system is up on 127.0.0.1. It signs in as an
operator, opens the stuck list, makes the SevenRooms simulator rate-limit the next booking
and submits one, sees the saga appear in the list without a reload and in the failing view
with its last error and next attempt, opens it, retries it with a reason, and follows it to
`confirmed` with the operator and the reason in its timeline and on the audit page. It opens
a saga whose attempts SevenRooms rate-limited over and over and finds the identical attempts
folded into one row that opens. Then, as a viewer, it finds no action offered anywhere and
has a forged action request refused with 403.

Environment: DASHBOARD_URL (the API base; the dashboard is at /dashboard/), OPERATOR_TOKEN,
VIEWER_TOKEN, SUBMITTER_TOKEN, SEVENROOMS_URL, BOOKING_JSON, RETRIED_SAGA (a saga whose booking
was rate-limited, attempt after attempt, before it went through), SCREENSHOTS (optional: a
directory for PNG screenshots), CHROMIUM (default /usr/bin/chromium; Playwright never
downloads a browser of its own).

Prints `SAGA_ID=<id>` once the booking is in, then `dashboard e2e: ok saga=<id>` and exits 0;
on a failure, says which step failed and why, saves failure.png, and exits 1.
"""

import json
import os
import re
import sys
import tempfile
import traceback
import urllib.error
import urllib.request

from playwright.sync_api import expect, sync_playwright

REASON = "SevenRooms rate limit lifted; retry now (night shift)"
FAULT = [{"kind": "rate_limited", "retry_after_secs": 45, "ops": ["book"], "times": 1}]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
# Explicit waits, in milliseconds.
SHORT = 15_000
APPEAR = 60_000
SETTLE = 60_000
RETRY_WAIT = 30_000


class Failed(Exception):
    pass


class Run:
    def __init__(self):
        self.base = need("DASHBOARD_URL").rstrip("/")
        self.shots = os.environ.get("SCREENSHOTS") or None
        if self.shots:
            os.makedirs(self.shots, exist_ok=True)
        self.step = "starting"
        self.page = None
        self.saga = None
        self.problems = []  # script errors and CSP violations seen in any page
        self.console = []  # the last console lines, for a failure's report

    def at(self, step):
        self.step = step
        print(f"-- {step}", flush=True)

    def shot(self, name, page=None, full=True):
        if self.shots:
            (page or self.page).screenshot(path=os.path.join(self.shots, name), full_page=full)

    def watch(self, page, who):
        def on_console(msg):
            line = f"[{who}] console.{msg.type}: {msg.text}"
            self.console = (self.console + [line])[-40:]
            if "Content Security Policy" in msg.text or "Refused to" in msg.text:
                self.problems.append(line)

        page.on("console", on_console)
        page.on("pageerror", lambda e: self.problems.append(f"[{who}] uncaught: {e}"))
        page.set_default_timeout(SHORT)

    def sign_in(self, browser, token, who):
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        self.watch(page, who)
        self.page = page
        page.goto(f"{self.base}/dashboard/")
        page.locator("textarea[name=token]").fill(token)
        page.locator("#signin-button").click()
        page.locator("[data-testid=whoami], [data-testid=signin-error]").first.wait_for(timeout=SHORT)
        refused = page.locator("[data-testid=signin-error]")
        if refused.count():
            raise Failed(f"the {who} could not sign in: {refused.inner_text()}")
        return page


def short(e, lines=25):
    """An error's message, without the long page snapshot Playwright appends."""
    text = str(e).split("Aria snapshot:")[0].rstrip().splitlines()
    return "\n".join(text[:lines] + (["  ..."] if len(text) > lines else []))


def need(name):
    value = os.environ.get(name)
    if not value:
        raise Failed(f"{name} is not set")
    return value


def post_json(url, body, token=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            text = res.read().decode()
            return res.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        raise Failed(f"POST {url} answered {e.code}: {e.read().decode(errors='replace')}") from None


def scenario(run, browser):
    operator_token = need("OPERATOR_TOKEN")
    viewer_token = need("VIEWER_TOKEN")
    submitter_token = need("SUBMITTER_TOKEN")
    sevenrooms = need("SEVENROOMS_URL").rstrip("/")
    booking = need("BOOKING_JSON").encode()

    run.at("operator signs in and sees the overview")
    page = run.sign_in(browser, operator_token, "operator")
    operator_id = page.locator("[data-testid=whoami]").inner_text().strip()
    expect(page.locator("#who")).to_contain_text("operator")
    counts = page.locator("[data-testid=status-counts]")
    expect(counts.locator(".card")).to_have_count(9, timeout=SHORT)  # 8 statuses and the total
    expect(counts).to_contain_text("confirmed")
    expect(counts).to_contain_text("needs operator")
    expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=SHORT)
    run.shot("overview.png")

    run.at("the stuck list, unchanged for any time, marked against reloads")
    page.goto(f"{run.base}/dashboard/#/stuck?older_than=0s")
    expect(page.locator("[data-testid=stuck-table]")).to_be_visible(timeout=SHORT)
    expect(page.locator("main select[name=older_than]")).to_have_value("0s")
    page.evaluate("window.__noReload = 1")

    run.at("SevenRooms rate-limits the next booking; a booking is submitted")
    status, _ = post_json(f"{sevenrooms}/_sim/faults", FAULT)
    if status != 200:
        raise Failed(f"the SevenRooms simulator answered {status} to the fault")
    status, accepted = post_json(f"{run.base}/v1/bookings", booking, submitter_token)
    saga = (accepted or {}).get("saga_id")
    if status not in (200, 202) or not saga:
        raise Failed(f"the booking was not accepted: {status} {accepted}")
    run.saga = saga
    print(f"SAGA_ID={saga}", flush=True)

    run.at("the saga appears in the stuck list without a reload")
    row = page.locator(f'tr[data-saga-id="{saga}"]')
    row.wait_for(state="visible", timeout=APPEAR)
    if page.evaluate("window.__noReload") != 1:
        raise Failed("the page was reloaded: the stuck list must follow the live stream by itself")
    run.shot("stuck.png")

    run.at("the failing view lists it with its last error and next attempt")
    page.goto(f"{run.base}/dashboard/#/failing")
    failing = page.locator(f'main tr[data-saga-id="{saga}"]')
    failing.wait_for(state="visible", timeout=SHORT)
    expect(failing).to_contain_text("rate limited by the downstream (429)")
    expect(failing).to_contain_text("book_experience")
    expect(failing).to_contain_text(re.compile(r"\d{2}:\d{2}:\d{2}"))  # the next attempt's time
    page.goto(f"{run.base}/dashboard/#/stuck?older_than=0s")
    row.wait_for(state="visible", timeout=SHORT)

    run.at("the saga's page shows what it waits on")
    row.locator("a").first.click()
    waiting = page.locator("[data-testid=waiting-on]")
    expect(waiting).to_be_visible(timeout=SHORT)
    saga_status = page.locator("[data-testid=saga-status]")
    expect(saga_status).not_to_have_text("confirmed")
    # The rate limit puts the next attempt 45 s away: a retry timer, or the downstream's wait.
    retry_wait = page.locator(
        "[data-testid=waiting-on][data-on=timer][data-why=retry], "
        "[data-testid=waiting-on][data-on=downstream]"
    )
    try:
        retry_wait.wait_for(state="visible", timeout=RETRY_WAIT)
    except Exception:
        raise Failed(f"the saga never showed its retry wait; it waits on: {waiting.inner_text()!r}") from None
    expect(saga_status).not_to_have_text("confirmed")
    run.shot("saga-stuck.png")

    run.at("the keyboard reaches an action: Enter opens its dialog, Escape closes it")
    dialog = page.locator("dialog#dialog")
    retry = page.locator("[data-action=retry_now]")
    retry.focus()
    page.keyboard.press("Enter")
    expect(dialog).to_be_visible()
    expect(dialog.locator("textarea[name=reason]")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(retry).to_be_focused()

    run.at("the operator retries it now, with a reason")
    retry.click()
    expect(dialog).to_be_visible()
    confirm = page.locator("[data-testid=confirm-action]")
    expect(confirm).to_be_disabled()
    dialog.locator("textarea[name=reason]").fill(REASON)
    expect(confirm).to_be_enabled()
    confirm.click()
    result = page.locator("[data-testid=action-result], [data-testid=action-error]:visible").first
    result.wait_for(state="visible", timeout=SHORT)
    if page.locator("[data-testid=action-error]").is_visible():
        raise Failed(f"the retry was refused: {page.locator('[data-testid=action-error]').inner_text()}")
    expect(page.locator("[data-testid=action-result]")).to_contain_text("status")

    run.at("the saga reaches confirmed, the reason and the operator in its timeline")
    expect(saga_status).to_have_text("confirmed", timeout=SETTLE)
    timeline = page.locator("[data-testid=timeline]")
    acted = timeline.locator("tr[data-kind=operator_action]", has_text=REASON)
    # The history comes a page at a time: walk forward to the page that holds the action.
    while True:
        expect(timeline.locator("tbody tr").first).to_be_visible()
        if acted.count():
            break
        following = timeline.locator("button[data-page=next]")
        if not following.count() or following.is_disabled():
            raise Failed("no page of the timeline holds the operator's action with the reason")
        shown = timeline.locator(".pager span").inner_text()
        following.click()
        expect(timeline.locator(".pager span")).not_to_have_text(shown)
    expect(acted.first).to_contain_text(operator_id)
    expect(acted.first).to_contain_text(REASON)
    run.shot("saga-confirmed.png")

    run.at("the audit page lists the action: who, what, why, applied")
    page.goto(f"{run.base}/dashboard/#/audit")
    entry = page.locator("main tbody tr", has_text=REASON)
    expect(entry).to_have_count(1, timeout=SHORT)
    expect(entry).to_contain_text(operator_id)
    expect(entry).to_contain_text("retry now")
    expect(entry).to_contain_text("applied")
    expect(entry.locator(f'a[href="#/saga/{saga}"]')).to_have_count(1)

    run.at("a saga retried with the same error shows the identical attempts folded, and opens them")
    retried = need("RETRIED_SAGA")
    page.goto(f"{run.base}/dashboard/#/saga/{retried}")
    expect(saga_status).to_have_text("confirmed", timeout=SHORT)
    folded = timeline.locator("tr.collapsed")
    expect(folded).to_have_count(1)
    expect(folded).to_contain_text(re.compile(r"\d+ more identical attempts? \(attempts? \d"))
    hidden = int(re.search(r"(\d+) more identical", folded.inner_text()).group(1))
    sent = timeline.locator("tr[data-kind=command_sent]")
    shown = sent.count()
    folded.locator("button").click()
    expect(folded.locator("button")).to_have_attribute("aria-expanded", "true")
    expect(sent).to_have_count(shown + hidden)
    run.shot("saga-retried.png")
    page.context.close()

    run.at("a viewer is offered no action")
    page = run.sign_in(browser, viewer_token, "viewer")
    expect(page.locator("[data-testid=read-only]")).to_contain_text("read-only: your role is viewer")
    page.goto(f"{run.base}/dashboard/#/saga/{saga}")
    expect(page.locator("[data-testid=saga-status]")).to_have_text("confirmed", timeout=SHORT)
    expect(page.locator("[data-testid=timeline] tbody tr").first).to_be_visible()
    expect(page.locator("[data-action]")).to_have_count(0)
    run.shot("viewer-saga.png")
    page.goto(f"{run.base}/dashboard/#/bulk")
    expect(page.locator("main h1")).to_have_text("Bulk actions")
    expect(page.locator("main")).to_contain_text("read-only")
    expect(page.locator("[data-action]")).to_have_count(0)
    page.goto(f"{run.base}/dashboard/#/dead-letters")
    expect(page.locator("main h1")).to_have_text("Dead letters")
    expect(page.locator("main .loading")).to_have_count(0, timeout=SHORT)
    expect(page.locator("[data-action]")).to_have_count(0)

    run.at("a viewer's forged action request is refused")
    forged = page.evaluate(
        """async ([saga, token]) => {
            const res = await fetch(`/v1/sagas/${saga}/actions`, {
                method: 'POST',
                headers: {'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json'},
                body: JSON.stringify({action: 'retry_now', reason: 'forged by a viewer'}),
            });
            return res.status;
        }""",
        [saga, viewer_token],
    )
    if forged != 403:
        raise Failed(f"a viewer's action request answered {forged}, not 403")
    page.context.close()

    if run.problems:
        raise Failed("the pages had script errors or CSP violations:\n  " + "\n  ".join(run.problems))


def main():
    try:
        run = Run()
    except Failed as e:
        print(f"dashboard e2e: FAILED before starting: {e}", flush=True)
        return 1
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            scenario(run, browser)
        except Exception as e:  # noqa: BLE001: every failure is reported the same way
            where = run.shots or tempfile.mkdtemp(prefix="como-dashboard-")
            shot = os.path.join(where, "failure.png")
            try:
                if run.page and not run.page.is_closed():
                    run.page.screenshot(path=shot, full_page=True)
                    print(f"failure screenshot: {shot}")
            except Exception as s:  # noqa: BLE001
                print(f"(no failure screenshot: {s})")
            if run.console:
                print("last console lines:\n  " + "\n  ".join(run.console))
            if not isinstance(e, Failed):
                print("".join(traceback.format_tb(e.__traceback__)[-3:]))
            print(f"dashboard e2e: FAILED at '{run.step}': {short(e)}", flush=True)
            return 1
        finally:
            browser.close()
    print(f"SAGA_ID={run.saga}")
    print(f"dashboard e2e: ok saga={run.saga}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
