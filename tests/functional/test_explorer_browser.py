"""The explorer of a real node (``--http-port 0``) in a real headless browser.

The system Chromium (Debian ``chromium`` + ``chromium-driver``) is driven by Selenium;
where either is missing the test is skipped saying what to install (``.ci/run`` installs
both on CI). The scenario on a regtest node: a transfer, an escrow whose first draw is
redeemed, a cheater's escrow broken by a CHEAT_PROOF, a channel. The browser checks the
front page (tip, recent blocks, proof of cheating, burned total), follows links to a
block, the escrow (draw winners marked redeemed) and an account, and saves a screenshot
of the front page (to ``$EXPLORER_SCREENSHOT`` if set, e.g. docs/explorer.png) and one
of the escrow page beside it (``explorer-escrow.png``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from consensus.escrow import (compute_escrow_amount, compute_escrow_id, compute_min_penalty,
                              compute_t_draw, EscrowState)
from consensus.params import get_params
from consensus.ticket import sign_ticket
from consensus.tx import (make_channel_open, make_cheat_proof, make_escrow_create, make_redeem,
                          make_transfer)
from tests.functional.framework import test_address, test_pubkey, test_seed, wait_until

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed "
                                "(pip install -e '.[test]')")
from selenium.webdriver.common.by import By  # noqa: E402

PARAMS = get_params("regtest")
MINER = test_address(9)


def _browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver) executables, or skip naming what is missing."""
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser",
                                                   "google-chrome")) if p), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver",) if os.path.exists(p)), None)
    if chromium is None or driver is None:
        pytest.skip("no headless browser: install the distribution's chromium and "
                    "chromium-driver (apt-get install -y chromium chromium-driver)")
    return chromium, driver


@pytest.fixture
def browser():
    chromium, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1400", "--hide-scrollbars"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options,
                                  service=webdriver.ChromeService(executable_path=driver_path))
    except Exception as exc:  # a browser that cannot start here (sandbox, libraries)
        pytest.skip(f"headless chromium does not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _confirm(node, raw_tx) -> dict:
    txid = node.rpc.sendrawtransaction(raw_tx.encode().hex())
    node.generate(1, MINER)
    status = node.rpc.gettransaction(txid)
    assert status and status["status"] == "confirmed", status
    return status


def _escrow(node, genesis, owner: int, nonce: int, rounds: int, tkt_rate: int) -> tuple[str, EscrowState]:
    merchants = [test_pubkey(1), test_pubkey(2)]
    beta = 1_000_000
    amount = compute_escrow_amount(1, 10, beta, tkt_rate, rounds)
    penalty = compute_min_penalty(PARAMS, 2, 1, 10, beta, tkt_rate, 1)
    tx = make_escrow_create(test_seed(owner), genesis, nonce, 0, amount, penalty, 1, 10, beta,
                            tkt_rate, 1, merchants)
    status = _confirm(node, tx)
    eid = compute_escrow_id(bytes.fromhex(status["block_hash"]), tx.txid()).hex()
    return eid, EscrowState.from_rpc(node.rpc.getescrow(eid))


@pytest.mark.timeout(180)
def test_explorer_in_a_real_browser(nodes_factory, browser, tmp_path):
    node = nodes_factory.start_node(extra_args=["--http-port", "0"])
    url = f"http://127.0.0.1:{json.loads((node.datadir / 'ports.json').read_text())['http']}"
    genesis = bytes.fromhex(node.getinfo()["genesis_hash"])
    node.generate(3, MINER)
    _confirm(node, make_transfer(test_seed(0), genesis, 0, 0, test_pubkey(5), 250_000_000))
    eid, escrow = _escrow(node, genesis, owner=0, nonce=1, rounds=4, tkt_rate=20)
    cheater_id, _ = _escrow(node, genesis, owner=3, nonce=0, rounds=2, tkt_rate=10)
    ticket_a = sign_ticket(test_seed(3), genesis, bytes.fromhex(cheater_id), 0, 0)
    ticket_b = sign_ticket(test_seed(3), genesis, bytes.fromhex(cheater_id), 1, 0)
    proof = make_cheat_proof(test_seed(1), genesis, 0, ticket_a, ticket_b)
    _confirm(node, proof)
    _confirm(node, make_channel_open(test_seed(4), genesis, 0, 0, test_pubkey(2), 10**8, 10**7,
                                     node.getinfo()["height"] + 200))
    t_draw = compute_t_draw(PARAMS, escrow, 0)
    node.generate(max(1, t_draw + 1 - node.getinfo()["height"]), MINER)
    winners = node.rpc.getdraw(eid, 0)["winners"]
    redeem = make_redeem(test_seed(1), genesis, 0,
                         [sign_ticket(test_seed(0), genesis, bytes.fromhex(eid), 0, s)
                          for s in winners])
    _confirm(node, redeem)
    info = node.getinfo()
    assert info["burned"] > 0

    browser.get(url + "/")
    wait_until(lambda: browser.find_element(By.ID, "tip-height").text == str(info["height"]),
               30, description="the front page to show the tip")
    assert "MicroCash explorer" in browser.title
    rows = browser.find_elements(By.CSS_SELECTOR, "#blocks tbody tr")
    assert len(rows) == min(20, info["height"] + 1)
    assert rows[0].find_element(By.TAG_NAME, "a").text == str(info["height"])
    cheats = browser.find_element(By.ID, "cheats").text
    assert "CHEAT_PROOF" in cheats and "issued twice" in cheats
    assert browser.find_element(By.ID, "burned").text != "0"
    shot = Path(os.environ.get("EXPLORER_SCREENSHOT") or tmp_path / "explorer.png")
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # A block page, reached by clicking its link on the front page.
    rows[0].find_element(By.TAG_NAME, "a").click()
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, "#txs tbody tr"), 30,
               description="the block page")
    assert "REDEEM" in browser.find_element(By.ID, "txs").text
    # The escrow: its first draw's winners are all marked redeemed (✓).
    browser.get(f"{url}/escrow/{eid}")
    drawn = browser.find_elements(By.CSS_SELECTOR, "#draws tr.drawn")
    assert drawn, browser.page_source[:2000]
    paid = drawn[0].find_elements(By.CSS_SELECTOR, ".winner.paid")
    assert sorted(int(w.text.split()[0]) for w in paid) == sorted(winners)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#redeems tbody tr")) == len(winners)
    assert browser.save_screenshot(str(shot.with_name(shot.stem + "-escrow.png")))
    # The search box finds an account by address.
    box = browser.find_element(By.ID, "search")
    box.send_keys(test_address(5))
    box.submit()
    wait_until(lambda: browser.find_elements(By.ID, "balance"), 30, description="account page")
    assert browser.find_element(By.ID, "balance").text.startswith("2.5 MCASH")
    # A bad id gets a page that says why, not a traceback.
    browser.get(f"{url}/escrow/xyz")
    assert "64 hex digits" in browser.find_element(By.ID, "error").text
