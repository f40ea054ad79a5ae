"""The web console in a real browser (Debian's chromium driven by Playwright), against
a real gateway that tests/it/console.rs started and filled. Exits non-zero with the
first failed expectation. Screenshots go to --shots.

  python3 tests/console/console_test.py --admin URL --token T --viewer V --cli BIN --shots DIR
"""
import argparse
import os
import re
import subprocess
import time

from playwright.sync_api import expect, sync_playwright

ap = argparse.ArgumentParser()
ap.add_argument("--admin", required=True)
ap.add_argument("--token", required=True)
ap.add_argument("--viewer", required=True)
ap.add_argument("--cli", required=True)
ap.add_argument("--shots", required=True)
ap.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
args = ap.parse_args()
os.makedirs(args.shots, exist_ok=True)
UI = args.admin + "/ui/"
expect.set_options(timeout=5000)


def shot(page, name):
    page.screenshot(path=os.path.join(args.shots, name + ".png"), full_page=True)


def sign_in(page, token):
    page.goto(UI)
    page.get_by_label("Admin token").fill(token)
    page.get_by_label("Admin token").press("Enter")  # the form submits on Enter


def card(page, env):
    return page.locator(f"section.card[data-env={env}]")


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.grant_permissions(["clipboard-read", "clipboard-write"])
    page = ctx.new_page()
    problems = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    # the page is locked down: strict CSP, no framing
    resp = page.goto(UI)
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert resp.headers["x-frame-options"] == "DENY"

    # a wrong token is refused with the API's words, and not kept
    sign_in(page, "not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("unauthenticated")
    assert page.evaluate("sessionStorage.getItem('switchyard.token')") is None

    # sign in: the snapshot of every agent, per environment
    sign_in(page, args.token)
    expect(page.locator("#agents")).to_be_visible()
    expect(page.locator("tr[data-agent=bot] td[data-env=production] .version")).to_have_text("v1")
    expect(page.locator("tr[data-agent=bot] td[data-env=staging] .version")).to_have_text("v1")
    expect(page.locator("#who")).to_contain_text("admin")
    # the token is in session storage only, never in the address or a cookie
    assert page.evaluate("sessionStorage.getItem('switchyard.token')") == args.token
    assert args.token not in page.url and not ctx.cookies()
    page.wait_for_timeout(2200)  # one poll, so the rates show
    shot(page, "console-agents")

    # the agent page: cards in pipeline order, history, versions
    page.get_by_role("link", name="bot").click()
    expect(card(page, "production").locator(".live")).to_have_text("v1")
    envs = page.locator("section.card").evaluate_all("cs => cs.map(c => c.dataset.env)")
    assert envs == ["sandbox", "staging", "production"], envs
    expect(page.locator("#history details[data-env=production] tbody tr")).to_have_count(1)

    # deploy v2 to production: the plan first, then the typed confirmation
    card(page, "production").get_by_role("button", name="Deploy", exact=True).click()
    page.locator("#pick-version").select_option("v2")
    page.get_by_role("button", name="Show the plan", exact=True).click()
    plan = page.locator("#plan")
    expect(plan).to_contain_text("v1")
    expect(plan).to_contain_text("v2")
    expect(plan).to_contain_text("passed")  # the health gate, probed for the plan
    confirm = page.locator("#confirm-move")
    expect(confirm).to_be_disabled()
    page.locator("#type-env").fill("prod")
    expect(confirm).to_be_disabled()
    page.locator("#type-env").fill("production")
    expect(confirm).to_be_enabled()
    shot(page, "console-plan")
    confirm.click()
    expect(card(page, "production").locator(".live")).to_have_text("v2")
    expect(page.locator("#history details[data-env=production] tbody tr").first).to_contain_text("v1 → v2")

    # roll back: keyboard only, from the card's button to the confirmation
    card(page, "production").get_by_role("button", name="Rollback", exact=True).focus()
    page.keyboard.press("Enter")
    expect(page.locator("#type-env")).to_be_focused()
    page.keyboard.type("production")
    page.keyboard.press("Tab")  # Cancel
    page.keyboard.press("Tab")  # the confirm button, enabled by the typed name
    expect(page.locator("#confirm-move")).to_be_focused()
    page.keyboard.press("Enter")
    expect(card(page, "production").locator(".live")).to_have_text("v1")
    expect(page.locator("#history details[data-env=production] tbody tr").first).to_contain_text("rollback")

    # a move made elsewhere (the CLI) shows within 2 s
    env = dict(os.environ, SWITCHYARD_ADMIN_URL=args.admin, SWITCHYARD_ADMIN_TOKEN=args.token)
    out = subprocess.run([args.cli, "deploy", "bot", "staging", "v2", "--yes"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    moved = time.monotonic()
    expect(card(page, "staging").locator(".live")).to_have_text("v2", timeout=3000)
    seen_after = time.monotonic() - moved
    assert seen_after <= 2.0, f"the CLI's move appeared after {seen_after:.2f} s"
    print(f"cli move visible after {seen_after:.2f} s")
    shot(page, "console-agent")

    # a canary in staging: started at 10 %, then aborted, each through its plan
    card(page, "staging").get_by_role("button", name="Canary", exact=True).click()
    page.locator("#pick-version").select_option("v1")
    page.locator("#pick-weight").fill("10")
    page.get_by_role("button", name="Show the plan", exact=True).click()
    expect(page.locator("#plan")).to_contain_text("canary_start")
    page.locator("#confirm-move").click()  # staging is not protected: no name to type
    expect(card(page, "staging")).to_contain_text("canary v1 at 10 %")
    card(page, "staging").get_by_role("button", name="Abort canary", exact=True).click()
    expect(page.locator("#plan")).to_contain_text("canary_abort")
    page.locator("#confirm-move").click()
    expect(card(page, "staging")).not_to_contain_text("canary v1")
    expect(page.locator("#history details[data-env=staging] tbody tr").first).to_contain_text("canary_abort")

    # the diff of two versions, changed fields marked
    page.locator("#diff-from").select_option("v1")
    page.locator("#diff-to").select_option("v2")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.locator("#diff-table tr.changed[data-field=upstreams]")).to_be_visible()
    expect(page.locator("#diff-table tr[data-field=description]")).not_to_have_class("changed")

    # mint a token: shown once, with a copy button and a warning; then revoke it
    page.locator("#token-env").select_option("staging")
    page.locator("#token-name").fill("from-the-console")
    page.get_by_role("button", name="Mint token", exact=True).click()
    minted = page.locator("#minted-token")
    expect(minted).to_have_text(re.compile(r"^swy_[0-9a-f]{64}$"))
    expect(page.get_by_text("only time the token is shown")).to_be_visible()
    secret = minted.inner_text()
    page.get_by_role("button", name="Copy", exact=True).click()
    expect(page.get_by_text("Copied.")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    page.get_by_role("button", name="Done", exact=True).click()
    row = page.locator("#token-list tr", has_text="from-the-console")
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("bootstrap")
    row.locator("button", has_text="Revoke").click()
    expect(row).to_contain_text("revoked")
    assert secret not in page.content(), "the token is not kept on the page"

    # a secret: set, listed by name and scope, its value never shown back
    page.locator("#secret-name").fill("MODEL_KEY")
    page.locator("#secret-env").select_option("staging")
    page.locator("#secret-value").fill("sk-console-value")
    page.get_by_role("button", name="Set secret", exact=True).click()
    expect(page.locator("#secret-list")).to_contain_text("MODEL_KEY")
    expect(page.locator("#secret-value")).to_have_value("")
    assert "sk-console-value" not in page.content()

    # a refusal is shown as the API words it, and the move cannot be confirmed
    card(page, "sandbox").get_by_role("button", name="Promote", exact=True).click()
    expect(page.locator("#dialog").get_by_role("alert")).to_contain_text("not_deployed")
    expect(page.locator("#confirm-move")).to_be_disabled()
    page.get_by_role("button", name="Cancel", exact=True).click()

    # a narrow screen: readable, nothing wider than the screen but the scrolling tables
    page.set_viewport_size({"width": 390, "height": 800})
    page.wait_for_timeout(300)
    width = page.evaluate("document.body.scrollWidth")
    assert width <= 392, f"the page is {width}px wide on a 390px screen"
    shot(page, "console-narrow")
    page.set_viewport_size({"width": 1280, "height": 800})

    # a viewer sees everything and no action
    page.get_by_role("button", name="Sign out", exact=True).click()
    sign_in(page, args.viewer)
    expect(page.locator("#who")).to_contain_text("viewer")
    page.get_by_role("link", name="bot").click()
    expect(card(page, "staging").locator(".live")).to_have_text("v2")
    expect(page.locator("#history details").first).to_be_visible()
    for verb in ["Deploy", "Promote", "Rollback", "Undeploy", "Canary", "Revoke", "Mint token",
                 "Set secret", "Delete"]:
        n = page.locator("button", has_text=verb).count()
        assert n == 0, f"a viewer sees {n} {verb} button(s)"
    page.locator("#token-env").select_option("staging")
    expect(page.locator("#token-list tr", has_text="from-the-console")).to_contain_text("revoked")
    shot(page, "console-viewer")

    # the wrong token's 401 is expected; anything else (a CSP refusal, a script error) is not
    problems = [m for m in problems if "status of 401" not in m]
    assert not problems, f"browser errors: {problems}"
    browser.close()
print("console: all checks passed")
