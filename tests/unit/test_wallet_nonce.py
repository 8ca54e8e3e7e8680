"""``WalletContext.next_nonce`` against the node's view of the wallet's own sends."""

from wallet.commands.common import WalletContext

GENESIS = bytes(32)
SENDER = bytes([5]) * 32


class _Node(WalletContext):
    """A wallet whose node answers from a table: the account nonce, and each txid's
    ``gettransaction`` status (None: unknown to the node)."""

    def __init__(self, wallet_dir, nonce, statuses):
        super().__init__(wallet_dir)
        self._nonce, self._statuses = nonce, statuses

    def account(self, address):
        return {"balance": 0, "nonce": self._nonce}

    def genesis_hash(self):
        return GENESIS

    def call(self, method, *params):
        assert method == "gettransaction"
        status = self._statuses[params[0]]
        return None if status is None else {"status": status}


def _sent(wallet, *nonces):
    for n in nonces:
        wallet.db.record_sent(GENESIS.hex(), SENDER.hex(), n, f"tx{n}", "transfer")


def test_pooled_sends_are_counted_on_top_of_the_account_nonce(tmp_path):
    wallet = _Node(tmp_path, 3, {"tx3": "mempool", "tx4": "mempool"})
    _sent(wallet, 3, 4)
    assert wallet.next_nonce(SENDER) == 5


def test_a_send_mined_after_the_account_was_read_still_uses_its_nonce(tmp_path):
    """Regression (MICROPAY helper): the account said nonce 3, then a block confirmed
    tx3 before it was looked up; 3 was handed out again and the new tx was refused."""
    wallet = _Node(tmp_path, 3, {"tx3": "confirmed", "tx4": "mempool"})
    _sent(wallet, 3, 4)
    assert wallet.next_nonce(SENDER) == 5
    assert wallet.db.sent_by(GENESIS.hex(), SENDER.hex()) == {4: "tx4"}  # confirmed forgotten


def test_a_send_the_node_dropped_frees_its_nonce(tmp_path):
    wallet = _Node(tmp_path, 3, {"tx3": None, "tx4": "mempool"})
    _sent(wallet, 3, 4)
    assert wallet.next_nonce(SENDER) == 3
